"""Follow a caller's job: stored events after a cursor, then live ones, then completion.

An outage (the log cannot be read, the bus cannot be subscribed) ends the stream with a
ServiceUnavailable that carries the seq of the last event delivered: the client subscribes
again with ``after`` set to it and loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from jobql.errors import STREAM_CUT_MESSAGE, NotFound, ServiceUnavailable
from jobql.events.bus import EventBus
from jobql.events.stream import follow_job
from jobql.events.types import Heartbeat, StoredEvent, StreamItem
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics, UnavailableOperation
from jobql.repositories.store import JobStore
from jobql.services.auth import Caller
from jobql.services.unavailable import ThrottledWarning, unavailable

log = logging.getLogger(__name__)

StreamAnswer = StreamItem | ServiceUnavailable


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
        self._warn = ThrottledWarning(
            log, "streams: cut by an outage; subscribers are told to resubscribe"
        )

    async def open(
        self, caller: Caller, job_id: str, after: int | None, *, api_version: str | None = None
    ) -> AsyncGenerator[StreamAnswer, None] | NotFound | ServiceUnavailable:
        """The job's stream; a ServiceUnavailable it yields is its last item. With
        ``api_version``, a job submitted through another version is NotFound."""
        try:
            job = await self.store.get_owned(caller.id, job_id, with_output=False)
        except Exception as exc:
            if (answer := self._unavailable(exc, max(after or 0, 0))) is None:
                raise
            return answer
        if job is None or (api_version is not None and job.api_version != api_version):
            return NotFound()
        # A cursor beyond the log (a client's bug) is treated as "everything so far".
        cursor = min(max(after or 0, 0), job.last_seq)
        if job.is_terminal and cursor >= job.last_seq:
            return _empty()
        if job.is_terminal:
            # A finished job's log changes only by compaction, which leaves a gap before
            # the terminal event: read it to the end rather than wait for what follows a gap.
            return self._tracked(self._replay(job_id, cursor), cursor)
        return self._tracked(
            follow_job(
                self.bus,
                job_id,
                after=cursor,
                load_after=lambda seq: self.store.events_after(job_id, seq),
                load_heartbeat=lambda: self._heartbeat(job_id),
                heartbeat_seconds=self.heartbeat_seconds,
            ),
            cursor,
        )

    async def _replay(self, job_id: str, after: int) -> AsyncGenerator[StreamItem, None]:
        """A finished job's stored events after ``after``, to its terminal event (the
        compacted form's remainder if its log was compacted meanwhile; nothing more if the
        job was deleted meanwhile)."""
        last = after
        while events := await self.store.events_after(job_id, last):
            for event in events:
                last = event.seq
                yield event
                if event.is_terminal:
                    return

    def _unavailable(self, exc: BaseException, last_seq: int) -> ServiceUnavailable | None:
        answer = unavailable(exc, last_seq=last_seq)
        if answer is None:
            return None
        self._warn(exc)
        self.metrics.service_unavailable(UnavailableOperation.STREAM)
        return ServiceUnavailable(answer.retry_after_seconds, last_seq, STREAM_CUT_MESSAGE)

    async def _tracked(
        self, stream: AsyncGenerator[StreamItem, None], cursor: int
    ) -> AsyncGenerator[StreamAnswer, None]:
        last = cursor
        with self.metrics.track_subscription():
            async with aclosing(stream):
                try:
                    async for item in stream:
                        if isinstance(item, StoredEvent):
                            last = item.seq
                        yield item
                except Exception as exc:
                    if (answer := self._unavailable(exc, last)) is None:
                        raise
                    yield answer

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


async def _empty() -> AsyncGenerator[StreamAnswer, None]:
    return
    yield  # pragma: no cover
