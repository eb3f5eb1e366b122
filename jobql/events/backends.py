"""broadcaster backends with their known gaps closed.

broadcaster 0.3.1's Redis backend has two gaps:

- it marks itself ready *before* it subscribes, so its listener can find no channel yet,
  stop listening and wait for a "ready" that never comes again;
- when the pub/sub connection drops (Redis restarted, a proxy or `CLIENT KILL` closed it),
  its listener task dies with the error, while broadcaster's own listener keeps waiting on
  the backend's queue: the bus looks up, and every later message is dropped.

SupervisedRedisBackend subscribes first and keeps checking whether there is something to
listen to; when the connection drops it reconnects with backoff, subscribes again to every
channel it had (and to any asked for meanwhile), then calls ``on_gap``: messages published
in between are gone, so subscribers must resync from the database.

Its Postgres backend runs LISTEN, UNLISTEN and NOTIFY on one asyncpg connection, which
allows one operation at a time: concurrent publishes fail ("another operation is in
progress") and concurrent subscribes corrupt its state; and a lost connection is never
noticed. SupervisedPostgresBackend listens on a connection of its own (its LISTENs one at a
time), publishes through a small pool, and reconnects the listener like the Redis one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from broadcaster import Broadcast, Event
from broadcaster._backends.base import BroadcastBackend
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


PG_CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
PG_PUBLISH_POOL_SIZE = 4


class SupervisedPostgresBackend(BroadcastBackend):
    def __init__(self, url: str, on_gap: Callable[[], None] | None = None) -> None:
        self._url = url
        self.on_gap = on_gap
        self.listening = False
        self.reconnects = 0
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._lock = asyncio.Lock()  # one LISTEN/UNLISTEN (or reconnect) at a time
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False

    async def connect(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=PG_PUBLISH_POOL_SIZE)
        async with self._lock:
            await self._listen()

    async def disconnect(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self._pool is not None:
            await self._pool.close()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.add(channel)
            if self._listener is not None and self.listening:
                try:
                    await self._listener.add_listener(channel, self._deliver)
                except PG_CONNECTION_ERRORS:
                    self._lost(self._listener)  # the reconnect listens to it

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.discard(channel)
            if self._listener is not None and self.listening:
                with contextlib.suppress(*PG_CONNECTION_ERRORS):
                    await self._listener.remove_listener(channel, self._deliver)

    async def publish(self, channel: str, message: str) -> None:
        assert self._pool is not None, "connect() first"
        await self._pool.execute("SELECT pg_notify($1, $2)", channel, message)

    async def next_published(self) -> Event:
        return await self._queue.get()

    def _deliver(self, _connection: object, _pid: int, channel: str, payload: object) -> None:
        self._queue.put_nowait(Event(channel=channel, message=str(payload)))

    async def _listen(self) -> None:
        """A new listening connection, listening to every channel we should (lock held)."""
        connection = await asyncpg.connect(self._url)
        try:
            for channel in sorted(self._channels):
                await connection.add_listener(channel, self._deliver)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        connection.add_termination_listener(self._lost)
        self._listener = connection
        self.listening = True

    def _lost(self, connection: object) -> None:
        if self._closing or connection is not self._listener or not self.listening:
            return
        self.listening = False
        log.warning("event bus lost its PostgreSQL LISTEN connection; reconnecting")
        self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self._listen()
            except PG_CONNECTION_ERRORS:
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            self.reconnects += 1
            log.info("event bus reconnected its PostgreSQL LISTEN connection")
            if self.on_gap is not None:
                self.on_gap()
            return


def create_broadcast(url: str, on_gap: Callable[[], None] | None = None) -> Broadcast:
    """``on_gap`` is called when messages may have been lost (Redis and PostgreSQL)."""
    if url.startswith(("redis://", "rediss://")):
        return Broadcast(backend=SupervisedRedisBackend(url, on_gap))
    if url.startswith(("postgres://", "postgresql://")):
        return Broadcast(backend=SupervisedPostgresBackend(url, on_gap))
    return Broadcast(url)
