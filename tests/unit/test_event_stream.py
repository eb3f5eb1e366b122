"""follow_job: replay after a cursor, then live, exactly once and in order, whatever the bus does.

The bus here is an in-memory fake over the real BoundedSubscription; the log is a list.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobql.events.bus import BoundedSubscription, EventBus, Subscription
from jobql.events.channels import MAX_INLINE_BYTES, event_message, job_channel
from jobql.events.publisher import EventPublisher
from jobql.events.stream import decode_message, follow_job
from jobql.events.types import EventType, Heartbeat, StoredEvent, StreamItem

JOB = "job-1"
CHANNEL = job_channel(JOB)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# Long enough never to fire in tests that are not about heartbeats; a bug that makes the
# stream wait for it still fails fast through GUARD_SECONDS.
NO_HEARTBEAT = 3600.0
TINY_HEARTBEAT = 0.01
GUARD_SECONDS = 5.0


class ObservedSubscription(BoundedSubscription):
    """The real bounded buffer, which also says when its reader is waiting on it."""

    def __init__(self, maxsize: int, receiving: asyncio.Event, trace: list[str]) -> None:
        super().__init__(maxsize)
        self._receiving = receiving
        self._trace = trace

    async def receive(self, timeout: float | None) -> dict[str, Any] | None:
        self._trace.append("receive")
        self._receiving.set()
        return await super().receive(timeout)


class FakeBus:
    """An EventBus in memory: every subscriber gets a BoundedSubscription to push into."""

    def __init__(self, buffer_size: int = 100) -> None:
        self.buffer_size = buffer_size
        self.subscribers: dict[str, list[BoundedSubscription]] = defaultdict(list)
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.receiving = asyncio.Event()
        # What the stream did, in order: "receive", "load N", "heartbeat".
        self.trace: list[str] = []

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.published.append((channel, message))
        self.push(channel, message)

    def push(self, channel: str, message: dict[str, Any]) -> None:
        """Deliver without going through publish (to inject duplicates, references...)."""
        for subscription in self.subscribers[channel]:
            subscription.put(message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription = ObservedSubscription(self.buffer_size, self.receiving, self.trace)
        self.subscribers[channel].append(subscription)
        try:
            yield subscription
        finally:
            self.subscribers[channel].remove(subscription)

    @property
    def healthy(self) -> bool:
        return True

    async def ready(self) -> bool:
        return True

    def subscribed(self, channel: str = CHANNEL) -> bool:
        return bool(self.subscribers[channel])


class FakeLog:
    """A job's durable event log, with the two loaders follow_job takes."""

    def __init__(self, bus: FakeBus, job_id: str = JOB) -> None:
        self.bus = bus
        self.job_id = job_id
        self.events: list[StoredEvent] = []
        # Committed by one writer but not yet visible to readers (a concurrent transaction).
        self.invisible: set[int] = set()
        self.loads: list[int] = []
        self.subscribed_at_load: list[bool] = []
        self.heartbeats = 0
        self.on_load: Callable[[int], Awaitable[None]] | None = None

    def append(self, type_: EventType, payload: dict[str, Any] | None = None) -> StoredEvent:
        seq = len(self.events) + 1
        event = StoredEvent(
            job_id=self.job_id,
            seq=seq,
            type=type_,
            payload=payload if payload is not None else {"n": seq},
            at=T0 + timedelta(seconds=seq),
        )
        self.events.append(event)
        return event

    async def commit_and_publish(
        self, type_: EventType, payload: dict[str, Any] | None = None
    ) -> StoredEvent:
        event = self.append(type_, payload)
        await EventPublisher(self.bus).publish(event)
        return event

    async def load_after(self, seq: int) -> list[StoredEvent]:
        self.loads.append(seq)
        self.bus.trace.append(f"load {seq}")
        self.subscribed_at_load.append(self.bus.subscribed(job_channel(self.job_id)))
        if self.on_load is not None:
            hook, self.on_load = self.on_load, None
            await hook(seq)
        return [e for e in self.events if e.seq > seq and e.seq not in self.invisible]

    async def load_heartbeat(self) -> Heartbeat:
        self.heartbeats += 1
        self.bus.trace.append("heartbeat")
        return Heartbeat(
            job_id=self.job_id,
            at=T0,
            status="RUNNING",
            phase="writing",
            elapsed_ms=self.heartbeats,
            output_tokens=len(self.events),
            cost_micros=0,
        )


