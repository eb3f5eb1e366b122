"""Publish stored events (and doorbells) on the bus after they are committed."""

from __future__ import annotations

import json

from jobql.events.bus import EventBus
from jobql.events.channels import CONTROL, WAKEUP, event_message, job_channel
from jobql.events.types import StoredEvent


class EventPublisher:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def publish(self, event: StoredEvent) -> None:
        size = len(json.dumps(event.payload, separators=(",", ":")))
        await self.bus.publish(job_channel(event.job_id), event_message(event, size))

    async def wake_workers(self) -> None:
        await self.bus.publish(WAKEUP, {})

    async def request_cancel(self, job_id: str) -> None:
        await self.bus.publish(CONTROL, {"cancel": job_id})
