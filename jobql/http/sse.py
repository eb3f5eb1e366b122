"""GraphQL over Server-Sent Events, "distinct connections" mode of the graphql-sse protocol
(https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md): one request, one
operation, its results as `next` events and a `complete` event at the end.

Each result that carries a stored event has the event's seq as its SSE `id`, so a client
that reconnects with `Last-Event-ID` resumes right after it. `sse_response` is the one entry
point: the GraphQL endpoint uses it, and so can any route that streams a subscription to a
browser's EventSource."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from jobql.http.subscriptions import Operation, refusal, stream_subscription
from jobql.services.auth import Caller

if TYPE_CHECKING:
    from jobql.http.graphql import GraphQLView

EVENT_STREAM = "text/event-stream"
HEADERS: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
LAST_EVENT_ID = "last-event-id"


def encode_event(event: str, data: str = "", id: str | None = None) -> bytes:
    """One SSE event. Data with line breaks becomes one `data:` line per line (a reader
    joins them back with "\\n"); an empty data still gets its `data:` line, which browsers
    need to dispatch the event."""
    if "\n" in event or "\r" in event:
        raise ValueError("an SSE event name is one line")
    lines = [f"event: {event}"]
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("an SSE id is one line without NUL")
        lines.append(f"id: {id}")
    data = data.replace("\r\n", "\n").replace("\r", "\n")
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def encode_comment(text: str) -> bytes:
    """A comment line, which every reader ignores (it keeps proxies from timing out)."""
    return "".join(f": {line}\n" for line in text.splitlines() or [""]).encode() + b"\n"


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class SseFraming:
    content_type = EVENT_STREAM
    extra_headers = HEADERS

    def opening(self) -> bytes:
        return b""

    def result(self, payload: Mapping[str, object], seq: int | None) -> bytes:
        return encode_event("next", _json(payload), None if seq is None else str(seq))

    def fatal(self, errors: Sequence[Mapping[str, object]]) -> bytes:
        return encode_event("next", _json({"errors": list(errors)}))

    def keepalive(self) -> bytes:
        return encode_comment("keepalive")

    def complete(self) -> bytes:
        return encode_event("complete")


def single_result(body: bytes) -> bytes:
    """A query or mutation over SSE: its one result as `next`, then `complete`."""
    return encode_event("next", body.decode()) + encode_event("complete")


def parse_last_event_id(value: str | None) -> int | str | None:
    """The seq of a `Last-Event-ID` header, None without one, or why it is not a seq."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return "Last-Event-ID must be the seq of an event (a non-negative integer)."
    return int(text)


async def sse_response(
    view: GraphQLView,
    request: Request,
    *,
    query: str,
    variables: dict[str, object] | None = None,
    operation_name: str | None = None,
    caller_override: Caller | None = None,
    resume_after: int | None = None,
) -> Response:
    """Stream the subscription ``query`` over SSE as an answer to ``request``.

    The caller is the request's `Authorization: Bearer` key, or ``caller_override`` for a
    route that authenticated the request its own way; it is counted against the per-key
    caps (an SSE stream is one connection and one subscription). ``resume_after`` (else the
    request's `Last-Event-ID`) makes jobEvents resume after that seq, whatever its own
    cursor argument says. Refusals are JSON: 400 (a bad `Last-Event-ID`, a document that
    does not validate or is not a subscription), 401, 429 (`Retry-After`), 503."""
    return await stream_sse(
        view,
        request,
        Operation(query, variables, operation_name),
        caller_override=caller_override,
        resume_after=resume_after,
    )


async def stream_sse(
    view: GraphQLView,
    request: Request,
    operation: Operation,
    *,
    caller_override: Caller | None = None,
    resume_after: int | None = None,
) -> Response:
    """sse_response, for an operation read from a GraphQL request (extensions included)."""
    if resume_after is None:
        parsed = parse_last_event_id(request.headers.get(LAST_EVENT_ID))
        if isinstance(parsed, str):
            return refusal(request.scope, 400, "BAD_REQUEST", parsed)
        resume_after = parsed
    return await stream_subscription(
        view,
        request,
        operation,
        SseFraming(),
        caller_override=caller_override,
        resume_after=resume_after,
    )
