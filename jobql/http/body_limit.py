"""Refuse HTTP request bodies over a size limit with 413, before anything parses them; then
check the JSON of what is left strictly (jobql/http/json_input.py)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from jobql.http.json_input import JsonInputMiddleware, replaying, send_request_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, max_query_tokens: int = 2000) -> None:
        self.app: ASGIApp = JsonInputMiddleware(app, max_query_tokens=max_query_tokens)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit, then replay what was read.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replaying(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_request_error(
            scope,
            send,
            413,
            "PAYLOAD_TOO_LARGE",
            f"Request body larger than {self.max_bytes} bytes.",
        )
