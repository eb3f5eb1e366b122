"""Requests per window per caller, with the `limits` package (memory or Redis storage)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from limits import RateLimitItemPerSecond
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

    async def hit(self, scope: str, caller_id: str, limit: int, window_seconds: int) -> RateState:
        item = RateLimitItemPerSecond(limit, window_seconds)
        allowed = await self.strategy.hit(item, scope, caller_id)
        stats = await self.strategy.get_window_stats(item, scope, caller_id)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        if not allowed:
            reset = max(1, reset)
        return RateState(allowed, limit, window_seconds, stats.remaining, reset)

    async def reset(self) -> None:
        await self.storage.reset()
