"""How subscriptions are written over HTTP: SSE events (multi-line data, ids, comments), the
multipart parts, the Last-Event-ID header, and the pump that writes a stream (keepalives
when idle, the end, a revoked key, a client that leaves)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from starlette.types import Message
from strawberry.types import ExecutionResult

from jobql.http.multipart import MultipartFraming, accepts_multipart
from jobql.http.sse import (
    SseFraming,
    encode_comment,
    encode_event,
    parse_last_event_id,
    single_result,
)
from jobql.http.subscriptions import Framing, Streamed, pump
from jobql.providers.sse import SSEDecoder


def decoded(body: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.flush()


def test_an_event_has_its_name_id_and_data() -> None:
    assert encode_event("next", '{"a":1}', "7") == b'event: next\nid: 7\ndata: {"a":1}\n\n'
    assert encode_event("complete") == b"event: complete\ndata: \n\n"


@pytest.mark.parametrize("text", ["one\ntwo", "one\r\ntwo\rthree", "trailing\n", "\n\n"])
def test_multi_line_data_is_one_data_line_per_line_and_reads_back_joined(text: str) -> None:
    body = encode_event("next", text)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert body.count(b"\ndata: ") == len(lines)
    assert decoded(body) == ["\n".join(lines).encode()]


@pytest.mark.parametrize(("event", "id"), [("a\nb", None), ("next", "1\n2"), ("next", "1\x002")])
def test_names_and_ids_must_be_one_line(event: str, id: str | None) -> None:
    with pytest.raises(ValueError, match="one line"):
        encode_event(event, "{}", id)


def test_comments_are_ignored_by_readers() -> None:
    assert encode_comment("keepalive") == b": keepalive\n\n"
    assert encode_comment("two\nlines") == b": two\n: lines\n\n"
    body = encode_comment("keepalive") + encode_event("next", "x") + encode_comment("")
    assert decoded(body) == [b"x"]


def test_sse_framing_ids_only_for_stored_events() -> None:
    framing = SseFraming()
    payload = {"data": {"jobEvents": {"seq": 3}}}
    assert framing.result(payload, 3).startswith(b"event: next\nid: 3\n")
    assert b"id:" not in framing.result({"data": {}}, None)
    assert framing.keepalive() == b": keepalive\n\n"
    assert framing.complete() == b"event: complete\ndata: \n\n"
    errors = [{"message": "API key revoked"}]
    assert json.loads(decoded(framing.fatal(errors))[0]) == {"errors": errors}


def test_a_single_result_is_next_then_complete() -> None:
    body = single_result(b'{"data":{"viewer":null}}')
    assert body == b'event: next\ndata: {"data":{"viewer":null}}\n\nevent: complete\ndata: \n\n'


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), (" 12 ", 12), ("0", 0)],
)
def test_last_event_id_is_a_seq(header: str | None, expected: int | None) -> None:
    assert parse_last_event_id(header) == expected


@pytest.mark.parametrize("header", ["-1", "seven", "1.5", "٣", "9" * 19])
def test_a_last_event_id_that_is_not_a_seq_says_why(header: str) -> None:
    assert isinstance(parse_last_event_id(header), str)


def test_multipart_parts_and_the_closing_delimiter() -> None:
    framing = MultipartFraming()
    body = (
        framing.opening()
        + framing.keepalive()
        + framing.result({"data": {"x": 1}}, 1)
        + framing.complete()
    )
    assert body.endswith(b"\r\n--graphql--\r\n")
    parts = body.split(b"\r\n--graphql")
    assert parts[0] == b""
    bodies = [json.loads(p.partition(b"\r\n\r\n")[2]) for p in parts[1:-1]]
    assert bodies == [{}, {"payload": {"data": {"x": 1}}}]
    assert parts[-1] == b"--\r\n"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("multipart/mixed;subscriptionSpec=1.0", True),
        ('multipart/mixed;boundary="graphql";subscriptionSpec="1.0"', True),
        ("multipart/mixed;deferSpec=20220824", False),
        ("multipart/mixed;boundary=other;subscriptionSpec=1.0", False),
    ],
)
def test_which_multipart_accepts_stream_subscriptions(accept: str, expected: bool) -> None:
    media_type, *raw = accept.split(";")
    params = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in raw)}
    assert accepts_multipart(media_type, params) is expected


class _Context:
    """What the pump reads from the GraphQL context: the seq of the item just yielded."""

    def __init__(self) -> None:
        self.stream_seq: int | None = None
        self.resume_after: int | None = None

    def take_stream_seq(self) -> int | None:
        seq, self.stream_seq = self.stream_seq, None
        return seq


class _Client:
    """The ASGI side of one response: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.sent = asyncio.Condition()
        self.gone = asyncio.Event()

    async def send(self, message: Message) -> None:
        async with self.sent:
            self.messages.append(message)
            self.sent.notify_all()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages)

    async def until(self, text: bytes) -> None:
        async with asyncio.timeout(5), self.sent:
            await self.sent.wait_for(lambda: text in self.body())


