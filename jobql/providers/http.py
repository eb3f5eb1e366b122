"""What every HTTP provider shares: reading a server-sent event stream, and turning an
upstream error status into our error taxonomy."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from jobql.errors import ErrorCode
from jobql.providers.base import ProviderError
from jobql.providers.sse import SSEDecoder
from jobql.settings import ProviderSettings

log = logging.getLogger(__name__)

# What is kept of an upstream error body (on the exception only, for debugging).
MAX_ERROR_BODY = 4096
UNAVAILABLE_STATUSES = frozenset({408, 409, 425, 500, 502, 503, 504, 520, 522, 524, 529})
CONTENT_FILTER_MARKERS = ("content_filter", "content_policy", "content_management_policy")


async def sse_data(response: httpx.Response) -> AsyncIterator[list[bytes]]:
    """The ``data`` of each server-sent event, in batches: all the events one read of the
    body completed. Batching keeps the per-event cost to a loop step rather than an async
    generator round trip; the bytes go to the JSON parser undecoded."""
    decoder = SSEDecoder()
    # aiter_raw skips a layer of httpx generators per read; a compressed stream (a proxy
    # may do that) still needs aiter_bytes to inflate it.
    if response.headers.get("content-encoding", "identity") == "identity":
        reads = response.aiter_raw()
    else:
        reads = response.aiter_bytes()
    async for chunk in reads:
        if events := decoder.feed(chunk):
            yield events
    if events := decoder.flush():
        yield events


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """From ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_for_status(
    provider: str, status: int, headers: Mapping[str, str], body: str
) -> ProviderError:
    """An upstream error answer, classified. The body stays on the exception only."""
    body = body[:MAX_ERROR_BODY]
    if status == 429:
        code = ErrorCode.PROVIDER_RATE_LIMITED
    elif status in UNAVAILABLE_STATUSES or status >= 500:
        code = ErrorCode.PROVIDER_UNAVAILABLE
    elif status == 400 and any(marker in body for marker in CONTENT_FILTER_MARKERS):
        code = ErrorCode.CONTENT_FILTERED
    else:
        # 401, 403, 404, 422, ...: our configuration (key, model name, request shape), not
        # the client's; the operator needs to know, the client gets INTERNAL.
        code = ErrorCode.INTERNAL
        log.warning("provider %s refused the request: HTTP %s", provider, status)
    return ProviderError(code, retry_after_seconds=retry_after_seconds(headers), body=body)


class HttpProvider:
    """A named provider with one pooled client; ``read_timeout_seconds`` bounds each
    silence of a stream. ``headers`` are the protocol's own (auth, version); the configured
    ones are added over them."""

    def __init__(
        self,
        name: str,
        config: ProviderSettings,
        headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        # Every connection may be kept alive: a burst of streams otherwise reconnects all
        # but httpx's default 20 the next time.
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers={**headers, **config.headers},
            timeout=httpx.Timeout(
                config.read_timeout_seconds, connect=config.connect_timeout_seconds
            ),
            limits=limits,
            # httpx's API over aiohttp's connections (by httpx's maintainer; the OpenAI and
            # Anthropic SDKs offer the same): its C HTTP parser costs about 2.5x less CPU
            # per streamed read than httpx's own transport, and a process relays thousands
            # of reads a second.
            transport=transport or AiohttpTransport(limits=limits),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


@contextlib.asynccontextmanager
async def streaming_post(
    client: httpx.AsyncClient, provider: str, path: str, body: dict[str, Any], request_id: str
) -> AsyncIterator[httpx.Response]:
    """POST ``body`` and hand over the streaming response. An error status, a timeout or a
    broken connection, also while the caller reads the stream, become a ProviderError;
    leaving the block (a cancelled job) closes the response and so the upstream request."""
    try:
        async with client.stream(
            "POST", path, json=body, headers={"X-Request-ID": request_id}
        ) as response:
            if response.status_code >= 400:
                raw = (await response.aread())[:MAX_ERROR_BODY].decode(errors="replace")
                raise error_for_status(provider, response.status_code, response.headers, raw)
            yield response
    except httpx.TimeoutException as exc:
        slow = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        code = ErrorCode.PROVIDER_TIMEOUT if slow else ErrorCode.PROVIDER_UNAVAILABLE
        raise ProviderError(code) from exc
    except httpx.TransportError as exc:  # refused, reset, DNS, a stream cut short
        raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE) from exc


def event_text(data: bytes) -> str:
    """An event as text, for an error body."""
    return data.decode(errors="replace")[:MAX_ERROR_BODY]


def json_object(data: bytes) -> dict[str, Any]:
    """One event's JSON; anything else means the upstream is broken."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses some of what the json module takes (NaN, infinities, lone
        # surrogates, invalid UTF-8 that decoding to text used to replace); a server
        # that sends them must not start failing. (Its one other difference, integers past
        # 64 bits read as floats, touches no field a provider reads.)
        try:
            value = json.loads(data.decode(errors="replace"))
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, body=event_text(data))
    return value
