"""The per-request GraphQL context: services, the request id and the caller."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from jobql.observability.metrics import UnavailableOperation
from jobql.services.auth import Caller, TooManyFailedLookups, parse_bearer
from jobql.services.container import Services
from jobql.services.ratelimit import RateState

__all__ = ["Context", "Services", "TooManyFailedAuthentications", "Unauthenticated"]


class Unauthenticated(GraphQLError):
    def __init__(self) -> None:
        super().__init__(
            "Missing or invalid API key: send `Authorization: Bearer <key>`.",
            extensions={"code": "UNAUTHENTICATED"},
        )


class TooManyFailedAuthentications(GraphQLError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "Too many requests with invalid API keys from this address; retry later.",
            extensions={"code": "TOO_MANY_REQUESTS", "retryAfterSeconds": retry_after_seconds},
        )


def authorization_param(params: Mapping[str, Any]) -> str | None:
    """The Authorization value of a WebSocket connection_init payload: at its top level
    (`{"Authorization": "Bearer <key>"}`) or, as clients that reuse their HTTP headers send
    it, under `headers` (`{"headers": {"Authorization": "Bearer <key>"}}`); the name in any
    case. The top level wins when both are sent."""
    headers = params.get("headers")
    for source in (params, headers if isinstance(headers, Mapping) else {}):
        for name, value in source.items():
            if isinstance(name, str) and name.lower() == "authorization" and isinstance(value, str):
                return value
    return None


class Context:
    def __init__(
        self,
        services: Services,
        request: Request | WebSocket,
        response: Response | WebSocket | None,
        request_id: str | None,
    ) -> None:
        self.services = services
        self.request = request
        self.response = response
        self.request_id = request_id
        # Set by Strawberry from the WebSocket connection_init payload.
        self.connection_params: dict[str, Any] | None = None
        # Extra entries for the response's `extensions` (see ResponseExtensions).
        self.extensions: dict[str, Any] = {}
        # Over SSE, the seq of a `Last-Event-ID` header: jobEvents resumes after it,
        # whatever its own cursor argument says.
        self.resume_after: int | None = None
        # The seq of the stored event a subscription resolver yielded last, for the SSE
        # `id:` of the item it becomes (take_stream_seq clears it, so heartbeats have none).
        self.stream_seq: int | None = None
        self._caller: Caller | None = None
        self._authenticated = False
        self._auth_lock = asyncio.Lock()

    def credentials(self) -> str | None:
        if self.connection_params is not None:
            return parse_bearer(authorization_param(self.connection_params))
        return parse_bearer(self.request.headers.get("authorization"))

    @property
    def client_address(self) -> str | None:
        client = self.request.client
        return client.host if client is not None else None

    def assume(self, caller: Caller) -> None:
        """Act for ``caller`` without reading the request's credentials (a route that
        authenticated the request its own way)."""
        self._caller = caller
        self._authenticated = True

    def take_stream_seq(self) -> int | None:
        seq, self.stream_seq = self.stream_seq, None
        return seq

    async def authenticate(self) -> Caller | None:
        """The caller, looked up once per request (sibling fields share the answer).
        Raises TooManyFailedLookups when this address sent too many bad keys lately."""
        async with self._auth_lock:
            if not self._authenticated:
                self._caller = await self.services.keys.authenticate(
                    self.credentials(), self.client_address
                )
                self._authenticated = True
        return self._caller

    async def reauthenticate(self) -> Caller | None:
        """Look the key up again (a WebSocket does before each new operation: the key may
        have been revoked since connection_init); the cache makes this cheap."""
        async with self._auth_lock:
            self._authenticated = False
        return await self.authenticate()

    def set_rate_limit_headers(self, rate: RateState) -> None:
        """RateLimit-Policy / RateLimit (IETF httpapi draft) and, when refused, Retry-After."""
        if not isinstance(self.response, Response):
            return
        headers = self.response.headers
        headers["RateLimit-Policy"] = f'"submit";q={rate.limit};w={rate.window_seconds}'
        headers["RateLimit"] = f'"submit";r={rate.remaining};t={rate.reset_seconds}'
        if not rate.allowed:
            headers["Retry-After"] = str(rate.reset_seconds)

    def service_unavailable(self, retry_after_seconds: int, *, whole_request: bool) -> None:
        """An outage got in the way: Retry-After on the HTTP response and, when the whole
        request failed (no data at all), status 503."""
        if whole_request:
            self.services.jobs.metrics.service_unavailable(UnavailableOperation.REQUEST)
        if not isinstance(self.response, Response):
            return
        self.response.headers["Retry-After"] = str(retry_after_seconds)
        if whole_request:
            self.response.status_code = 503

    async def caller(self) -> Caller:
        try:
            caller = await self.authenticate()
        except TooManyFailedLookups as exc:
            if isinstance(self.response, Response):
                self.response.status_code = 429
                self.response.headers["Retry-After"] = str(exc.retry_after_seconds)
            raise TooManyFailedAuthentications(exc.retry_after_seconds) from None
        if caller is None:
            if isinstance(self.response, Response):
                self.response.status_code = 401
            raise Unauthenticated()
        return caller
