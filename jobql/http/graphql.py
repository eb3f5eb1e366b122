"""The Strawberry ASGI view, wired to our context and API-key checks, with per-key
WebSocket budgets and revocation that closes open connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from datetime import timedelta
from typing import cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, parse
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry import Schema
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage,
    StartMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType
from strawberry.utils.operation import get_operation_type

from jobql.http.connections import ConnectionRegistry
from jobql.http.graphiql import render_page
from jobql.http.graphql_response import (
    GRAPHQL_RESPONSE_CONTENT_TYPE,
    JSON,
    Outcome,
    accepts_json,
    graphql_response_status,
    prefers_graphql_response,
)
from jobql.http.json_input import (
    WS_BAD_REQUEST,
    BadJson,
    check_request,
    parse_json,
    request_error_body,
)
from jobql.http.multipart import MultipartFraming, accepts_multipart
from jobql.http.request_id import request_id_of
from jobql.http.sse import EVENT_STREAM, SseFraming, single_result, stream_sse
from jobql.http.subscriptions import Framing, Operation, refusal, stream_subscription
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Context, Services
from jobql.services.auth import TooManyFailedLookups

log = logging.getLogger(__name__)

# Legacy graphql-ws answers a rejected connection_init with close code 1011; both
# protocols close with 4403 here, so clients see one code for "bad key".
_REJECTED = "jobql_rejected"
# When the key could not be checked (the database is down), the close code is 1013 "Try
# Again Later" instead: graphql-ws clients retry it, where 4403 tells them to give up.
_UNAVAILABLE = "jobql_unavailable"
TRY_AGAIN_LATER = 1013
# Over a budget (the caller's connection cap, or this address's failed key lookups): 4429
# with the reason.
_OVER_BUDGET = "jobql_over_budget"
TOO_MANY_REQUESTS = 4429
FORBIDDEN = 4403
REJECTED_REASON = "invalid or missing API key"
MESSAGE_TOO_BIG = 1009
INIT_TIMEOUT = 4408
# The protocol handler of a socket, for on_ws_connect to admit it.
_CONNECTION = "jobql_connection"
# What each GraphQL result of an HTTP request said, for its status (process_result).
_OUTCOMES = "jobql_outcomes"


class _WebSocketAdapter(ASGIWebSocketAdapter):
    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        """Strawberry's parser raises past its handlers on deep nesting or a huge integer
        (the connection drops without a close frame) and lets NaN and lone surrogates
        through: parse strictly and close with 4400 and the reason instead."""
        max_tokens = cast("GraphQLView", self.view).services.settings.max_query_tokens
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                try:
                    text = await self.ws.receive_text()
                except KeyError as exc:
                    raise NonTextMessageReceived from exc
                try:
                    message = parse_json(text)
                    if isinstance(message, dict) and isinstance(message.get("payload"), dict):
                        check_request(message["payload"], max_tokens)
                except BadJson as exc:
                    log.debug("bad WebSocket message refused: %s", exc)
                    await self.close(WS_BAD_REQUEST, str(exc))
                    return
                except json.JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
                    continue
                yield message
        except WebSocketDisconnect:
            pass

    async def close(self, code: int, reason: str) -> None:
        over_budget = getattr(self.ws.state, _OVER_BUDGET, None)
        if code in (1011, 4403) and getattr(self.ws.state, _UNAVAILABLE, False):
            code, reason = TRY_AGAIN_LATER, "Try Again Later"
        elif code in (1011, 4403) and over_budget:
            code, reason = TOO_MANY_REQUESTS, over_budget
        elif code in (1011, 4403) and getattr(self.ws.state, _REJECTED, False):
            code, reason = FORBIDDEN, REJECTED_REASON
        # Closing twice (a revocation racing the client's own close) is a no-op.
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(RuntimeError, OSError):
            await super().close(code, reason)


def _operation_error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


class _TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with the caller's budgets and a key re-check per operation."""

    view: GraphQLView

    def operation_count(self) -> int:
        return len(self.operations)

    async def close_revoked(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(FORBIDDEN, "API key revoked")

    async def handle(self) -> None:
        setattr(self.context.request.state, _CONNECTION, self)
        try:
            await super().handle()
        finally:
            self.view.connections.release(self)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and message["id"] not in self.operations:
            refusal = await self.view.refuse_operation(self.context)
            if refusal is not None:
                error, close = refusal
                await self.send_message(
                    {"id": message["id"], "type": "error", "payload": [error.formatted]}
                )
                if close:
                    await self.close_revoked()
                return
        await super().handle_subscribe(message)


class _LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """Legacy graphql-ws (subscriptions-transport-ws), with the caller's budgets, a key
    re-check per operation and the connection_init timeout the protocol lacks."""

    view: GraphQLView
    _init_timer: asyncio.Task[None] | None = None

    def operation_count(self) -> int:
        return len(self.tasks)

    async def close_revoked(self) -> None:
        await self.cleanup()
        await self.websocket.close(FORBIDDEN, "API key revoked")

    async def handle(self) -> None:
        setattr(self.context.request.state, _CONNECTION, self)
        self._init_timer = asyncio.create_task(self._close_uninitialised())
        try:
            await super().handle()
        finally:
            self._init_timer.cancel()
            self.view.connections.release(self)

    async def _close_uninitialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        await self.websocket.close(INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
        await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged and message["id"] not in self.tasks:
            refusal = await self.view.refuse_operation(self.context)
            if refusal is not None:
                error, close = refusal
                await self.send_message(
                    {"type": "error", "id": message["id"], "payload": error.formatted}
                )
                if close:
                    await self.close_revoked()
                return
        await super().handle_start(message)


class GraphQLView(GraphQL[Context, None]):
    websocket_adapter_class = _WebSocketAdapter
    graphql_transport_ws_handler_class = _TransportWSHandler
    graphql_ws_handler_class = _LegacyWSHandler

    def __init__(
        self, schema: Schema, services: Services, connections: ConnectionRegistry | None = None
    ) -> None:
        settings = services.settings
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=settings.allow_get_queries,
            connection_init_wait_timeout=timedelta(
                seconds=settings.ws_connection_init_timeout_seconds
            ),
            allowed_origins=settings.allowed_origins,
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )
        self.services = services
        self.max_message_bytes = settings.ws_max_message_bytes
        if connections is None:
            connections = ConnectionRegistry()
            services.keys.watch(connections)
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            receive, send = _limit_message_size(receive, send, self.max_message_bytes)
        elif scope["type"] == "http":
            send = _vary_on_accept(send)
            accept = Headers(scope=scope).get("accept")
            if (framing := streaming_framing(accept)) is not None:
                await self._serve_stream(scope, receive, send, framing)
                return
            response = await self._answer_json(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        """The answer to an HTTP request that does not stream (a subscription is refused)."""
        try:
            return await self.run(request)
        except NotStreamed as exc:
            return exc.response(request.scope)
        except HTTPException as exc:
            return PlainTextResponse(exc.reason, exc.status_code)

    async def _serve_stream(
        self, scope: Scope, receive: Receive, send: Send, framing: Framing
    ) -> None:
        """A request whose Accept can stream: a subscription streams (multipart or SSE);
        anything else is answered as JSON, or under SSE as one `next` and `complete`."""
        request = Request(scope, receive)
        operation = await self._subscription_of(request)
        response: Response
        if operation is None:
            response = await self._answer_json(request)
            content_type = response.headers.get("content-type", "")
            if (
                isinstance(framing, SseFraming)
                and not accepts_json(request.headers.get("accept"))
                and response.status_code == 200
                and content_type.startswith(JSON)
            ):
                # graphql-sse (Accept: text/event-stream only) reads every answer as events.
                headers = {
                    name: value
                    for name, value in response.headers.items()
                    if name not in ("content-length", "content-type")
                }
                response = Response(single_result(bytes(response.body)), 200, headers, EVENT_STREAM)
        elif request.method == "GET" and not self.allow_queries_via_get:
            response = _get_off().response(scope)
        elif isinstance(framing, SseFraming):
            response = await stream_sse(self, request, operation)
        else:
            response = await stream_subscription(self, request, operation, framing)
        await response(scope, receive, send)

    async def _subscription_of(self, request: Request) -> Operation | None:
        """The request's operation if it is a subscription; None for anything else,
        including a request the plain path refuses (it answers it as it always does)."""
        if request.method not in ("GET", "POST"):
            return None
        if request.method == "GET" and "query" not in request.query_params:
            return None
        adapter: AsyncHTTPRequestAdapter = self.request_adapter_class(request)
        try:
            data = await self.parse_http_body(adapter)
        except HTTPException:
            return None
        if not isinstance(data, GraphQLRequestData) or not data.query:
            return None
        operation_name = data.operation_name if isinstance(data.operation_name, str) else None
        try:
            document = parse(data.query, max_tokens=self.services.settings.max_query_tokens)
            kind = get_operation_type(document, operation_name)
        except (GraphQLError, RuntimeError):
            return None
        if kind is not OperationType.SUBSCRIPTION:
            return None
        return Operation(data.query, data.variables, operation_name, data.extensions)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's, except that a subscription is refused (406, or 405 over GET when
        GET is off) instead of being executed as a query (which fails inside)."""
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        if not self.allow_queries_via_get and method == "GET":
            allowed -= {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                if method == "GET" and not self.allow_queries_via_get:
                    raise _get_off() from exc
                raise NotStreamed(406, "NOT_ACCEPTABLE", NOT_STREAMABLE) from exc
            raise HTTPException(400, exc.as_http_error_reason(method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc

    async def _answer_json(self, request: Request) -> Response:
        """The answer to a request that does not stream, in the JSON type its Accept asks."""
        if prefers_graphql_response(request.headers.get("accept")):
            return await self._graphql_response(request)
        return await self._answer(request)

    async def _graphql_response(self, request: Request) -> Response:
        """A request that prefers application/graphql-response+json: the same body as under
        application/json, with that content type and the spec's status codes."""
        scope = request.scope
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = _refusal(scope, request, exc)
        else:
            outcomes: list[Outcome] = getattr(request.state, _OUTCOMES, [])
            if response.headers.get("content-type", "").startswith(JSON):
                response.headers["content-type"] = GRAPHQL_RESPONSE_CONTENT_TYPE
                if len(outcomes) == 1:  # one operation (not a batch)
                    set_status = response.status_code if response.status_code != 200 else None
                    response.status_code = graphql_response_status(outcomes[0], set_status)
        return response

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        errors = cast("list[Mapping[str, object]]", processed.get("errors") or [])
        outcomes: list[Outcome] = getattr(request.state, _OUTCOMES, [])
        outcomes.append(Outcome.of(processed.get("data"), errors))
        setattr(request.state, _OUTCOMES, outcomes)
        return processed

    async def render_graphql_ide(self, request: Request) -> Response:
        """The GraphiQL page from the vendored assets (Strawberry's loads them from a CDN)."""
        return render_page(request)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(self.services, request, response, request_id_of(request.scope))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        state = context.request.state
        try:
            caller = await context.authenticate()
        except ServiceUnavailableError as exc:
            setattr(state, _UNAVAILABLE, True)
            raise ConnectionRejectionError(
                {
                    "message": "Service unavailable; connect again shortly.",
                    "retryAfterSeconds": exc.retry_after_seconds,
                }
            ) from None
        except TooManyFailedLookups as exc:
            setattr(state, _OVER_BUDGET, "Too many invalid API keys from this address")
            raise ConnectionRejectionError(
                {
                    "message": "Too many invalid API keys from this address; retry later.",
                    "retryAfterSeconds": exc.retry_after_seconds,
                }
            ) from None
        if caller is None:
            setattr(state, _REJECTED, True)
            raise ConnectionRejectionError({"message": "Missing or invalid API key."})
        connection = getattr(state, _CONNECTION, None)
        if connection is not None:
            cap = self.services.settings.limits_for(caller.tier).max_ws_connections
            if not self.connections.admit(connection, caller.id, caller.key_id, cap):
                reason = f"Too many WebSocket connections for this API key (limit {cap})"
                setattr(state, _OVER_BUDGET, reason)
                raise ConnectionRejectionError({"message": reason, "limit": cap})
        return cast(UnsetType, UNSET)

    async def refuse_operation(self, context: Context) -> tuple[GraphQLError, bool] | None:
        """Why a new operation on an open connection is refused (and whether the
        connection must close), or None. The key is looked up again (from the cache,
        which a revocation clears), so a revoked key starts nothing new."""
        try:
            caller = await context.reauthenticate()
        except ServiceUnavailableError:
            # Nobody can revoke a key while the database is down; the operation itself
            # answers ServiceUnavailable if it needs the database.
            return None
        except TooManyFailedLookups:
            caller = None
        if caller is None:
            return _operation_error("API key revoked", "UNAUTHENTICATED"), True
        cap = self.services.settings.limits_for(caller.tier).max_ws_subscriptions
        if self.connections.operations(caller.id) >= cap:
            message = (
                f"Too many subscriptions for this API key (limit {cap} across its connections)"
            )
            return _operation_error(message, "TOO_MANY_SUBSCRIPTIONS"), False
        return None


NOT_STREAMABLE = (
    "A subscription over HTTP streams its results: send `Accept: text/event-stream` "
    "(GraphQL over SSE) or `Accept: multipart/mixed;subscriptionSpec=1.0,application/json` "
    "(multipart), or subscribe over the WebSocket."
)
GET_OFF = "GET requests are off on this server: send the subscription with POST."


class NotStreamed(HTTPException):
    """A subscription the HTTP request cannot stream, refused before it runs."""

    def __init__(
        self, status: int, code: str, reason: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status, reason)
        self.code = code
        self.headers = dict(headers or {})

    def response(self, scope: Scope) -> Response:
        return refusal(scope, self.status_code, self.code, self.reason, self.headers)


def _get_off() -> NotStreamed:
    return NotStreamed(405, "METHOD_NOT_ALLOWED", GET_OFF, {"allow": "POST"})


def streaming_framing(accept: str | None) -> Framing | None:
    """The stream an Accept header asks for: multipart subscriptions or SSE, or None."""
    for item in (accept or "").split(","):
        media_type, *raw = item.split(";")
        params = {}
        for param in raw:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip()
        if params.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        media_type = media_type.strip().lower()
        if media_type == EVENT_STREAM:
            return SseFraming()
        if accepts_multipart(media_type, params):
            return MultipartFraming()
    return None


# Under application/graphql-response+json: the status of a request Strawberry refused
# before running it, by its error code (a 405 also says which method to use).
_REFUSAL_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def _refusal(scope: Scope, request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, NotStreamed):
        return exc.response(scope)
    status, headers = exc.status_code, {"content-type": GRAPHQL_RESPONSE_CONTENT_TYPE}
    if request.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
        # A mutation (or, with GET queries off, any operation) sent with GET.
        status, headers["allow"] = 405, "POST"
    code = _REFUSAL_CODES.get(status, "BAD_REQUEST")
    return Response(request_error_body(scope, code, exc.reason), status, headers)


def _vary_on_accept(send: Send) -> Send:
    """The answer depends on the Accept header (its media type, and GraphiQL or not)."""

    async def varied(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).add_vary_header("Accept")
        await send(message)

    return varied


def _limit_message_size(receive: Receive, send: Send, max_bytes: int) -> tuple[Receive, Send]:
    """Refuse WebSocket messages over ``max_bytes`` with close code 1009, before they are
    parsed. (`jobql serve` also sets uvicorn's ws_max_size, which refuses them while they
    are read; this holds under any server.)"""
    closed = False

    async def limited_receive() -> Message:
        nonlocal closed
        message = await receive()
        if message["type"] == "websocket.receive" and not closed and _size(message) > max_bytes:
            closed = True
            await send(
                {
                    "type": "websocket.close",
                    "code": MESSAGE_TOO_BIG,
                    "reason": f"Message too big (limit {max_bytes} bytes)",
                }
            )
            return {"type": "websocket.disconnect", "code": MESSAGE_TOO_BIG}
        return message

    async def guarded_send(message: Message) -> None:
        # Once closed for a too-big message, whatever the handler still sends is dropped.
        if not closed:
            await send(message)

    return limited_receive, guarded_send


def _size(message: Message) -> int:
    text = message.get("text")
    if isinstance(text, str):
        return len(text) if text.isascii() else len(text.encode(errors="surrogatepass"))
    data = message.get("bytes")
    return len(data) if isinstance(data, bytes | bytearray) else 0
