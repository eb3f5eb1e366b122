"""Strict JSON for client input: what Python's json module would choke on later, or keep
but no JSON reader takes back, is refused with a reason that quotes nothing."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from jobql.http.json_input import (
    MAX_DEPTH,
    BadJson,
    check_document,
    check_query_string,
    depth_of,
    parse_json,
)
from jobql.services.inputs import MAX_INT_DIGITS


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ viewer { id } }", "variables": {"a": [1, 2.5, -3e10, null, true]}}',
        '{"a": "caf\u00e9 \\ud83d\\ude00 \\"[{"}'.encode(),  # a surrogate pair is fine
        b'"\\\\ud800"',  # an escaped backslash, then text
        b"[" + b"9" * MAX_INT_DIGITS + b", 1e308, 1e-999]",
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
    ],
)
def test_good_json_parses_as_usual(body: bytes) -> None:
    assert parse_json(body) == json.loads(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "UTF-8"),  # a surrogate encoded as UTF-8
        (b'{"a": NaN}', "NaN"),
        (b'{"a": [Infinity]}', "Infinity"),
        (b'{"a": -Infinity}', "Infinity"),
        (b'{"a": 1e999}', "finite"),
        (b'{"a": -1E+0400}', "finite"),
        (b'{"a": ' + b"1" * (MAX_INT_DIGITS + 1) + b"}", "digits"),
        (b'{"a": ' + b"1" * 5000 + b"}", "digits"),
        (b'{"a": -' + b"1" * 5000 + b"}", "digits"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "deep"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "deep"),
        (b"[" * 100_000 + b"]" * 100_000, "deep"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"a": ["x", "\\udfff"]}', "surrogate"),
        (b'{"\\ud800": 1}', "surrogate"),
        (b'"\\ude00\\ud83d"', "surrogate"),  # a pair in the wrong order
    ],
)
def test_bad_json_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadJson, match=reason):
        parse_json(body)


def test_syntax_errors_stay_json_decode_errors() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json(b'{"a": ')


def test_depth_counts_brackets_outside_strings() -> None:
    assert depth_of('{"a": [[], {"b": "]]]]"}], "c": "[[[["}') == 3
    assert depth_of("1") == 0


def test_pathological_bodies_take_linear_time() -> None:
    started = time.perf_counter()
    for body in [
        b'["' + b'\\"' * 500_000,  # an unterminated string of escaped quotes
        b"[" + b"0," * 400_000 + b"0]",
        json.dumps(['\\"x'] * 100_000).encode(),
    ]:
        with contextlib.suppress(ValueError):
            parse_json(body)
    assert time.perf_counter() - started < 3


def test_long_integer_literals_in_documents_are_refused() -> None:
    check_document("{ jobs(first: " + "9" * MAX_INT_DIGITS + ") { edges { cursor } } }", 2000)
    with pytest.raises(BadJson, match="Integer literals"):
        check_document("{ jobs(first: " + "9" * 5000 + ") { edges { cursor } } }", 2000)


@pytest.mark.parametrize(
    "document",
    [
        '{ job(id: "' + "1" * 5000 + '") { __typename } }',  # in a string
        '{ job(id: """' + "1" * 5000 + '""") { __typename } }',  # in a block string
        "# " + "1" * 5000 + "\n{ viewer { id } }",  # in a comment
        '{ viewer { id } } "' + "1" * 5000,  # a syntax error: GraphQL answers it
        "{ viewer { id } } x " * 20 + "1" * 5000,  # past the token limit
    ],
)
def test_digits_outside_integer_literals_are_left_to_graphql(document: str) -> None:
    check_document(document, max_tokens=20)


def test_get_parameters_are_checked() -> None:
    check_query_string(b"query=%7B+viewer+%7B+id+%7D+%7D&variables=%7B%22a%22%3A+1%7D", 2000)
    check_query_string(b"query=%7B&variables=%7B", 2000)  # syntax errors: GraphQL's to answer
    with pytest.raises(BadJson, match="NaN"):
        check_query_string(b"query=%7B+viewer+%7B+id+%7D+%7D&variables=%7B%22a%22%3ANaN%7D", 2000)
    with pytest.raises(BadJson, match="surrogate"):
        check_query_string(b"extensions=%7B%22a%22%3A%22%5Cud800%22%7D", 2000)
    with pytest.raises(BadJson, match="Integer literals"):
        check_query_string(b"query=%7B+jobs(first%3A+" + b"1" * 200 + b")+%7D", 2000)
