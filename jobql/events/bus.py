"""The EventBus seam: publish small JSON messages, subscribe with a bounded buffer.

Pub/sub is only the fast path; the database is the truth. Subscribers that may have missed
messages (their buffer overflowed, or the backend failed) are told to resync from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from broadcaster import Broadcast
from broadcaster._base import Unsubscribed

log = logging.getLogger(__name__)


class Subscription(Protocol):
    async def receive(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message, or None when ``timeout`` passed with none."""
        ...

    def take_lost(self) -> bool:
        """True once after messages may have been lost; the caller should resync."""
        ...


class EventBus(Protocol):
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[Subscription]: ...

    @property
    def healthy(self) -> bool: ...


class BoundedSubscription:
    """A subscriber's buffer. When it is full the oldest messages are dropped and the
    subscriber is marked lost, so a slow consumer costs memory up to ``maxsize`` only."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self._lost = False

    def put(self, message: dict[str, Any]) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._lost = True
        self._queue.put_nowait(message)

    def mark_lost(self) -> None:
        self._lost = True

    async def receive(self, timeout: float | None) -> dict[str, Any] | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    def take_lost(self) -> bool:
        lost, self._lost = self._lost, False
        return lost


class BroadcastBus:
    """EventBus over broadcaster (memory://, redis://, postgres://)."""

    def __init__(self, url: str, *, buffer_size: int = 1000) -> None:
        self.url = url
        self._broadcast = Broadcast(url)
        self._buffer_size = buffer_size
        self._connected = False
        self._publish_failures = 0

    async def connect(self) -> None:
        await self._broadcast.connect()
        self._connected = True

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            with contextlib.suppress(Exception):
                await self._broadcast.disconnect()

    @property
    def healthy(self) -> bool:
        # broadcaster's listener task dies silently when the backend connection drops.
        listener: asyncio.Task[None] | None = getattr(self._broadcast, "_listener_task", None)
        return self._connected and listener is not None and not listener.done()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self._broadcast.publish(channel, json.dumps(message, separators=(",", ":")))
        except Exception:
            # A lost publish only delays subscribers: they resync from the database.
            self._publish_failures += 1
            log.warning("event bus publish failed", extra={"channel": channel}, exc_info=True)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        buffer = BoundedSubscription(self._buffer_size)
        async with self._broadcast.subscribe(channel) as subscriber:

            async def pump() -> None:
                try:
                    while True:
                        event = await subscriber.get()
                        buffer.put(json.loads(event.message))
                except Unsubscribed:
                    pass
                except Exception:
                    buffer.mark_lost()
                    log.warning("event bus subscription failed", exc_info=True)

            task = asyncio.create_task(pump())
            try:
                yield buffer
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
