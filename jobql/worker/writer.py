"""One event writer per process: the events of every running job, written together.

A write waits for no timer. When the writer is idle, the first write goes out at once (a
lone stream's first delta is not delayed); while a batch is being written, the writes that
arrive queue up and go out together as the next batch. So the batch grows with the load,
and so does the time each write waits: about one batch's write time, never more than two.
Each caller holds at most one write in flight per job, so a job's events stay in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from jobql.events.types import StoredEvent
from jobql.repositories.store import EventWrite, JobStore
from jobql.worker.background import BackgroundLoop

# Rows per transaction at most; SQLite caps the parameters of one statement.
MAX_BATCH = 500


class EventWriter(BackgroundLoop):
    task_name = "jobql-event-writer"

    def __init__(self, store: JobStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[EventWrite, asyncio.Future[list[StoredEvent] | None]]] = []
        self._wake = asyncio.Event()
        self.batches = 0  # written so far, for tests and metrics

    @property
    def backlog(self) -> int:
        """Writes waiting for the next batch."""
        return len(self._pending)

    async def aclose(self) -> None:
        await super().aclose()
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("event writer closed"))
        self._pending.clear()

    def _ended(self, task: asyncio.Task[None]) -> None:
        super()._ended(task)
        # Writes left waiting would wait forever.
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("event writer stopped"))
        self._pending.clear()

    async def write(self, write: EventWrite) -> list[StoredEvent] | None:
        """The events as stored (committed), or None when the job is no longer the
        writer's (lease lost, or a cancel won the race)."""
        if not self.running:
            raise RuntimeError("event writer not started")
        if self.failed:
            raise RuntimeError("event writer stopped")
        future: asyncio.Future[list[StoredEvent] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append((write, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._take()
                await self._flush(batch)

    def _take(self) -> list[tuple[EventWrite, asyncio.Future[list[StoredEvent] | None]]]:
        """The next batch: at most one write per job (a job's next write waits for its
        previous one anyway) and at most ``max_batch`` events."""
        batch: list[tuple[EventWrite, asyncio.Future[list[StoredEvent] | None]]] = []
        rest: list[tuple[EventWrite, asyncio.Future[list[StoredEvent] | None]]] = []
        jobs: set[str] = set()
        events = 0
        for item in self._pending:
            write = item[0]
            if write.job_id in jobs or (batch and events + len(write.events) > self.max_batch):
                rest.append(item)
                continue
            jobs.add(write.job_id)
            events += len(write.events)
            batch.append(item)
        self._pending = rest
        return batch

    async def _flush(
        self, batch: Sequence[tuple[EventWrite, asyncio.Future[list[StoredEvent] | None]]]
    ) -> None:
        live = [(w, f) for w, f in batch if not f.cancelled()]
        if not live:
            return
        try:
            results = await self.store.append_events([w for w, _ in live])
            answers = list(zip(live, results, strict=True))
        except asyncio.CancelledError:
            for _, future in live:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:
            # Each writer decides: an outage is retried (the write names the seq it
            # follows, so a batch whose commit landed is not stored twice), a bug is not.
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        for (_, future), result in answers:
            if not future.done():
                future.set_result(result)
