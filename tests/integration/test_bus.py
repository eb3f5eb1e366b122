"""The EventBus seam against every broadcaster backend we support."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jobql.events.bus import BroadcastBus
from tests.backends import bus_url


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
