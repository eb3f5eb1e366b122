"""The Strawberry ASGI view, wired to our context and API-key checks."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry import Schema
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET, UnsetType

from jobql.http.request_id import request_id_of
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Context, Services

# Legacy graphql-ws answers a rejected connection_init with close code 1011; both
# protocols close with 4403 here, so clients see one code for "bad key".
_REJECTED = "jobql_rejected"
# When the key could not be checked (the database is down), the close code is 1013 "Try
# Again Later" instead: graphql-ws clients retry it, where 4403 tells them to give up.
_UNAVAILABLE = "jobql_unavailable"
TRY_AGAIN_LATER = 1013


class _WebSocketAdapter(ASGIWebSocketAdapter):
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
