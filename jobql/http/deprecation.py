"""Deprecation and sunset notices on the HTTP answers of an API version being retired:
``Deprecation`` (RFC 9745: ``@<unix seconds>``), ``Sunset`` (RFC 8594: an HTTP date) and
``Link`` headers pointing at the migration guide, on every answer under ``/<version>/``."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import format_datetime

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobql.settings import ApiDeprecation


def notice_headers(notice: ApiDeprecation) -> list[tuple[str, str]]:
    headers = [("Deprecation", f"@{int(notice.deprecated_at.timestamp())}")]
    if notice.sunset_at is not None:
        headers.append(("Sunset", format_datetime(notice.sunset_at, usegmt=True)))
    if notice.link is not None:
        headers.append(("Link", f'<{notice.link}>; rel="deprecation"; type="text/html"'))
        if notice.sunset_at is not None:
            headers.append(("Link", f'<{notice.link}>; rel="sunset"; type="text/html"'))
    return headers


class DeprecationMiddleware:
    def __init__(self, app: ASGIApp, notices: Mapping[str, ApiDeprecation]) -> None:
        self.app = app
        self.headers = {f"/{name}/": notice_headers(n) for name, n in notices.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.headers:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        found = next((h for prefix, h in self.headers.items() if path.startswith(prefix)), None)
        if found is None:
            await self.app(scope, receive, send)
            return

        async def noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in found:
                    headers.append(name, value)
            await send(message)

        await self.app(scope, receive, noted)
