"""The Strawberry ASGI view, wired to our context and API-key checks."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry import Schema
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.types.unset import UNSET, UnsetType

from jobql.http.json_input import WS_BAD_REQUEST, BadJson, check_request, parse_json
from jobql.http.request_id import request_id_of
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Context, Services

log = logging.getLogger(__name__)

# Legacy graphql-ws answers a rejected connection_init with close code 1011; both
# protocols close with 4403 here, so clients see one code for "bad key".
_REJECTED = "jobql_rejected"
# When the key could not be checked (the database is down), the close code is 1013 "Try
# Again Later" instead: graphql-ws clients retry it, where 4403 tells them to give up.
_UNAVAILABLE = "jobql_unavailable"
TRY_AGAIN_LATER = 1013


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
        if code in (1011, 4403) and getattr(self.ws.state, _UNAVAILABLE, False):
            code, reason = TRY_AGAIN_LATER, "Try Again Later"
        elif code == 1011 and getattr(self.ws.state, _REJECTED, False):
            code, reason = 4403, "Forbidden"
        await super().close(code, reason)


class GraphQLView(GraphQL[Context, None]):
    websocket_adapter_class = _WebSocketAdapter

    def __init__(self, schema: Schema, services: Services) -> None:
        settings = services.settings
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=settings.allow_get_queries,
            connection_init_wait_timeout=timedelta(seconds=10),
            allowed_origins=settings.ws_allowed_origins,
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )
        self.services = services

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(self.services, request, response, request_id_of(request.scope))

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        try:
            caller = await context.authenticate()
        except ServiceUnavailableError as exc:
            setattr(context.request.state, _UNAVAILABLE, True)
            raise ConnectionRejectionError(
                {
                    "message": "Service unavailable; connect again shortly.",
                    "retryAfterSeconds": exc.retry_after_seconds,
                }
            ) from None
        if caller is None:
            setattr(context.request.state, _REJECTED, True)
            raise ConnectionRejectionError({"message": "Missing or invalid API key."})
        return cast(UnsetType, UNSET)
