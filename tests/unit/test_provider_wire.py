"""Reading an HTTP provider's stream: events off an httpx response, their JSON, the OpenAI end
marker."""

from __future__ import annotations

import gzip
import math
from collections.abc import AsyncIterator

import httpx
import pytest

from jobql.errors import ErrorCode
from jobql.providers.base import ProviderError
from jobql.providers.http import MAX_ERROR_BODY, json_object, sse_data
from jobql.providers.openai_compat import is_done

BODY = 'data: {"text": "caf\u00e9"}\n\n: ping\n\ndata: [DONE]'.encode()


class Reads(httpx.AsyncByteStream):
    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            yield read


async def events_of(reads: list[bytes], headers: dict[str, str]) -> list[list[bytes]]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=Reads(reads))

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client,
        client.stream("GET", "http://model.test/") as response,
    ):
        return [batch async for batch in sse_data(response)]


async def test_events_come_in_one_batch_per_read_that_completes_any() -> None:
    reads = [BODY[:10], BODY[10:24], BODY[24:]]
    batches = await events_of(reads, {"content-type": "text/event-stream"})
    assert batches == [['{"text": "café"}'.encode()], [b"[DONE]"]]


async def test_a_compressed_stream_is_inflated_first() -> None:
    packed = gzip.compress(BODY)
    reads = [packed[:7], packed[7:30], packed[30:]]
    batches = await events_of(reads, {"content-encoding": "gzip"})
    assert [event for batch in batches for event in batch] == [
        '{"text": "café"}'.encode(),
        b"[DONE]",
    ]


def test_json_object_reads_bytes() -> None:
    assert json_object('{"text": "海", "n": 3}'.encode()) == {"text": "海", "n": 3}


def test_json_object_still_takes_what_the_json_module_takes() -> None:
    value = json_object(b'{"x": NaN, "y": -Infinity, "s": "\\ud800", "bad": "\xff"}')
    assert math.isnan(value["x"])
    assert value["y"] == -math.inf
    assert value["s"] == "\ud800"
    assert value["bad"] == "\ufffd"


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_json_object_refuses_anything_but_an_object(data: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        json_object(data)
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert caught.value.body == data.decode(errors="replace")


def test_json_object_error_body_is_bounded() -> None:
    with pytest.raises(ProviderError) as caught:
        json_object(b"x" * (MAX_ERROR_BODY * 2))
    assert caught.value.body == "x" * MAX_ERROR_BODY


@pytest.mark.parametrize(
    ("data", "done"),
    [
        (b"[DONE]", True),
        (b" [DONE] ", True),
        (b"[DONE]\n", True),
        ("\u00a0[DONE]".encode(), True),
        (b"{}", False),
        (b'{"content": "[DONE]"}', False),
        (b"[DONE]x", False),
        (b"", False),
    ],
)
def test_is_done(data: bytes, done: bool) -> None:
    assert is_done(data) is done
