"""A ceiling on HTTP response bodies: a GraphQL result above it is replaced by an error
instead of being sent. The backstop behind the query cost limit, which refuses most such
queries before they run; streamed responses (no Content-Length) pass as they are."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobql.http.graphql_response import response_content_type
from jobql.http.request_id import request_id_of

RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"


class ResponseLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_within_limit(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                length = dict(message.get("headers", ())).get(b"content-length", b"")
                if length.isdigit() and int(length) > self.max_bytes:
                    replaced = True
                    await self._replace(scope, int(length), message, send)
                    return
            elif replaced:
                return  # the oversized body is dropped
            await send(message)

        await self.app(scope, receive, send_within_limit)

    async def _replace(self, scope: Scope, size: int, start: Message, send: Send) -> None:
        extensions: dict[str, object] = {
            "code": RESPONSE_TOO_LARGE,
            "bytes": size,
            "maxBytes": self.max_bytes,
        }
        if (request_id := request_id_of(scope)) is not None:
            extensions["requestId"] = request_id
        body = json.dumps(
            {
                "data": None,
                "errors": [
                    {
                        "message": f"The response ({size} bytes) is larger than the limit "
                        f"({self.max_bytes} bytes); ask for fewer items or fields.",
                        "extensions": extensions,
                    }
                ],
            }
        ).encode()
        # Keep the headers middleware added on the way out (X-Request-ID, RateLimit-*), and
        # the JSON media type the request asked for.
        headers = [
            (name, value)
            for name, value in start.get("headers", ())
            if name.lower() not in (b"content-length", b"content-type")
        ]
        headers += [
            (b"content-type", response_content_type(scope)),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
