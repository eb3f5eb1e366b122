"""Subscriptions streamed over one HTTP response (multipart and SSE): the caller is
authenticated and counted against the per-key WebSocket caps before anything runs, the
results are framed by the transport, idle streams get keepalives, and a client that leaves
or a revoked key ends the stream and releases its budget at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from strawberry.http import process_result
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from jobql.http.graphql_response import response_content_type
from jobql.http.json_input import request_error_body
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Context
from jobql.services.auth import Caller, TooManyFailedLookups

if TYPE_CHECKING:
    from jobql.http.graphql import GraphQLView

# An idle stream (nothing sent for this long) gets a keepalive: a comment line under SSE,
# an empty `{}` part under multipart; proxies close connections that stay silent.
KEEPALIVE_SECONDS = 5.0
# Over the caps there is no reset time to name: try again after about this long.
OVER_BUDGET_RETRY_SECONDS = 5
UNAUTHENTICATED_MESSAGE = "Missing or invalid API key: send `Authorization: Bearer <key>`."
REVOKED_ERROR: dict[str, object] = {
    "message": "API key revoked",
    "extensions": {"code": "UNAUTHENTICATED"},
}
# How long a stream cut by the server (shutdown) may take to write its last words.
FAREWELL_SECONDS = 1.0


def shutdown_error(last_seq: int) -> dict[str, object]:
    """The last item of a stream the server cut (it is shutting down): retryable, with
    the seq to resume after (`after` / `afterSeq`, or SSE's Last-Event-ID)."""
    return {
        "message": f"The server is shutting down; subscribe again to resume after seq {last_seq}.",
        "extensions": {
            "code": "SERVICE_UNAVAILABLE",
            "retryable": True,
            "retryAfterSeconds": 1,
            "resumeAfter": last_seq,
        },
    }


Results = AsyncGenerator[ExecutionResult, None]


class Framing(Protocol):
    """How a transport writes a stream of GraphQL results."""

    @property
    def content_type(self) -> str: ...

    @property
    def extra_headers(self) -> Mapping[str, str]: ...

    def opening(self) -> bytes:
        """Sent with the headers (before the first result)."""
        ...

    def result(self, payload: Mapping[str, object], seq: int | None) -> bytes:
        """One execution result; ``seq`` is the stored event's seq it carries, if any."""
        ...

    def fatal(self, errors: Sequence[Mapping[str, object]]) -> bytes:
        """The stream was ended by the server for a reason outside GraphQL (a revoked key)."""
        ...

    def keepalive(self) -> bytes: ...

    def complete(self) -> bytes: ...


class HttpStream:
    """One subscription open on an HTTP response, as the ConnectionRegistry sees it: one
    connection holding one operation."""

    def __init__(self) -> None:
        self.revoked = asyncio.Event()

    def operation_count(self) -> int:
        return 1

    async def close_revoked(self) -> None:
        self.revoked.set()


@dataclass(frozen=True)
class Operation:
    """A GraphQL request as read from the HTTP request (body or query string)."""

    query: str
    variables: dict[str, object] | None = None
    operation_name: str | None = None
    extensions: dict[str, object] | None = None


def refusal(
    scope: Scope,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A GraphQL-shaped JSON error for a request refused before GraphQL ran it."""
    return Response(
        request_error_body(scope, code, message),
        status,
        {**(headers or {}), "content-type": response_content_type(scope).decode()},
    )


async def admit(view: GraphQLView, context: Context, stream: HttpStream) -> Response | None:
    """Authenticate the caller and count ``stream`` against its caps; a refusal (401, 429,
    503) when that fails, None when the stream is admitted (release it when it ends)."""
    scope = context.request.scope
    try:
        caller = await context.authenticate()
    except ServiceUnavailableError as exc:
        retry = str(exc.retry_after_seconds)
        return refusal(
            scope,
            503,
            "SERVICE_UNAVAILABLE",
            "Service unavailable; subscribe again shortly.",
            {"retry-after": retry},
        )
    except TooManyFailedLookups as exc:
        return refusal(
            scope,
            429,
            "TOO_MANY_REQUESTS",
            "Too many requests with invalid API keys from this address; retry later.",
            {"retry-after": str(exc.retry_after_seconds)},
        )
    if caller is None:
        return refusal(scope, 401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE)
    return _admit_caller(view, scope, caller, stream)


def _admit_caller(
    view: GraphQLView, scope: Scope, caller: Caller, stream: HttpStream
) -> Response | None:
    limits = view.services.settings.limits_for(caller.tier)
    retry = {"retry-after": str(OVER_BUDGET_RETRY_SECONDS)}
    cap = limits.max_ws_subscriptions
    if view.connections.operations(caller.id) >= cap:
        message = f"Too many subscriptions for this API key (limit {cap} across its streams)"
        return refusal(scope, 429, "TOO_MANY_SUBSCRIPTIONS", message, retry)
    cap = limits.max_ws_connections
    if not view.connections.admit(stream, caller.id, caller.key_id, cap):
        message = f"Too many streaming connections for this API key (limit {cap})"
        return refusal(scope, 429, "TOO_MANY_CONNECTIONS", message, retry)
    return None


async def stream_subscription(
    view: GraphQLView,
    request: Request,
    operation: Operation,
    framing: Framing,
    *,
    caller_override: Caller | None = None,
    resume_after: int | None = None,
) -> Response:
    """Run a subscription and answer with its results as ``framing`` writes them; or a
    JSON refusal when the caller may not (401, 429, 503) or the document does not validate
    (400)."""
    sub_response = await view.get_sub_response(request)
    context = await view.get_context(request, sub_response)
    if caller_override is not None:
        context.assume(caller_override)
    context.resume_after = resume_after
    stream = HttpStream()
    if (refused := await admit(view, context, stream)) is not None:
        return refused
    try:
        results = await view.schema.subscribe(
            operation.query,
            variable_values=operation.variables,
            context_value=context,
            operation_name=operation.operation_name,
            operation_extensions=operation.extensions,
        )
        # The first result decides the status: a document that does not validate is a 400,
        # like any other request (each subscription answers its first item promptly).
        first = await _next(results)
    except BaseException:
        view.connections.release(stream)
        raise
    if isinstance(first, PreExecutionError):
        view.connections.release(stream)
        await results.aclose()
        body = view.encode_json_string(process_result(first)).encode()
        return Response(body, 400, {"content-type": response_content_type(request.scope).decode()})

    async def run(headers: RawHeaders, receive: Receive, send: Send) -> None:
        try:
            await pump(send, receive, results, first, framing, context, stream.revoked, headers)
        finally:
            view.connections.release(stream)

    headers = {"content-type": framing.content_type, **framing.extra_headers}
    return Streamed(run, headers)


RawHeaders = list[tuple[bytes, bytes]]


class Streamed(Response):
    """A 200 response whose body a coroutine writes as it goes. Its headers can be changed
    until it is sent, like any Response's; it ignores `background`."""

    def __init__(
        self,
        run: Callable[[RawHeaders, Receive, Send], Awaitable[None]],
        headers: Mapping[str, str],
    ) -> None:
        self.status_code = 200
        self.background = None
        self._run = run
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._run(self.raw_headers, receive, send)


_END = object()


async def _next(results: Results) -> ExecutionResult | object:
    try:
        return await anext(results)
    except StopAsyncIteration:
        return _END


async def _disconnected(receive: Receive) -> object:
    """Returns when the client goes away (the request body was read before)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return message


async def pump(
    send: Send,
    receive: Receive,
    results: Results,
    first: ExecutionResult | object,
    framing: Framing,
    context: Context,
    revoked: asyncio.Event,
    headers: RawHeaders,
    *,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> None:
    """Write the stream: ``first`` (already read) and the rest of ``results``, with a
    keepalive after ``keepalive_seconds`` of silence, until the results end (complete),
    the key is revoked (an error, then complete) or the client leaves. Cancelled (the
    server is shutting down, past its graceful timeout), it ends with a retryable error
    naming the seq to resume after. Whatever ends it, the subscription is closed before
    this returns (its resolver's cleanup runs)."""
    left: asyncio.Future[object] = asyncio.ensure_future(_disconnected(receive))
    revocation: asyncio.Future[object] = asyncio.ensure_future(revoked.wait())
    pending: asyncio.Future[object] | None = None
    last_seq = context.resume_after or 0
    started = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        started = True
        chunk = framing.opening()
        item = first
        while True:
            if item is _END:
                await _write(send, chunk + framing.complete(), more=False)
                return
            if item is not None:
                assert isinstance(item, ExecutionResult)
                payload = process_result(item)
                seq = context.take_stream_seq()
                last_seq = last_seq if seq is None else seq
                chunk += framing.result(payload, seq)
            if chunk:
                await _write(send, chunk)
            chunk, item = b"", None
            if pending is None:
                pending = asyncio.ensure_future(_next(results))
            done, _ = await asyncio.wait(
                {pending, left, revocation},
                timeout=keepalive_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if left in done:
                return
            if revocation in done:
                await _write(send, framing.fatal([REVOKED_ERROR]) + framing.complete(), more=False)
                return
            if pending in done:
                item, pending = pending.result(), None
            else:
                chunk = framing.keepalive()
    except OSError:
        return  # the client went away while a chunk was written
    except asyncio.CancelledError:
        if not started:
            raise
        # The response is complete after this, which is what cancelling it asked for.
        farewell = framing.fatal([shutdown_error(last_seq)]) + framing.complete()
        with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(FAREWELL_SECONDS):
                await _write(send, farewell, more=False)
    finally:
        for task in (pending, left, revocation):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await results.aclose()


async def _write(send: Send, chunk: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": more})
