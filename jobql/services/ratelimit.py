"""Requests per window per caller, with the `limits` package (memory or Redis storage)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


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


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        url = "async+" + redis_url if redis_url else "async+memory://"
        options = {"implementation": "redispy"} if redis_url else {}
        self.storage = cast(AsyncStorage, storage_from_string(url, key_prefix="jobql", **options))
        self.strategy = MovingWindowRateLimiter(self.storage)

    async def aclose(self) -> None:
        # limits has no close(); its Redis storage keeps the redis-py client on its bridge.
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if isinstance(client, aioredis.Redis):
            await client.aclose()

    async def acquire(self, scope: str, caller_id: str, limit: int, window_seconds: int) -> RateHit:
        """Count one request in the caller's moving window, unless the window is full."""
        item = RateLimitItemPerSecond(limit, window_seconds)
        return RateHit(await self.strategy.hit(item, scope, caller_id), item, scope, caller_id)

    async def state(self, hit: RateHit) -> RateState:
        """The window after ``hit``, for the RateLimit headers (a second storage call: with
        Redis a round trip, which a caller can overlap with other work)."""
        stats = await self.strategy.get_window_stats(hit.item, hit.scope, hit.caller_id)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        if not hit.allowed:
            reset = max(1, reset)
        return RateState(
            hit.allowed, hit.item.amount, hit.item.get_expiry(), stats.remaining, reset
        )

    async def hit(self, scope: str, caller_id: str, limit: int, window_seconds: int) -> RateState:
        return await self.state(await self.acquire(scope, caller_id, limit, window_seconds))

    async def reset(self) -> None:
        await self.storage.reset()