@pytest.fixture
def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
def log(bus: FakeBus) -> FakeLog:
    return FakeLog(bus)


def follow(
    bus: EventBus, log: FakeLog, *, after: int = 0, heartbeat_seconds: float = NO_HEARTBEAT
) -> AsyncGenerator[StreamItem, None]:
    return follow_job(
        bus,
        JOB,
        after=after,
        load_after=log.load_after,
        load_heartbeat=log.load_heartbeat,
        heartbeat_seconds=heartbeat_seconds,
    )


async def next_item(stream: AsyncGenerator[StreamItem, None]) -> StreamItem:
    """The stream's next item; a hang fails the test instead of blocking the run."""
    async with asyncio.timeout(GUARD_SECONDS):
        return await anext(stream)


async def blocked_on_bus(
    stream: AsyncGenerator[StreamItem, None], bus: FakeBus
) -> asyncio.Future[StreamItem]:
    """Ask for the next item and return once the stream waits on the bus for it.

    Whatever the test does next happens in the live phase, after the log was read up to
    date; the returned future gives the item. Call it with nothing buffered on the bus.
    """
    bus.receiving.clear()
    pending = asyncio.ensure_future(next_item(stream))
    receiving = asyncio.ensure_future(bus.receiving.wait())
    try:
        await asyncio.wait({pending, receiving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        receiving.cancel()
    # A heartbeat may win the race with a tiny heartbeat_seconds; callers skip those.
    if pending.done() and not isinstance(pending.result(), Heartbeat):
        pytest.fail(f"expected the stream to wait on the bus, it sent {pending.result()!r}")
    return pending


async def take(stream: AsyncGenerator[StreamItem, None], n: int) -> list[StreamItem]:
    return [await next_item(stream) for _ in range(n)]


async def assert_ended(stream: AsyncGenerator[StreamItem, None], bus: FakeBus) -> None:
    with pytest.raises(StopAsyncIteration):
        await next_item(stream)
    assert not bus.subscribed(), "the stream left its subscription open"


def seqs(items: list[StreamItem]) -> list[int]:
    return [i.seq for i in items if isinstance(i, StoredEvent)]


def start(log: FakeLog, running: int = 0) -> None:
    log.append(EventType.JOB_QUEUED)
    log.append(EventType.JOB_STARTED, {"attempt": 1})
    for _ in range(running):
        log.append(EventType.OUTPUT_DELTA, {"text": "x"})


# -- replay and live -----------------------------------------------------------------------


async def test_replay_after_cursor_then_live(bus: FakeBus, log: FakeLog) -> None:
    start(log, running=2)  # seqs 1..4
    stream = follow(bus, log, after=1)

    replayed = await take(stream, 3)
    assert replayed == log.events[1:4]
    assert log.subscribed_at_load[0], "subscribe must happen before the log is read"

    pending = await blocked_on_bus(stream, bus)
    loads_before = len(log.loads)
    await log.commit_and_publish(EventType.OUTPUT_DELTA, {"text": "y"})
    live = [await pending]
    await log.commit_and_publish(EventType.PROGRESS, {"phase": "writing", "message": ""})
    await log.commit_and_publish(EventType.JOB_SUCCEEDED, {"output": "xxy"})
    live += await take(stream, 2)

    assert live == log.events[4:7]
    assert seqs(replayed + live) == [2, 3, 4, 5, 6, 7]
    assert len(log.loads) == loads_before, "in-order inline messages need no log read"
    await assert_ended(stream, bus)
    assert log.heartbeats == 0


async def test_replay_from_start_of_finished_job_ends_after_terminal(
    bus: FakeBus, log: FakeLog
) -> None:
    start(log, running=1)
    log.append(EventType.JOB_FAILED, {"error": {"code": "INTERNAL"}})
    stream = follow(bus, log, after=0)

    assert await take(stream, 4) == log.events
    await assert_ended(stream, bus)
    assert log.heartbeats == 0


async def test_event_committed_between_subscribe_and_read_is_sent_once(
    bus: FakeBus, log: FakeLog
) -> None:
    start(log)  # seqs 1..2

    async def writer_commits_meanwhile(_: int) -> None:
        # Subscribed already, log not read yet: a writer commits seq 3 and publishes it.
        await log.commit_and_publish(EventType.OUTPUT_DELTA, {"text": "a"})

    log.on_load = writer_commits_meanwhile
    stream = follow(bus, log, after=0)

    assert seqs(await take(stream, 3)) == [1, 2, 3]
    # Seq 3's bus message is still buffered: it is a duplicate now and must be skipped.
    await log.commit_and_publish(EventType.JOB_CANCELLED, {"reason": None})
    assert await next_item(stream) == log.events[3]
    await assert_ended(stream, bus)


async def test_replay_stops_at_a_hole_in_the_log(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    three = log.append(EventType.OUTPUT_DELTA, {"text": "a"})
    four = log.append(EventType.OUTPUT_DELTA, {"text": "b"})
    five = log.append(EventType.OUTPUT_DELTA, {"text": "c"})
    log.invisible.add(4)  # 5 is visible before 4: replay must not skip over the hole
    stream = follow(bus, log, after=0)

    assert await take(stream, 3) == [*log.events[:2], three]
    pending = await blocked_on_bus(stream, bus)

    log.invisible.clear()
    bus.push(CHANNEL, event_message(four, 10))  # 4 commits and is announced
    assert await pending == four
    bus.push(CHANNEL, event_message(five, 10))  # 5's own message, now in order
    assert await next_item(stream) == five


async def test_inline_bus_event_matches_the_stored_event(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    stream = follow(bus, log, after=2)
    pending = await blocked_on_bus(stream, bus)
    loads_before = len(log.loads)
    event = await log.commit_and_publish(EventType.OUTPUT_DELTA, {"text": "h\u00e9llo"})

    assert await pending == event
    assert len(log.loads) == loads_before, "an inline, in-order message needs no log read"


# -- what the bus gets wrong ---------------------------------------------------------------


async def test_duplicate_bus_messages_are_dropped(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    stream = follow(bus, log, after=0)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)
    loads_before = len(log.loads)

    delta = log.append(EventType.OUTPUT_DELTA, {"text": "a"})
    message = event_message(delta, 10)
    for _ in range(3):
        bus.push(CHANNEL, message)
    bus.push(CHANNEL, event_message(log.events[0], 10))  # an old one, too
    done = log.append(EventType.JOB_SUCCEEDED, {"output": "a"})
    bus.push(CHANNEL, event_message(done, 10))
    bus.push(CHANNEL, event_message(done, 10))

    assert [await pending, await next_item(stream)] == [delta, done]
    await assert_ended(stream, bus)
    assert len(log.loads) == loads_before, "duplicates are dropped without reading the log"


async def test_gap_in_bus_seqs_reads_the_log(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    stream = follow(bus, log, after=0)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)
    loads_before = len(log.loads)

    # seqs 3 and 4 are committed but their bus messages never arrive; 5 does.
    log.append(EventType.OUTPUT_DELTA, {"text": "a"})
    log.append(EventType.OUTPUT_DELTA, {"text": "b"})
    await log.commit_and_publish(EventType.OUTPUT_DELTA, {"text": "c"})

    assert [await pending, *await take(stream, 2)] == log.events[2:5]
    assert log.loads[loads_before] == 2, "the gap was filled from the log after seq 2"

    await log.commit_and_publish(EventType.JOB_SUCCEEDED, {"output": "abc"})
    assert seqs([await next_item(stream)]) == [6]
    await assert_ended(stream, bus)
    assert log.heartbeats == 0


async def test_reference_only_messages_are_filled_from_the_log(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    stream = follow(bus, log, after=0)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)
    loads_before = len(log.loads)

    big = log.append(EventType.OUTPUT_DELTA, {"text": "x" * (MAX_INLINE_BYTES + 1)})
    await EventPublisher(bus).publish(big)
    assert bus.published[-1] == (CHANNEL, {"seq": 3}), "a big event travels as a reference"

    assert await pending == big
    assert log.loads[loads_before:] == [2], "the reference was resolved by reading the log"

    done = log.append(EventType.JOB_SUCCEEDED, {"output": "x"})
    bus.push(CHANNEL, {"seq": done.seq})
    assert await next_item(stream) == done
    await assert_ended(stream, bus)


async def test_message_lost_by_the_bus_arrives_at_heartbeat_time(
    bus: FakeBus, log: FakeLog
) -> None:
    start(log)
    stream = follow(bus, log, after=0, heartbeat_seconds=TINY_HEARTBEAT)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)

    # Committed, but the bus never carries it: only the idle check of the log finds it.
    delta = log.append(EventType.OUTPUT_DELTA, {"text": "a"})
    item = await pending
    while isinstance(item, Heartbeat):  # the idle timer may have fired before the commit
        item = await next_item(stream)
    assert item == delta

    # Found in the log, the event replaced that round's heartbeat: the stream goes back to
    # the bus, and only a later idle round sends one.
    mark = len(bus.trace)
    assert isinstance(await next_item(stream), Heartbeat)
    tail = bus.trace[mark:]
    assert "receive" in tail
    assert tail.index("receive") < tail.index("heartbeat"), tail

    done = await log.commit_and_publish(EventType.JOB_SUCCEEDED, {"output": "a"})
    assert await next_item(stream) == done
    await assert_ended(stream, bus)


async def test_lost_terminal_event_ends_the_stream_at_heartbeat_time(
    bus: FakeBus, log: FakeLog
) -> None:
    start(log)
    stream = follow(bus, log, after=0, heartbeat_seconds=TINY_HEARTBEAT)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)

    done = log.append(EventType.JOB_SUCCEEDED, {"output": ""})
    item = await pending
    while isinstance(item, Heartbeat):
        item = await next_item(stream)
    assert item == done
    await assert_ended(stream, bus)


async def test_overflowed_subscription_resyncs_from_the_log() -> None:
    bus = FakeBus(buffer_size=2)
    log = FakeLog(bus)
    start(log)
    stream = follow(bus, log, after=0)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)
    await log.commit_and_publish(EventType.OUTPUT_DELTA, {"text": "a"})
    assert seqs([await pending]) == [3]

    # The consumer is slow: five messages arrive while it is busy; the buffer keeps two.
    loads_before = len(log.loads)
    for _ in range(5):
        await log.commit_and_publish(EventType.OUTPUT_DELTA, {"text": "a"})

    assert seqs(await take(stream, 5)) == [4, 5, 6, 7, 8]
    assert log.loads[loads_before] == 3, "the dropped messages were read from the log"
    await log.commit_and_publish(EventType.JOB_SUCCEEDED, {"output": "aaaaaa"})
    assert seqs([await next_item(stream)]) == [9]
    await assert_ended(stream, bus)


async def test_lost_flag_resyncs_even_when_the_next_message_is_in_order(
    bus: FakeBus, log: FakeLog
) -> None:
    start(log)
    stream = follow(bus, log, after=0)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)

    # Seq 3 arrives; seq 4 was committed but the backend failed before delivering it and
    # nothing else is ever published. Only the lost flag can bring 4 without a heartbeat.
    three = log.append(EventType.OUTPUT_DELTA, {"text": "a"})
    four = log.append(EventType.OUTPUT_DELTA, {"text": "b"})
    bus.push(CHANNEL, event_message(three, 10))
    bus.subscribers[CHANNEL][0].mark_lost()

    assert [await pending, await next_item(stream)] == [three, four]
    assert log.heartbeats == 0