class _Source:
    """A subscription's results, released one by one; records that it was closed."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.release: asyncio.Queue[int | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def results(self) -> AsyncGenerator[ExecutionResult, None]:
        try:
            while (seq := await self.release.get()) is not None:
                self.context.stream_seq = seq or None
                yield ExecutionResult(data={"n": seq}, errors=None)
        finally:
            self.closed.set()


async def _run(
    framing: Framing, client: _Client, source: _Source, revoked: asyncio.Event
) -> asyncio.Task[None]:
    results = source.results()
    context: Any = source.context
    return asyncio.create_task(
        pump(
            client.send,
            client.receive,
            results,
            ExecutionResult(data={"n": "first"}, errors=None),
            framing,
            context,
            revoked,
            [(b"content-type", framing.content_type.encode())],
            keepalive_seconds=0.02,
        )
    )


async def test_an_idle_stream_gets_keepalives_then_the_items_and_complete() -> None:
    client, source = _Client(), _Source(_Context())
    task = await _run(SseFraming(), client, source, asyncio.Event())
    await client.until(b": keepalive\n\n")
    await source.release.put(4)
    await source.release.put(0)  # an item without a seq (a heartbeat)
    await source.release.put(None)
    await asyncio.wait_for(task, 5)
    events = decoded(client.body())
    assert [json.loads(e) for e in events if e.startswith(b"{")] == [
        {"data": {"n": "first"}},
        {"data": {"n": 4}},
        {"data": {"n": 0}},
    ]
    assert b"id: 4\n" in client.body()
    assert client.body().count(b"id: ") == 1
    assert client.body().endswith(b"event: complete\ndata: \n\n")
    assert client.messages[0]["status"] == 200
    assert client.messages[-1]["more_body"] is False
    assert source.closed.is_set()


async def test_a_revoked_key_ends_the_stream_with_an_error_and_closes_it() -> None:
    client, source, revoked = _Client(), _Source(_Context()), asyncio.Event()
    task = await _run(MultipartFraming(), client, source, revoked)
    await client.until(b'"first"')
    revoked.set()
    await asyncio.wait_for(task, 5)
    assert b'{"payload":null,"errors":[{"message":"API key revoked"' in client.body()
    assert client.body().endswith(b"--graphql--\r\n")
    assert source.closed.is_set()


async def test_a_client_that_leaves_closes_the_subscription_at_once() -> None:
    client, source = _Client(), _Source(_Context())
    task = await _run(SseFraming(), client, source, asyncio.Event())
    await client.until(b'"first"')
    client.gone.set()
    await asyncio.wait_for(task, 5)
    assert source.closed.is_set()
    assert client.messages[-1].get("more_body", True) is True  # nothing more was written


async def test_a_cancelled_stream_ends_with_a_retryable_error_naming_the_last_seq() -> None:
    client, source = _Client(), _Source(_Context())
    task = await _run(SseFraming(), client, source, asyncio.Event())
    await source.release.put(9)
    await client.until(b"id: 9\n")
    task.cancel()  # what the server does to open responses past its graceful timeout
    await asyncio.wait_for(task, 5)
    *_, farewell, complete = decoded(client.body())
    [error] = json.loads(farewell)["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["resumeAfter"] == 9
    assert complete == b""
    assert client.messages[-1]["more_body"] is False
    assert source.closed.is_set()


async def test_a_streamed_response_sends_headers_set_on_it_before_it_starts() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def run(headers: list[tuple[bytes, bytes]], receive: Any, send: Any) -> None:
        seen.append(list(headers))

    response = Streamed(run, {"content-type": "text/event-stream"})
    response.headers["X-Accel-Buffering"] = "no"
    await response({"type": "http"}, _Client().receive, _Client().send)
    assert seen == [[(b"content-type", b"text/event-stream"), (b"x-accel-buffering", b"no")]]
