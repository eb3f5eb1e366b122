"""The EventBus seam against every broadcaster backend we support."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from jobql.events.backends import SupervisedPostgresBackend, SupervisedRedisBackend
from jobql.events.bus import BoundedSubscription, BroadcastBus
from tests.backends import Databases, bus_url
from tests.faults.servers import PostgresServer, RedisServer, wait_until


@pytest.fixture(params=["memory", "redis", "postgres"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[BroadcastBus]:
    if request.param == "postgres":
        # Skips (or fails under CI) like every PostgreSQL test when the server is missing.
        request.getfixturevalue("databases").postgres_available()
    instance = BroadcastBus(bus_url(request.param))
    await instance.connect()
    yield instance
    await instance.disconnect()


async def test_publish_reaches_every_subscriber_once(bus: BroadcastBus) -> None:
    channel = "jobql.test.fanout"
    async with bus.subscribe(channel) as first, bus.subscribe(channel) as second:
        for i in range(5):
            await bus.publish(channel, {"seq": i})
        for subscription in (first, second):
            got = [await subscription.receive(5) for _ in range(5)]
            assert got == [{"seq": i} for i in range(5)]
            assert await subscription.receive(0.05) is None
    assert bus.healthy


async def test_concurrent_first_subscribers_both_receive(bus: BroadcastBus) -> None:
    channel = "jobql.test.race"
    ready = asyncio.Event()
    entered = 0

    async def listen() -> dict[str, int] | None:
        nonlocal entered
        async with bus.subscribe(channel) as subscription:
            entered += 1
            if entered == 2:
                ready.set()
            await ready.wait()
            return await subscription.receive(5)  # type: ignore[return-value]

    tasks = [asyncio.create_task(listen()) for _ in range(2)]
    async with asyncio.timeout(5):
        await ready.wait()
    await bus.publish(channel, {"seq": 1})
    assert await asyncio.gather(*tasks) == [{"seq": 1}, {"seq": 1}]


async def test_resubscribe_after_everyone_left(bus: BroadcastBus) -> None:
    channel = "jobql.test.again"
    async with bus.subscribe(channel) as subscription:
        await bus.publish(channel, {"seq": 1})
        assert await subscription.receive(5) == {"seq": 1}
    async with bus.subscribe(channel) as subscription:
        await bus.publish(channel, {"seq": 2})
        assert await subscription.receive(5) == {"seq": 2}


async def test_a_gap_wakes_the_receiver_and_asks_for_a_resync() -> None:
    subscription = BoundedSubscription(10)
    waiting = asyncio.create_task(subscription.receive(None))
    await asyncio.sleep(0)  # the receiver is waiting
    subscription.mark_lost()
    assert await asyncio.wait_for(waiting, 5) is None
    assert subscription.take_lost()
    assert not subscription.take_lost()
    subscription.put({"seq": 1})
    assert await subscription.receive(0) == {"seq": 1}


async def test_redis_pubsub_connection_dropped_reconnects_and_asks_for_a_resync() -> None:
    """Redis restarted or a proxy closed the connection: the bus subscribes again by itself,
    tells every subscriber that messages may be gone, and delivers the next ones."""
    name = f"jobql-test-{uuid.uuid4().hex[:12]}"
    bus = BroadcastBus(f"{bus_url('redis')}?client_name={name}")
    await bus.connect()
    admin = aioredis.Redis.from_url(bus_url("redis"))
    try:
        async with bus.subscribe("jobql.test.drop") as subscription:
            await bus.publish("jobql.test.drop", {"seq": 1})
            assert await subscription.receive(5) == {"seq": 1}

            clients = await admin.client_list(_type="pubsub")
            ours = [c["id"] for c in clients if c.get("name") == name]
            assert len(ours) == 1
            await admin.client_kill_filter(_id=ours[0])

            # Woken without a message, and told to resync (what was published is gone).
            assert await subscription.receive(10) is None
            assert subscription.take_lost()
            assert bus.healthy
            await bus.publish("jobql.test.drop", {"seq": 2})
            assert await subscription.receive(5) == {"seq": 2}
            clients = await admin.client_list(_type="pubsub")
            assert len([c for c in clients if c.get("name") == name]) == 1
    finally:
        await admin.aclose()
        await bus.disconnect()


async def test_concurrent_publishes_and_first_subscribes_all_work(bus: BroadcastBus) -> None:
    """Many jobs publish at once, and many subscriptions open at once."""
    async with bus.subscribe("jobql.test.many") as subscription:
        await asyncio.gather(*(bus.publish("jobql.test.many", {"seq": i}) for i in range(50)))
        got = [await subscription.receive(5) for _ in range(50)]
    assert sorted(m["seq"] for m in got if m is not None) == list(range(50))
    assert bus.publish_failures == 0

    async def one(i: int) -> dict[str, Any] | None:
        async with bus.subscribe(f"jobql.test.many.{i}") as own:
            await bus.publish(f"jobql.test.many.{i}", {"seq": i})
            return await own.receive(5)

    assert await asyncio.gather(*(one(i) for i in range(10))) == [{"seq": i} for i in range(10)]


async def test_postgres_listen_connection_dropped_reconnects_and_asks_for_a_resync(
    databases: Databases,
) -> None:
    databases.postgres_available()
    url = bus_url("postgres")
    bus = BroadcastBus(url)
    await bus.connect()
    admin = await asyncpg.connect(url)
    try:
        async with bus.subscribe("jobql.test.pgdrop") as subscription:
            await bus.publish("jobql.test.pgdrop", {"seq": 1})
            assert await subscription.receive(5) == {"seq": 1}

            backend = bus._broadcast._backend
            assert isinstance(backend, SupervisedPostgresBackend)
            assert backend._listener is not None
            pid = backend._listener.get_server_pid()
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

            assert await subscription.receive(10) is None
            assert subscription.take_lost()
            assert bus.healthy
            assert backend.reconnects == 1
            await bus.publish("jobql.test.pgdrop", {"seq": 2})
            assert await subscription.receive(5) == {"seq": 2}
    finally:
        await admin.close()
        await bus.disconnect()


async def test_redis_down_for_a_while_the_bus_reconnects_and_asks_for_a_resync(
    tmp_path: Path,
) -> None:
    """Redis itself goes away (not only the connection): reconnect attempts fail for as long
    as it is down, then the bus subscribes again, tells subscribers to resync and delivers
    the next messages; publishing meanwhile fails fast, and the first publish after works."""
    server = RedisServer(tmp_path)
    server.start()
    bus = BroadcastBus(server.url)
    await bus.connect()
    try:
        async with bus.subscribe("jobql.test.down") as subscription:
            await bus.publish("jobql.test.down", {"seq": 1})
            assert await subscription.receive(5) == {"seq": 1}

            server.stop()

            async def down() -> bool:
                return not bus.healthy

            await wait_until(down, "the bus to see the outage", 5)
            started = time.monotonic()
            await bus.publish("jobql.test.down", {"seq": 2})  # lost, quickly, and swallowed
            assert time.monotonic() - started < 1.0
            assert bus.publish_failures == 1
            # The outage lasts long enough for several reconnect attempts to fail.
            await asyncio.sleep(1.5)
            assert not bus.healthy

            await asyncio.to_thread(server.start)
            async with asyncio.timeout(5):
                assert await subscription.receive(None) is None  # woken by the gap
            assert subscription.take_lost()
            assert bus.healthy
            await bus.publish("jobql.test.down", {"seq": 3})  # the first one after: no failure
            assert await subscription.receive(5) == {"seq": 3}
            assert bus.publish_failures == 1
    finally:
        await bus.disconnect()
        server.stop()


async def test_redis_down_readiness_is_false_until_it_is_back(tmp_path: Path) -> None:
    """Readiness pings Redis: a process with no subscription reports the outage too, and
    both are ready again within 2 s of Redis returning."""
    server = RedisServer(tmp_path)
    server.start()
    subscribed = BroadcastBus(server.url)
    idle = BroadcastBus(server.url)
    await subscribed.connect()
    await idle.connect()
    try:
        async with subscribed.subscribe("jobql.test.ready"):
            assert await subscribed.ready()
            assert await idle.ready()
            server.stop()

            async def not_ready() -> bool:
                return not await subscribed.ready() and not await idle.ready()

            await wait_until(not_ready, "both buses to report the outage", 5)
            await asyncio.sleep(1.0)  # the outage goes on
            assert not await idle.ready()

            await asyncio.to_thread(server.start)

            async def ready() -> bool:
                return await subscribed.ready() and await idle.ready()

            await wait_until(ready, "both buses to be ready again", 2)
    finally:
        await subscribed.disconnect()
        await idle.disconnect()
        server.stop()


async def test_redis_subscribe_while_down_listens_once_it_is_back(tmp_path: Path) -> None:
    """A stream opened during the outage (its subscribe fails) gets its messages after."""
    server = RedisServer(tmp_path)
    server.start()
    bus = BroadcastBus(server.url)
    await bus.connect()
    try:
        server.stop()
        async with bus.subscribe("jobql.test.later") as subscription:
            assert not bus.healthy
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(5):
                assert await subscription.receive(None) is None
            assert subscription.take_lost()
            await bus.publish("jobql.test.later", {"seq": 1})
            assert await subscription.receive(5) == {"seq": 1}
            assert await bus.ready()
    finally:
        await bus.disconnect()
        server.stop()


async def test_redis_frozen_the_silent_listening_connection_is_replaced(tmp_path: Path) -> None:
    """Redis stops answering but its connections stay open (a hung server; to a client the
    same as a proxy or a host that dropped the connection without a word): the listener's
    keepalive ping goes unanswered, so the bus reports it, reconnects once Redis answers
    again, and asks for a resync."""
    server = RedisServer(tmp_path)
    server.start()
    assert server.process is not None
    pid = server.process.pid
    bus = BroadcastBus(server.url)
    await bus.connect()
    backend = bus._broadcast._backend
    assert isinstance(backend, SupervisedRedisBackend)
    backend.keepalive_seconds = backend.keepalive_timeout = 0.5
    try:
        async with bus.subscribe("jobql.test.frozen") as subscription:
            await bus.publish("jobql.test.frozen", {"seq": 1})
            assert await subscription.receive(5) == {"seq": 1}

            os.kill(pid, signal.SIGSTOP)

            async def noticed() -> bool:
                return not bus.healthy

            await wait_until(noticed, "the bus to notice the silent connection", 5)
            assert not await bus.ready()

            os.kill(pid, signal.SIGCONT)
            async with asyncio.timeout(10):
                assert await subscription.receive(None) is None  # woken by the gap
            assert subscription.take_lost()
            await wait_until(bus.ready, "the bus to be ready again", 5)
            await bus.publish("jobql.test.frozen", {"seq": 2})
            assert await subscription.receive(5) == {"seq": 2}
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
        await bus.disconnect()
        server.stop()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_bus_down_at_start_is_waited_for(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A process started during an outage waits for the bus instead of exiting."""
    if kind == "redis":
        server: Any = RedisServer(tmp_path)
        url = server.url
    else:
        server = PostgresServer(request.getfixturevalue("pg_template"))
        url = server.url(driver="postgres")
    bus = BroadcastBus(url)
    connecting = asyncio.create_task(bus.connect())
    try:
        await asyncio.sleep(0.5)  # the outage goes on: nothing to await but time
        assert not connecting.done()
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(10):
            await connecting
        async with bus.subscribe("jobql.test.late") as subscription:
            await bus.publish("jobql.test.late", {"n": 1})
            assert await subscription.receive(5) == {"n": 1}
        assert await bus.ready()
    finally:
        connecting.cancel()
        await bus.disconnect()
        if kind == "redis":
            server.stop()
        else:
            server.cleanup()
