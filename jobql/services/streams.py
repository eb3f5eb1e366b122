"""Follow a caller's job: stored events after a cursor, then live ones, then completion."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from jobql.errors import NotFound
from jobql.events.bus import EventBus
from jobql.events.stream import follow_job
from jobql.events.types import Heartbeat, StreamItem
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics
from jobql.repositories.store import JobStore
from jobql.services.auth import Caller


class StreamService:
    def __init__(
        self,
        *,
        store: JobStore,
        bus: EventBus,
        heartbeat_seconds: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.heartbeat_seconds = heartbeat_seconds
        self.metrics = metrics or Metrics()

    async def open(
        self, caller: Caller, job_id: str, after: int | None
    ) -> AsyncGenerator[StreamItem, None] | NotFound:
        job = await self.store.get_owned(caller.id, job_id, with_output=False)
        if job is None:
            return NotFound()
        # A cursor beyond the log (a client's bug) is treated as "everything so far".
        cursor = min(max(after or 0, 0), job.last_seq)
        if job.is_terminal and cursor >= job.last_seq:
            return _empty()
        return self._tracked(
            follow_job(
                self.bus,
                job_id,
                after=cursor,
                load_after=lambda seq: self.store.events_after(job_id, seq),
                load_heartbeat=lambda: self._heartbeat(job_id),
                heartbeat_seconds=self.heartbeat_seconds,
            )
        )

    async def _tracked(
        self, stream: AsyncGenerator[StreamItem, None]
    ) -> AsyncGenerator[StreamItem, None]:
        with self.metrics.track_subscription():
            async with aclosing(stream):
                async for item in stream:
                    yield item

    async def _heartbeat(self, job_id: str) -> Heartbeat:
        job = await self.store.get(job_id, with_output=False)
        now = utcnow()
        if job is None:  # pragma: no cover - jobs are never deleted while followed
            return Heartbeat(job_id, now, "UNKNOWN", None, 0, 0, 0)
        since = job.started_at or job.created_at
        return Heartbeat(
            job_id=job_id,
            at=now,
            status=job.status,
            phase=job.phase,
            elapsed_ms=int((now - since).total_seconds() * 1000),
            output_tokens=job.output_tokens,
            cost_micros=job.cost_micros,
        )


async def _empty() -> AsyncGenerator[StreamItem, None]:
    return
    yield  # pragma: no cover
