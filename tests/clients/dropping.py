"""A live jobql whose event streams can be cut: a test-only ASGI wrapper in front of the app
ends the response of a request that asks for it (`?dropAfter=N` in its URL, and no
`Last-Event-ID` header) right after the Nth Server-Sent Event with an `id:`, as a proxy
timeout or a restarting server would. The client sees a stream that stops before
`complete` and has to reconnect; the stream itself is jobql's, unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobql.app import create_app
from jobql.providers.simulated import SimulatedProvider
from jobql.runtime import build_providers
from jobql.settings import Settings
from tests.api import Server
from tests.uvicorn_server import uvicorn_serving


class DropAfter:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.dropped = 0  # responses cut so far
        # The Last-Event-ID of each request that came back to a dropAfter URL.
        self.resumed: list[str] = []

    def _limit(self, scope: Scope) -> int | None:
        if scope["type"] != "http":
            return None
        asked = parse_qs(scope.get("query_string", b"").decode()).get("dropAfter")
        if not asked:
            return None
        for name, value in scope["headers"]:
            if name == b"last-event-id":
                self.resumed.append(value.decode())
                return None
        return int(asked[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self._limit(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        cut = asyncio.Event()
        seen = 0
        pending = b""

        async def cutting(message: Message) -> None:
            nonlocal seen, pending
            if cut.is_set():
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            pending += message.get("body", b"")
            out = b""
            while b"\n\n" in pending:
                event, pending = pending.split(b"\n\n", 1)
                out += event + b"\n\n"
                if any(line.startswith(b"id:") for line in event.split(b"\n")):
                    seen += 1
                    if seen >= limit:
                        # The response ends here, before `complete`.
                        await send({"type": "http.response.body", "body": out, "more_body": False})
                        self.dropped += 1
                        cut.set()
                        return
            await send({"type": "http.response.body", "body": out, "more_body": True})
            if not message.get("more_body", False):
                await send({"type": "http.response.body", "body": pending, "more_body": False})

        running = asyncio.ensure_future(self.app(scope, receive, cutting))
        stopped = asyncio.ensure_future(cut.wait())
        try:
            await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not running.done():
                # The stream's reader is gone: stop it as a client disconnect would.
                running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


@contextlib.asynccontextmanager
async def serve_dropping(settings: Settings) -> AsyncIterator[tuple[Server, DropAfter]]:
    """tests.api.serve, with DropAfter in front of the app."""
    provider = SimulatedProvider()
    app = create_app(settings, providers=build_providers(settings, simulated=provider))
    dropping = DropAfter(app)
    async with uvicorn_serving(dropping, ws="websockets-sansio") as port:
        yield Server(app, port, provider), dropping
