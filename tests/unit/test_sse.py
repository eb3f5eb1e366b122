"""The server-sent events decoder: the same events however the body is cut into reads."""

from __future__ import annotations

import random
import re

import pytest

from jobql.providers.sse import SSEDecoder


def decode(*reads: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for read in reads:
        events += decoder.feed(read)
    return events + decoder.flush()


def reference(body: bytes) -> list[bytes]:
    """The SSE grammar, written the obvious way over the whole body at once."""
    events: list[bytes] = []
    data: list[bytes] = []
    for line in re.split(rb"\r\n|\r|\n", body):
        if not line:
            if data:
                events.append(b"\n".join(data))
                data = []
            continue
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        events.append(b"\n".join(data))
    return events


def test_one_event_per_data_field_with_one_leading_space_dropped() -> None:
    body = b'data: {"a": 1}\n\ndata:{"b": 2}\n\ndata:  padded\n\n'
    assert decode(body) == [b'{"a": 1}', b'{"b": 2}', b" padded"]


def test_a_read_ending_mid_line_waits_for_the_rest() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: hel") == []
    assert decoder.feed(b"lo\n") == []
    assert decoder.feed(b"\n") == [b"hello"]
    assert decoder.flush() == []


def test_every_cut_of_a_body_gives_the_same_events() -> None:
    body = (
        b": keep-alive\n\n"
        b'event: content_block_delta\r\ndata: {"text": "caf\xc3\xa9 \xe6\xb5\xb7"}\r\n\r\n'
        b"data: line one\ndata: line two\n\n"
        b"id: 7\rretry: 10\rdata: cr only\r\r"
        b"data: [DONE]\n\n"
    )
    expected = [
        '{"text": "café 海"}'.encode(),
        b"line one\nline two",
        b"cr only",
        b"[DONE]",
    ]
    assert decode(body) == expected
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert decode(body[:i], body[i:j], body[j:]) == expected, (i, j)
    assert decode(*(body[i : i + 1] for i in range(len(body)))) == expected


def test_a_multi_byte_character_cut_between_reads_comes_out_whole() -> None:
    text = "naïve 海 🌊".encode()
    for cut in range(len(text) + 1):
        (event,) = decode(b"data: " + text[:cut], text[cut:] + b"\n\n")
        assert event.decode() == "naïve 海 🌊"


def test_crlf_cut_between_its_cr_and_lf_is_one_line_end_not_two() -> None:
    # Were the "\n" taken for a second line end, the blank line would end the event early.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [b"a\nb"]
    assert decode(b"data: a\r", b"\n", b"\r\n") == [b"a"]
    assert decode(b"data: a\r", b"\r") == [b"a"]


def test_comments_and_other_fields_give_no_event() -> None:
    assert decode(b": ping\n\n:\n\nevent: ping\nid: 3\nretry: 100\n\n") == []
    assert decode(b"\n\n\n\n") == []
    assert decode(b"datum: x\ndata_x: y\n\n") == []


def test_done_marker_is_passed_on_as_data() -> None:
    assert decode(b"data: {}\n\ndata: [DONE]\n\n") == [b"{}", b"[DONE]"]


def test_multi_line_data_is_joined_with_newlines_and_an_empty_field_counts() -> None:
    assert decode(b"data: a\ndata\ndata:\ndata: b\n\n") == [b"a\n\n\nb"]
    assert decode(b"data:\n\n") == [b""]


def test_last_event_without_a_blank_line_after_it_still_counts() -> None:
    assert decode(b"data: one\n\ndata: two") == [b"one", b"two"]
    assert decode(b"data: one\n\ndata: two\n") == [b"one", b"two"]
    assert decode(b"data: one\n\ndata: two\r") == [b"one", b"two"]
    assert decode(b"data: one\n\n: trailing comment") == [b"one"]


def test_flush_leaves_the_decoder_empty() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: x\r")
    assert decoder.flush() == [b"x"]
    assert decoder.flush() == []
    assert decoder.feed(b"\ndata: y\n\n") == [b"y"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_only_cr_and_lf_end_lines(separator: str) -> None:
    # JSON may hold U+2028, U+2029 and U+0085 unescaped; a str.splitlines reader cut there.
    payload = f'{{"text": "a{separator}b"}}'.encode()
    assert decode(b"data: " + payload + b"\n\n") == [payload]


def test_random_bodies_and_reads_match_the_grammar() -> None:
    rng = random.Random(20240601)
    pieces = [b"data: ", b"data:", b"data", b"event: x", b": c", b"\n", b"\r", b"\r\n", b"\n\n"]
    pieces += [b"{}", b"a", b" ", b"\xc3\xa9", b"[DONE]", b"id:1"]
    for _ in range(2000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        cuts = sorted(rng.randint(0, len(body)) for _ in range(rng.randint(0, 5)))
        reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert decode(*reads) == reference(body), (body, cuts)
