"""broadcaster backends with their known gaps closed.

broadcaster 0.3.1's Redis backend marks itself ready *before* it subscribes, so its
listener can find no channel yet, stop listening and wait for a "ready" that never comes
again: every later message is silently dropped. This one subscribes first and keeps
checking whether there is something to listen to.
"""

from __future__ import annotations

import asyncio
import contextlib

from broadcaster import Broadcast, Event
from broadcaster._backends.redis import RedisBackend


class SupervisedRedisBackend(RedisBackend):
    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        self._ready.set()

    async def _pubsub_listener(self) -> None:
        while True:
            if not self._pubsub.subscribed:
                self._ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._ready.wait()
                continue
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                await self._queue.put(
                    Event(channel=message["channel"].decode(), message=message["data"].decode())
                )


def create_broadcast(url: str) -> Broadcast:
    if url.startswith(("redis://", "rediss://")):
        return Broadcast(backend=SupervisedRedisBackend(url))
    return Broadcast(url)
