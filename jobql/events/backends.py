"""broadcaster backends with their known gaps closed.

broadcaster 0.3.1's Redis backend has two gaps:

- it marks itself ready *before* it subscribes, so its listener can find no channel yet,
  stop listening and wait for a "ready" that never comes again;
- when the pub/sub connection drops (Redis restarted, a proxy or `CLIENT KILL` closed it),
  its listener task dies with the error, while broadcaster's own listener keeps waiting on
  the backend's queue: the bus looks up, and every later message is dropped.

SupervisedRedisBackend listens on a pub/sub connection of its own (redis-py's retries are
off there, so every drop reaches us instead of being papered over by a silent reconnect).
When the connection drops, or a subscribe fails, it reconnects with capped backoff for as
long as Redis stays away, subscribes again to every channel it should have (redis-py
records a channel only once SUBSCRIBE succeeded, so the set of channels is ours), then
calls ``on_gap``: messages published in between are gone, so subscribers must resync from
the database. It publishes through a second client with short timeouts and one retry on a
connection error, so a publish during an outage fails at once and the first one after it
does not fail on a pooled connection the restart closed.

Its Postgres backend runs LISTEN, UNLISTEN and NOTIFY on one asyncpg connection, which
allows one operation at a time: concurrent publishes fail ("another operation is in
progress") and concurrent subscribes corrupt its state; and a lost connection is never
noticed. SupervisedPostgresBackend listens on a connection of its own (its LISTENs one at a
time), publishes through a small pool, and reconnects the listener like the Redis one.

Both ping their listening connection when it has been quiet, so one that died without a
word (no FIN or RST ever came) is noticed and replaced too; both answer ``ping()``, an
active check of the server for readiness; and both keep ``listening`` False from a lost
listening connection until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg
from broadcaster import Broadcast, Event
from broadcaster._backends.base import BroadcastBackend
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
RECONNECT_FIRST_DELAY = 0.05
# Capped low: a refused connection costs nothing, and readiness (and the live path) should
# come back well within a second or two of the server.
RECONNECT_MAX_DELAY = 0.5
# A server that does not answer (a host that went away rather than a refused port) must not
# hold a publish, a subscribe or a readiness probe for long.
CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 2.0
PING_TIMEOUT = 1.0
# A listening connection can die without a word (a proxy's idle timeout, a host that went
# away): when it has been quiet this long it is pinged, and replaced when the answer takes
# longer than the timeout. Pinging also keeps idle-timeout proxies from cutting it.
KEEPALIVE_SECONDS = 5.0
KEEPALIVE_TIMEOUT = 3.0


def next_delay(delay: float) -> float:
    """Capped exponential backoff between reconnect attempts."""
    return min(delay * 2, RECONNECT_MAX_DELAY)


def _redis_client(url: str, *, retries: int) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), retries),
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
    )


class SupervisedRedisBackend(BroadcastBackend):
    def __init__(self, url: str, on_gap: Callable[[], None] | None = None) -> None:
        # Publishes retry once at once: the first one after a restart meets a pooled
        # connection the server closed; a second failure means Redis is down.
        self._conn = _redis_client(url, retries=1)
        # The listening connection never retries by itself (see the module docstring).
        self._subscriber = _redis_client(url, retries=0)
        self._pubsub = self._subscriber.pubsub()
        self.on_gap = on_gap
        self.listening = True  # False from a dropped connection until it is back
        self.reconnects = 0
        self._channels: set[str] = set()  # what we should be subscribed to
        self._broken = False  # the pub/sub connection must be replaced
        self._changed = asyncio.Event()  # a subscribe happened or failed: look again
        self._switching = asyncio.Lock()  # (un)subscribing vs replacing the connection
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listener: asyncio.Task[None] | None = None
        self.keepalive_seconds = KEEPALIVE_SECONDS
        self.keepalive_timeout = KEEPALIVE_TIMEOUT

    async def connect(self) -> None:
        await self._conn.ping()  # a wrong URL or a missing server fails the start
        self._listener = asyncio.create_task(self._pubsub_listener(), name="jobql-bus-redis")

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._subscriber.aclose()
        await self._conn.aclose()

    async def subscribe(self, channel: str) -> None:
        async with self._switching:
            self._channels.add(channel)
            if not self._broken:
                try:
                    await self._pubsub.subscribe(channel)
                except CONNECTION_ERRORS as exc:
                    # The listener reconnects, subscribes to it then and calls on_gap.
                    log.warning("event bus could not subscribe (%s); will on reconnect", exc)
                    self._lose()
        self._changed.set()

    async def unsubscribe(self, channel: str) -> None:
        async with self._switching:
            self._channels.discard(channel)
            if not self._broken:
                with contextlib.suppress(*CONNECTION_ERRORS):  # a dropped connection forgets it
                    await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: object) -> None:
        await self._conn.publish(channel, str(message))

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def ping(self) -> bool:
        """Whether Redis answers now (on the publishing connections)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self._conn.ping()
        except (*CONNECTION_ERRORS, TimeoutError):
            return False
        return True

    def _lose(self) -> None:
        self._broken = True
        self.listening = False
        self._changed.set()

    async def _pubsub_listener(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while True:
            if self._broken:
                try:
                    await self._reconnect()
                except Exception as exc:
                    log.debug("event bus cannot reach Redis yet: %r", exc)
                    await asyncio.sleep(delay)
                    delay = next_delay(delay)
                    continue
                delay = RECONNECT_FIRST_DELAY
                self.listening = True
                self.reconnects += 1
                log.info("event bus reconnected to Redis pub/sub")
                if self.on_gap is not None:
                    self.on_gap()
            try:
                await self._listen()
            except CONNECTION_ERRORS as exc:
                log.warning("event bus lost its Redis pub/sub connection (%s); reconnecting", exc)
                self._lose()
            except Exception:
                # Not a known connection error, but this task must never die: broadcaster
                # would wait on our queue forever. A new connection is the safe answer.
                log.exception("event bus Redis listener failed; reconnecting")
                self._lose()
                await asyncio.sleep(RECONNECT_MAX_DELAY)

    async def _listen(self) -> None:
        """Pass messages on until the connection fails (or a subscribe did, or a ping went
        unanswered)."""
        heard_at = time.monotonic()  # when the connection last said anything
        pinged_at: float | None = None  # a PING is out, unanswered since then
        while not self._broken:
            if not self._pubsub.subscribed:
                # Nothing to read yet (redis-py reads only once a SUBSCRIBE succeeded).
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._changed.wait()
                heard_at, pinged_at = time.monotonic(), None
                continue
            now = time.monotonic()
            if pinged_at is not None and now - pinged_at > self.keepalive_timeout:
                raise RedisTimeoutError("Redis did not answer a PING on the pub/sub connection")
            if pinged_at is None and now - heard_at > self.keepalive_seconds:
                await self._pubsub.ping()
                pinged_at = now
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(1.0, self.keepalive_seconds / 2)
            )
            if message is None:
                continue
            heard_at, pinged_at = time.monotonic(), None  # anything at all: it is alive
            if message["type"] == "message":
                await self._queue.put(
                    Event(channel=message["channel"].decode(), message=message["data"].decode())
                )

    async def _reconnect(self) -> None:
        """A fresh pub/sub connection subscribed to every channel we should have; raises
        (and stays broken) while Redis cannot be reached."""
        async with self._switching:
            old, self._pubsub = self._pubsub, self._subscriber.pubsub()
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]
            if self._channels:
                await self._pubsub.subscribe(*sorted(self._channels))
            else:
                await self._subscriber.ping()
            self._broken = False


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
        self._keepalive: asyncio.Task[None] | None = None
        self._closing = False
        self.keepalive_seconds = KEEPALIVE_SECONDS
        self.keepalive_timeout = KEEPALIVE_TIMEOUT

    async def connect(self) -> None:
        """Connect, or fail leaving nothing open (so it can be called again)."""
        pool = await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=PG_PUBLISH_POOL_SIZE,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
        )
        try:
            async with self._lock:
                await self._listen()
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool
        self._keepalive = asyncio.create_task(self._keep_alive(), name="jobql-bus-pg-keepalive")

    async def disconnect(self) -> None:
        self._closing = True
        for task in (self._reconnecting, self._keepalive):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=COMMAND_TIMEOUT)
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await self._pool.close()
            self._pool.terminate()

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
        try:
            await self._pool.execute("SELECT pg_notify($1, $2)", channel, message)
        except PG_CONNECTION_ERRORS:
            # A pooled connection the server dropped (a restart): the pool replaces it,
            # and a second failure means the server is down. A duplicate notification is
            # harmless: receivers skip what they have seen.
            await self._pool.execute("SELECT pg_notify($1, $2)", channel, message)

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def ping(self) -> bool:
        """Whether PostgreSQL answers now (on the publishing pool)."""
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self._pool.fetchval("SELECT 1")
        except (*PG_CONNECTION_ERRORS, TimeoutError):
            return False
        return True

    def _deliver(self, _connection: object, _pid: int, channel: str, payload: object) -> None:
        self._queue.put_nowait(Event(channel=channel, message=str(payload)))

    async def _listen(self) -> None:
        """A new listening connection, listening to every channel we should (lock held)."""
        connection = await asyncpg.connect(
            self._url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
        )
        try:
            for channel in sorted(self._channels):
                await connection.add_listener(channel, self._deliver)
        except BaseException:
            with contextlib.suppress(Exception):
                connection.terminate()
            raise
        connection.add_termination_listener(self._lost)
        self._listener = connection
        self.listening = True

    async def _keep_alive(self) -> None:
        """Ping the listening connection when it has been quiet (see KEEPALIVE_SECONDS)."""
        while True:
            await asyncio.sleep(self.keepalive_seconds)
            listener = self._listener
            if listener is None or not self.listening:
                continue
            try:
                async with asyncio.timeout(self.keepalive_timeout), self._lock:
                    if self._still_listening(listener):
                        await listener.fetchval("SELECT 1")
            except Exception as exc:
                log.warning("event bus LISTEN connection did not answer (%r)", exc)
                self._lost(listener)

    def _still_listening(self, connection: asyncpg.Connection) -> bool:
        return connection is self._listener and self.listening

    def _lost(self, connection: object) -> None:
        if self._closing or connection is not self._listener or not self.listening:
            return
        self.listening = False
        log.warning("event bus lost its PostgreSQL LISTEN connection; reconnecting")
        self._reconnecting = asyncio.create_task(
            self._reconnect(), name="jobql-bus-postgres-reconnect"
        )

    async def _reconnect(self) -> None:
        """Reconnect for as long as it takes (only disconnect() stops it)."""
        if self._listener is not None:
            self._listener.terminate()
        delay = RECONNECT_FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self._listen()
            except Exception as exc:
                log.debug("event bus cannot reach PostgreSQL yet: %r", exc)
                delay = next_delay(delay)
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
