"""The EventBus seam: publish small JSON messages, subscribe with a bounded buffer.

Pub/sub is only the fast path; the database is the truth. Subscribers that may have missed
messages (their buffer overflowed, or the backend failed) are told to resync from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from broadcaster._base import Unsubscribed

from jobql.events.backends import create_broadcast
from jobql.outages import is_outage

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

    async def ready(self) -> bool:
        """An active check of the bus (for readiness): can it publish and listen now?"""
        ...


# A publish waits at most this long: a lost publish only delays subscribers, a stuck one
# would hold a submit or a job's event writer.
PUBLISH_TIMEOUT = 1.0
# Waiting for a bus that is down when the process starts.
CONNECT_FIRST_DELAY = 0.1
CONNECT_MAX_DELAY = 2.0
# How long a readiness answer is reused (probes stay cheap); a failed one is checked again
# sooner, so readiness comes back quickly after the server does.
READY_CACHE_SECONDS = 1.0
NOT_READY_CACHE_SECONDS = 0.2


# Put in a buffer to wake its receiver after a gap: receive() answers None for it.
_GAP: dict[str, Any] = {}


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
        """Messages may have been lost: the receiver wakes (None) and take_lost() is True."""
        self._lost = True
        self.put(_GAP)

    async def receive(self, timeout: float | None) -> dict[str, Any] | None:
        if not self._queue.empty():
            message = self._queue.get_nowait()
        else:
            try:
                async with asyncio.timeout(timeout):
                    message = await self._queue.get()
            except TimeoutError:
                return None
        return None if message is _GAP else message

    def take_lost(self) -> bool:
        lost, self._lost = self._lost, False
        return lost


@dataclass
class _Channel:
    """One broadcaster subscription per channel per process, fanned out to local buffers."""

    buffers: set[BoundedSubscription] = field(default_factory=set)
    exit_stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    pump: asyncio.Task[None] | None = None


class BroadcastBus:
    """EventBus over broadcaster (memory://, redis://, postgres://).

    broadcaster registers a channel's first subscriber only after an await, so two
    concurrent first subscribers overwrite each other; and its per-subscriber queues are
    unbounded. Here each channel is subscribed once, under a lock, and fanned out to
    bounded buffers.
    """

    def __init__(self, url: str, *, buffer_size: int = 1000) -> None:
        self.url = url
        self._broadcast = create_broadcast(url, on_gap=self._mark_all_lost)
        self._buffer_size = buffer_size
        self._connected = False
        self._channels: dict[str, _Channel] = {}
        self._lock = asyncio.Lock()
        self.publish_failures = 0
        self._publish_failing = False
        self._ready: tuple[float, bool] | None = None  # (checked at, answer)

    async def connect(self) -> None:
        """Connect, waiting for the server if it is down (a process started during an
        outage waits for it, as a running one reconnects), with capped backoff."""
        delay = CONNECT_FIRST_DELAY
        waiting = False
        while True:
            try:
                await self._broadcast.connect()
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if not waiting:
                    waiting = True
                    log.warning("event bus unreachable (%r); waiting for it", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_MAX_DELAY)
        if waiting:
            log.info("event bus reached")
        self._connected = True

    async def disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        listener = self._listener()
        if listener is not None and listener.done():
            # Broadcast.disconnect() would re-raise the dead listener's error before it
            # closes the backend connection; close the backend ourselves.
            with contextlib.suppress(Exception):
                await self._broadcast._backend.disconnect()
            return
        with contextlib.suppress(Exception):
            await self._broadcast.disconnect()

    def _listener(self) -> asyncio.Task[None] | None:
        task: asyncio.Task[None] | None = getattr(self._broadcast, "_listener_task", None)
        return task

    @property
    def healthy(self) -> bool:
        # broadcaster's listener task dies silently when the backend connection drops;
        # our backends say whether their listening connection is up (they reconnect).
        # Passive: see ready() for a check that the server answers.
        listener = self._listener()
        backend_listening = getattr(self._broadcast._backend, "listening", True)
        return (
            self._connected and listener is not None and not listener.done() and backend_listening
        )

    @property
    def reconnects(self) -> int:
        """Times the backend's listening connection was lost and made again."""
        count: int = getattr(self._broadcast._backend, "reconnects", 0)
        return count

    async def ready(self) -> bool:
        """The listener is up and the server answers a ping (Redis PING, PostgreSQL
        ``SELECT 1``), also in a process that subscribes to nothing. The ping's answer is
        reused briefly, so probes stay cheap."""
        if not self.healthy:
            return False
        ping = getattr(self._broadcast._backend, "ping", None)
        if ping is None:  # memory://: nothing to reach
            return True
        now = time.monotonic()
        if self._ready is not None:
            checked_at, answer = self._ready
            if now - checked_at < (READY_CACHE_SECONDS if answer else NOT_READY_CACHE_SECONDS):
                return answer
        answer = bool(await ping())
        self._ready = (time.monotonic(), answer)
        return answer

    def _mark_all_lost(self) -> None:
        """The backend reconnected: whatever was published meanwhile is gone."""
        for state in self._channels.values():
            for buffer in list(state.buffers):
                buffer.mark_lost()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._broadcast.publish(channel, json.dumps(message, separators=(",", ":")))
        except Exception as exc:
            # A lost publish only delays subscribers: they resync from the database.
            self.publish_failures += 1
            if not is_outage(exc):
                log.exception("event bus publish failed", extra={"channel": channel})
            elif not self._publish_failing:  # once per outage, not once per event
                self._publish_failing = True
                log.warning(
                    "event bus publish failed (%r); until it is back, subscribers "
                    "catch up from the database",
                    exc,
                )
        else:
            if self._publish_failing:
                self._publish_failing = False
                log.info("event bus publishes again")

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        buffer = BoundedSubscription(self._buffer_size)
        async with self._lock:
            state = self._channels.get(channel)
            if state is None:
                state = _Channel()
                subscriber = await state.exit_stack.enter_async_context(
                    self._broadcast.subscribe(channel)
                )
                state.pump = asyncio.create_task(self._pump(subscriber, state))
                self._channels[channel] = state
            state.buffers.add(buffer)
        try:
            yield buffer
        finally:
            async with self._lock:
                state.buffers.discard(buffer)
                if not state.buffers:
                    del self._channels[channel]
                    if state.pump is not None:
                        state.pump.cancel()
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await state.exit_stack.aclose()

    @staticmethod
    async def _pump(subscriber: Any, state: _Channel) -> None:
        try:
            while True:
                event = await subscriber.get()
                message = json.loads(event.message)
                for buffer in list(state.buffers):
                    buffer.put(message)
        except Unsubscribed:
            pass
        except Exception:
            log.warning("event bus subscription failed", exc_info=True)
            for buffer in list(state.buffers):
                buffer.mark_lost()
