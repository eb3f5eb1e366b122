"""Requests per window per caller, with the `limits` package (memory or Redis storage).

When its Redis cannot be reached the limiter follows a policy: "open" counts nothing and lets
the request through (logged, and counted in jobql_rate_limiter_unavailable_total), "closed"
refuses it with ServiceUnavailable. Cost and concurrency limits are the database's, not its.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from jobql.observability.metrics import Metrics
from jobql.outages import ServiceUnavailableError, is_outage
from jobql.services.unavailable import ThrottledWarning

log = logging.getLogger(__name__)

FailurePolicy = Literal["open", "closed"]

# A pooled connection that Redis dropped (a restart, an idle timeout) fails on its next
# command: redis-py then reconnects and sends it once more. Only connection errors are
# retried, and only once, so a Redis that is really down costs a request one refused connect
# more, not seconds of backoff. Timeouts are short for the same reason: a rate limiter that
# waits longer than the request it guards helps nobody.
REDIS_OPTIONS: dict[str, Any] = {
    "implementation": "redispy",
    "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    "socket_connect_timeout": 1.0,
    "socket_timeout": 1.0,
}


@dataclass(frozen=True)
class RateState:
    """What the RateLimit headers tell the client after one request."""

    allowed: bool
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int  # until a slot frees up (Retry-After when refused)


@dataclass(frozen=True)
class RateHit:
    """One request counted (or refused) in a caller's window."""

    allowed: bool
    item: RateLimitItem
    scope: str
    caller_id: str
    # Not counted: the store was down and the policy is to fail open.
    uncounted: bool = False


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        on_redis_error: FailurePolicy = "open",
        metrics: Metrics | None = None,
    ) -> None:
        url = "async+" + redis_url if redis_url else "async+memory://"
        options = REDIS_OPTIONS if redis_url else {}
        self.storage = cast(AsyncStorage, storage_from_string(url, key_prefix="jobql", **options))
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.on_redis_error = on_redis_error
        self.metrics = metrics or Metrics()
        self._warn = ThrottledWarning(
            log,
            "rate limiter: Redis is unreachable; submits are "
            + ("allowed without a rate limit" if on_redis_error == "open" else "refused"),
        )

    async def aclose(self) -> None:
        # limits has no close(); its Redis storage keeps the redis-py client on its bridge.
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if isinstance(client, aioredis.Redis):
            await client.aclose()

    async def acquire(self, scope: str, caller_id: str, limit: int, window_seconds: int) -> RateHit:
        """Count one request in the caller's moving window, unless the window is full.

        Raises ServiceUnavailableError when the store is down and the policy is "closed"."""
        item = RateLimitItemPerSecond(limit, window_seconds)
        try:
            allowed = await self.strategy.hit(item, scope, caller_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._warn(exc)
            if self.on_redis_error == "closed":
                self.metrics.rate_limiter_unavailable("refused")
                raise ServiceUnavailableError("the rate limiter") from exc
            self.metrics.rate_limiter_unavailable("allowed")
            return RateHit(True, item, scope, caller_id, uncounted=True)
        return RateHit(allowed, item, scope, caller_id)

    async def state(self, hit: RateHit) -> RateState | None:
        """The window after ``hit``, for the RateLimit headers (a second storage call: with
        Redis a round trip, which a caller can overlap with other work); None when it cannot
        be read (the store is down): then the response has no RateLimit headers."""
        if hit.uncounted:
            return None
        try:
            stats = await self.strategy.get_window_stats(hit.item, hit.scope, hit.caller_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._warn(exc)
            return None
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        if not hit.allowed:
            reset = max(1, reset)
        return RateState(
            hit.allowed, hit.item.amount, hit.item.get_expiry(), stats.remaining, reset
        )

    async def hit(
        self, scope: str, caller_id: str, limit: int, window_seconds: int
    ) -> RateState | None:
        return await self.state(await self.acquire(scope, caller_id, limit, window_seconds))

    async def reset(self) -> None:
        await self.storage.reset()