# -- idle and end --------------------------------------------------------------------------


async def test_heartbeat_when_idle(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    stream = follow(bus, log, after=0, heartbeat_seconds=TINY_HEARTBEAT)
    assert seqs(await take(stream, 2)) == [1, 2]

    first = await next_item(stream)
    second = await next_item(stream)
    assert isinstance(first, Heartbeat)
    assert isinstance(second, Heartbeat)
    assert first.job_id == JOB
    assert (first.elapsed_ms, second.elapsed_ms) == (1, 2)
    assert log.heartbeats == 2

    done = await log.commit_and_publish(EventType.JOB_SUCCEEDED, {"output": ""})
    assert await next_item(stream) == done
    await assert_ended(stream, bus)


async def test_no_heartbeat_needed_for_replay(bus: FakeBus, log: FakeLog) -> None:
    start(log, running=3)
    log.append(EventType.JOB_SUCCEEDED, {"output": "xxx"})
    stream = follow(bus, log, after=0, heartbeat_seconds=0.0)
    items = [item async for item in stream]
    assert items == log.events
    assert log.heartbeats == 0


@pytest.mark.parametrize(
    "terminal", [EventType.JOB_SUCCEEDED, EventType.JOB_FAILED, EventType.JOB_CANCELLED]
)
async def test_stream_ends_right_after_terminal_event(
    bus: FakeBus, log: FakeLog, terminal: EventType
) -> None:
    start(log)
    stream = follow(bus, log, after=0)
    assert seqs(await take(stream, 2)) == [1, 2]
    pending = await blocked_on_bus(stream, bus)

    done = await log.commit_and_publish(terminal, {})
    # Anything after the terminal event (there should be none) is never sent.
    bogus = log.append(EventType.OUTPUT_DELTA, {"text": "late"})
    bus.push(CHANNEL, event_message(bogus, 10))

    assert await pending == done
    await assert_ended(stream, bus)


async def test_closing_the_stream_unsubscribes(bus: FakeBus, log: FakeLog) -> None:
    start(log)
    stream = follow(bus, log, after=0)
    await take(stream, 2)
    assert bus.subscribed()
    await stream.aclose()
    assert not bus.subscribed()


# -- BoundedSubscription -------------------------------------------------------------------


async def test_bounded_subscription_in_order() -> None:
    sub = BoundedSubscription(3)
    for seq in (1, 2):
        sub.put({"seq": seq})
    assert await sub.receive(None) == {"seq": 1}
    assert await sub.receive(0) == {"seq": 2}
    assert not sub.take_lost()


async def test_bounded_subscription_overflow_drops_oldest_and_reports_lost_once() -> None:
    sub = BoundedSubscription(3)
    for seq in range(1, 6):
        sub.put({"seq": seq})

    assert sub.take_lost() is True
    assert sub.take_lost() is False
    assert [await sub.receive(0) for _ in range(3)] == [{"seq": 3}, {"seq": 4}, {"seq": 5}]
    assert not sub.take_lost()


async def test_bounded_subscription_receive_times_out_with_none() -> None:
    sub = BoundedSubscription(1)
    assert await sub.receive(0) is None
    assert await sub.receive(TINY_HEARTBEAT) is None
    assert not sub.take_lost()


async def test_bounded_subscription_wakes_a_waiting_receiver() -> None:
    sub = BoundedSubscription(1)
    waiting = asyncio.ensure_future(sub.receive(GUARD_SECONDS))
    await asyncio.sleep(0)
    assert not waiting.done()
    sub.put({"seq": 1})
    assert await waiting == {"seq": 1}


async def test_mark_lost_is_taken_once() -> None:
    sub = BoundedSubscription(1)
    sub.mark_lost()
    assert sub.take_lost() is True
    assert sub.take_lost() is False


# -- messages ------------------------------------------------------------------------------


def test_event_message_inline_or_reference() -> None:
    event = StoredEvent(JOB, 7, EventType.PROGRESS, {"phase": "reading"}, T0)
    inline = event_message(event, MAX_INLINE_BYTES)
    assert inline == {
        "seq": 7,
        "type": "Progress",
        "payload": {"phase": "reading"},
        "at": T0.isoformat(),
    }
    assert decode_message(JOB, inline) == event
    reference = event_message(event, MAX_INLINE_BYTES + 1)
    assert reference == {"seq": 7}
    assert decode_message(JOB, reference) is None
