"""Pure input checks: schema violations name the field, idempotency keys, fingerprints."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobql.errors import ErrorCode, InvalidInput
from jobql.services.inputs import (
    MAX_IDEMPOTENCY_KEY,
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    check_idempotency_key,
    check_json,
    fingerprint,
    json_problem,
    validate_task_input,
    with_defaults,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "max_words": {"type": "integer", "minimum": 10, "default": 100},
        "tags": {"type": "array", "items": {"type": "string"}},
        "options": {
            "type": "object",
            "required": ["mode"],
            "properties": {"mode": {"enum": ["fast", "slow"]}},
        },
    },
}


def _invalid(value: Any) -> InvalidInput:
    result = validate_task_input(SCHEMA, value)
    assert result is not None, f"{value!r} should be invalid"
    return result


# -- validate_task_input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"text": "hello"},
        {"text": "hello", "max_words": 10, "tags": ["a", "b"], "options": {"mode": "fast"}},
    ],
)
def test_valid_input_passes(value: dict[str, Any]) -> None:
    assert validate_task_input(SCHEMA, value) is None


def test_missing_required_field_names_it() -> None:
    result = _invalid({})
    assert result.code == ErrorCode.INVALID_INPUT
    assert result.field == "input.text"
    assert [v.path for v in result.violations] == ["input.text"]
    assert "'text' is a required property" in result.violations[0].message
    assert "input.text" in result.message


def test_wrong_type_names_the_field() -> None:
    result = _invalid({"text": "hi", "max_words": "many"})
    assert result.field == "input.max_words"
    assert "is not of type 'integer'" in result.violations[0].message


def test_wrong_type_of_array_item_names_the_index() -> None:
    result = _invalid({"text": "hi", "tags": ["ok", 3]})
    assert result.field == "input.tags[1]"


def test_nested_required_field_names_the_full_path() -> None:
    result = _invalid({"text": "hi", "options": {}})
    assert result.field == "input.options.mode"


def test_additional_property_names_the_extra_key() -> None:
    result = _invalid({"text": "hi", "colour": "red"})
    assert result.field == "input.colour"
    assert "colour" in result.violations[0].message


def test_top_level_wrong_type_names_input() -> None:
    result = _invalid(["not", "an", "object"])
    assert result.field == "input"


def test_every_violation_is_reported_in_path_order() -> None:
    result = _invalid({"max_words": 1, "extra": True})
    paths = [v.path for v in result.violations]
    assert sorted(paths) == sorted(["input.text", "input.extra", "input.max_words"])
    assert result.field == paths[0]


def test_violations_are_capped() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    result = validate_task_input(schema, ["x"] * 50)
    assert result is not None
    assert len(result.violations) == 20
    assert result.violations[0].path == "input[0]"


# -- check_idempotency_key -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "order-42",
        "with space",
        " ",
        "~!@#$%^&*()_+{}|:<>?",
        "x" * MAX_IDEMPOTENCY_KEY,
        "".join(chr(c) for c in range(0x20, 0x7F)),
    ],
)
def test_valid_idempotency_keys(key: str) -> None:
    assert check_idempotency_key(key) is None


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * (MAX_IDEMPOTENCY_KEY + 1), id="256-chars"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("key\u2603", id="snowman"),
        pytest.param("tab\there", id="tab"),
        pytest.param("new\nline", id="newline"),
        pytest.param("nul\x00", id="nul"),
        pytest.param("del\x7f", id="del"),
    ],
)
def test_invalid_idempotency_keys(key: str) -> None:
    result = check_idempotency_key(key)
    assert result is not None
    assert result.code == ErrorCode.INVALID_INPUT
    assert result.field == "idempotencyKey"
    assert [v.path for v in result.violations] == ["idempotencyKey"]


def test_idempotency_key_limit_is_255() -> None:
    assert MAX_IDEMPOTENCY_KEY == 255


# -- fingerprint ---------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_whitespace() -> None:
    compact = '{"task":"classify","input":{"text":"hi","n":[1,2]}}'
    spaced = '{ "input" : { "n" : [ 1, 2 ], "text" : "hi" },\n  "task" : "classify" }'
    a, b = json.loads(compact), json.loads(spaced)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) == fingerprint({"input": {"n": [1, 2], "text": "hi"}, "task": "classify"})


def test_fingerprint_is_a_stable_sha256_hex() -> None:
    value = {"task": "classify", "input": {"text": "hi"}}
    first = fingerprint(value)
    assert first == fingerprint(dict(value))
    assert len(first) == 64
    assert int(first, 16) >= 0


@pytest.mark.parametrize(
    "other",
    [
        {"task": "classify", "input": {"text": "hi!"}},
        {"task": "summarize", "input": {"text": "hi"}},
        {"task": "classify", "input": {"text": "hi", "extra": None}},
        {"task": "classify", "input": {"text": ["hi"]}},
        {"task": "classify", "input": {}},
    ],
)
def test_fingerprint_differs_for_different_inputs(other: dict[str, Any]) -> None:
    assert fingerprint({"task": "classify", "input": {"text": "hi"}}) != fingerprint(other)


def test_fingerprint_distinguishes_value_types() -> None:
    assert fingerprint({"n": 1}) != fingerprint({"n": "1"})
    assert fingerprint({"n": None}) != fingerprint({})


# -- with_defaults -------------------------------------------------------------------------


def test_with_defaults_fills_missing_top_level_defaults() -> None:
    value = {"text": "hi"}
    filled = with_defaults(SCHEMA, value)
    assert filled == {"text": "hi", "max_words": 100}
    assert value == {"text": "hi"}, "the caller's dict is not modified"


def test_with_defaults_keeps_given_values() -> None:
    assert with_defaults(SCHEMA, {"text": "hi", "max_words": 12}) == {"text": "hi", "max_words": 12}


def test_with_defaults_without_properties_is_a_copy() -> None:
    value = {"a": 1}
    filled = with_defaults({"type": "object"}, value)
    assert filled == value
    assert filled is not value


def test_with_defaults_only_fills_top_level() -> None:
    schema = {
        "type": "object",
        "properties": {
            "outer": {"type": "object", "properties": {"inner": {"default": 1}}},
            "flag": {"type": "boolean", "default": False},
        },
    }
    assert with_defaults(schema, {"outer": {}}) == {"outer": {}, "flag": False}


# -- JSON values (task input, metadata) --------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    """An object nested ``depth`` levels deep (itself included)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, "caf\u00e9 \U0001f600"]},
        {"n": 10**MAX_INT_DIGITS - 1, "m": -(10**MAX_INT_DIGITS - 1)},
        _nested(MAX_JSON_DEPTH),
    ],
)
def test_storable_json_has_no_problem(value: Any) -> None:
    assert json_problem(value) is None
    assert check_json("metadata", value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"a": float("nan")}, "finite"),
        ({"a": [1, float("inf")]}, "finite"),
        ({"a": -float("inf")}, "finite"),
        ({"a": 10**MAX_INT_DIGITS}, "digits"),
        ({"a": -(10**5000)}, "digits"),
        ({"a": "x\ud800"}, "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        (_nested(MAX_JSON_DEPTH + 1), "deep"),
        (_nested(10_000), "deep"),
    ],
)
def test_unstorable_json_is_invalid_input(value: Any, reason: str) -> None:
    problem = check_json("metadata", value)
    assert problem is not None
    assert problem.field == "metadata"
    assert reason in problem.violations[0].message
