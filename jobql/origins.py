"""Browser origins as the ``Origin`` header carries them (scheme://host[:port]), for the
CORS and WebSocket allowlist. Plain string work, so that Settings (which worker processes
load too) needs no web framework; it accepts exactly what Strawberry's WebSocket origin
check accepts (``strawberry.http.websocket_origin``)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str:
    """``origin`` lowercased, without its default port (``https://Example.com:443`` is
    ``https://example.com``); ``*`` as it is. ValueError for anything that is not an
    origin (a path, a query, credentials, no host)."""
    if origin == "*":
        return origin
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or not parts.scheme
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ValueError(
            f"Invalid origin {origin!r}: expected '*' or scheme://host[:port], "
            "e.g. 'https://app.example.com', without a path"
        )
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def normalize_origins(origins: Iterable[str]) -> list[str]:
    """Each origin normalized, once, sorted."""
    return sorted({normalize_origin(origin) for origin in origins})
