"""broadcaster backends with their known gaps closed.

broadcaster 0.3.1's Redis backend has two:

- it marks itself ready *before* it subscribes, so its listener can find no channel yet,
  stop listening and wait for a "ready" that never comes again;
- when the pub/sub connection drops (Redis restarted, a proxy or `CLIENT KILL` closed it),
  its listener task dies with the error, while broadcaster's own listener keeps waiting on
  the backend's queue: the bus looks up, and every later message is dropped.

This backend subscribes first and keeps checking whether there is something to listen to;
when the connection drops it reconnects with backoff, subscribes again to every channel it
had (and to any asked for meanwhile), then calls ``on_gap``: messages published in between
are gone, so subscribers must resync from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from broadcaster import Broadcast, Event
from broadcaster._backends.redis import RedisBackend
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 5.0


class SupervisedRedisBackend(RedisBackend):
    def __init__(self, url: str, on_gap: Callable[[], None] | None = None) -> None:
        super().__init__(url)
        self.on_gap = on_gap
        self.listening = True  # False from a dropped connection until it is back
        self._channels: set[str] = set()  # what we should be subscribed to
        self._broken = asyncio.Event()  # a subscribe failed: reconnect without a read
        self._switching = asyncio.Lock()  # (un)subscribing vs replacing the connection
        self.reconnects = 0

    async def subscribe(self, channel: str) -> None:
        async with self._switching:
            self._channels.add(channel)
            try:
                await self._pubsub.subscribe(channel)
            except CONNECTION_ERRORS:
                # The listener reconnects, subscribes to it then and calls on_gap.
                log.warning("event bus could not subscribe; will on reconnect", exc_info=True)
                self.listening = False
                self._broken.set()
        self._ready.set()

    async def unsubscribe(self, channel: str) -> None:
        async with self._switching:
            self._channels.discard(channel)
            with contextlib.suppress(*CONNECTION_ERRORS):  # a dropped connection forgets it
                await self._pubsub.unsubscribe(channel)

    async def _pubsub_listener(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while True:
            try:
                await self._listen()
            except CONNECTION_ERRORS:
                self.listening = False
                log.warning(
                    "event bus lost its Redis pub/sub connection; reconnecting in %.2f s",
                    delay,
                    exc_info=True,
                )
            await asyncio.sleep(delay)
            try:
                await self._reconnect()
            except CONNECTION_ERRORS:
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            delay = RECONNECT_FIRST_DELAY
            self.listening = True
            self.reconnects += 1
            log.info("event bus reconnected to Redis pub/sub")
            if self.on_gap is not None:
                self.on_gap()

    async def _listen(self) -> None:
        """Pass messages on until the connection fails (or a subscribe did)."""
        while not self._broken.is_set():
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

    async def _reconnect(self) -> None:
        """A fresh pub/sub connection subscribed to every channel we should have."""
        async with self._switching:
            self._broken.clear()
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = self._conn.pubsub()
            if self._channels:
                await self._pubsub.subscribe(*sorted(self._channels))


def create_broadcast(url: str, on_gap: Callable[[], None] | None = None) -> Broadcast:
    """``on_gap`` is called when messages may have been lost (Redis only)."""
    if url.startswith(("redis://", "rediss://")):
        return Broadcast(backend=SupervisedRedisBackend(url, on_gap))
    return Broadcast(url)
