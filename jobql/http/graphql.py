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
from jobql.resolvers.context import Context, Services

# Legacy graphql-ws answers a rejected connection_init with close code 1011; both
# protocols close with 4403 here, so clients see one code for "bad key".
_REJECTED = "jobql_rejected"


class _WebSocketAdapter(ASGIWebSocketAdapter):
    async def close(self, code: int, reason: str) -> None:
        if code == 1011 and getattr(self.ws.state, _REJECTED, False):
            code, reason = 4403, "Forbidden"
        await super().close(code, reason)


class GraphQLView(GraphQL[Context, None]):
    websocket_adapter_class = _WebSocketAdapter

    def __init__(self, schema: Schema, services: Services) -> None:
        settings = services.settings
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
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
        if await context.authenticate() is None:
            setattr(context.request.state, _REJECTED, True)
            raise ConnectionRejectionError({"message": "Missing or invalid API key."})
        return cast(UnsetType, UNSET)
