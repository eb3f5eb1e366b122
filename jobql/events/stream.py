"""Replay a job's log after a cursor, then follow it live, exactly once and in order.

The bus only says "something new, maybe this"; whenever a message is out of order, only a
reference, or may have been lost, the log in the database fills the gap. An idle stream
checks the log too before it sends a heartbeat, so even a dead bus only delays events.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from jobql.events.bus import EventBus
from jobql.events.channels import job_channel
from jobql.events.types import EventType, Heartbeat, StoredEvent, StreamItem

LoadAfter = Callable[[int], Awaitable[list[StoredEvent]]]
LoadHeartbeat = Callable[[], Awaitable[Heartbeat]]


def decode_message(job_id: str, message: dict[str, Any]) -> StoredEvent | None:
    """A full event carried on the bus, or None when the message is only a reference."""
    if "type" not in message:
        return None
    return StoredEvent(
        job_id=job_id,
        seq=int(message["seq"]),
        type=EventType(message["type"]),
        payload=message["payload"],
        at=datetime.fromisoformat(message["at"]),
    )


async def follow_job(
    bus: EventBus,
    job_id: str,
    *,
    after: int,
    load_after: LoadAfter,
    load_heartbeat: LoadHeartbeat,
    heartbeat_seconds: float,
) -> AsyncGenerator[StreamItem, None]:
    last = after
    # Subscribe before reading the log, so nothing published in between is missed.
    async with bus.subscribe(job_channel(job_id)) as subscription:

        async def catch_up() -> AsyncIterator[StoredEvent]:
            nonlocal last
            while True:
                events = await load_after(last)
                for event in events:
                    if event.seq != last + 1:
                        return  # a writer has not committed the gap yet; the bus will tell
                    last = event.seq
                    yield event
                if not events:
                    return

        async for event in catch_up():
            yield event
            if event.is_terminal:
                return

        idle_since = time.monotonic()
        while True:
            timeout = max(0.0, idle_since + heartbeat_seconds - time.monotonic())
            message = await subscription.receive(timeout)
            lost = subscription.take_lost()
            if message is None or lost:
                sent = False
                async for event in catch_up():
                    sent = True
                    yield event
                    if event.is_terminal:
                        return
                if message is None and not sent:
                    yield await load_heartbeat()
                idle_since = time.monotonic()
                if message is None:
                    continue
            seq = int(message["seq"])
            if seq <= last:
                continue
            inline = decode_message(job_id, message) if seq == last + 1 else None
            if inline is not None:
                last = seq
                yield inline
                if inline.is_terminal:
                    return
            else:
                async for event in catch_up():
                    yield event
                    if event.is_terminal:
                        return
            idle_since = time.monotonic()
