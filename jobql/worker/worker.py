"""The worker: claims jobs from the jobs table, runs them, keeps their leases, rescues others'.

It runs inside the API process (embedded default) or alone (`jobql worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.errors import ErrorCode, JobError
from jobql.events.bus import EventBus
from jobql.events.channels import CONTROL, WAKEUP
from jobql.events.payloads import terminal_payload
from jobql.events.publisher import EventPublisher
from jobql.events.types import EventType
from jobql.models import Job, JobStatus
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics
from jobql.providers.registry import ProviderRegistry
from jobql.repositories.jobs import JobRepository
from jobql.repositories.usage import UsageRepository
from jobql.settings import Settings
from jobql.tasks import TaskRegistry
from jobql.worker.pump import StopReason
from jobql.worker.runner import JobRunner

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 600.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        tasks: TaskRegistry,
        providers: ProviderRegistry,
        metrics: Metrics | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.bus = bus
        self.publisher = EventPublisher(bus)
        self.tasks = tasks
        self.providers = providers
        self.metrics = metrics or Metrics()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.runners: dict[str, JobRunner] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._background: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._background = [
            asyncio.create_task(self._listen(WAKEUP), name="jobql-worker-wakeup"),
            asyncio.create_task(self._listen(CONTROL), name="jobql-worker-control"),
            asyncio.create_task(self._claim_loop(), name="jobql-worker-claim"),
            asyncio.create_task(self._lease_loop(), name="jobql-worker-leases"),
        ]

    async def stop(self) -> None:
        """Stop claiming; give running jobs the grace period, then hand them back."""
        self._stopping = True
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._running:
            _, pending = await asyncio.wait(
                self._running, timeout=self.settings.shutdown_grace_seconds
            )
            for runner in list(self.runners.values()):
                runner.stop(StopReason.SHUTDOWN)
            if pending:
                await asyncio.wait(pending)

    @property
    def active_jobs(self) -> int:
        return len(self.runners)

    # -- claiming ------------------------------------------------------------------------

    async def _listen(self, channel: str) -> None:
        while True:
            try:
                async with self.bus.subscribe(channel) as subscription:
                    while True:
                        message = await subscription.receive(None)
                        if message is None:
                            # After a gap in the bus, a doorbell may have been lost.
                            if subscription.take_lost() and channel == WAKEUP:
                                self._wakeup.set()
                            continue
                        if channel == WAKEUP:
                            self._wakeup.set()
                        elif (job_id := message.get("cancel")) and job_id in self.runners:
                            self.runners[job_id].stop(StopReason.CANCELLED)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("worker lost its %s subscription; retrying", channel, exc_info=True)
                await asyncio.sleep(1.0)

    async def _claim_loop(self) -> None:
        poll = self.settings.worker_poll_seconds
        while True:
            # Clear the signals before claiming: a doorbell or a freed slot that arrives
            # while the claim runs must wake the next wait, not be lost until the next poll.
            self._wakeup.clear()
            self._slot_free.clear()
            free = self.settings.worker_concurrency - len(self.runners)
            claimed: list[Job] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except Exception:
                    log.exception("claim failed")
                for job in claimed:
                    self._start(job)
            # Claim again when a slot frees up (the queue may hold more than we took) or a
            # submit rings the doorbell; the poll is the safety net for lost doorbells.
            await self._wait_for_any((self._slot_free, self._wakeup), poll)

    async def _claim(self, limit: int) -> list[Job]:
        """Claim jobs and write their JobStarted{attempt} in the same transaction."""
        started = []
        async with self.sessions() as session, session.begin():
            repo = JobRepository(session)
            claimed = await repo.claim(self.worker_id, limit, self.lease)
            for job in claimed:
                event = await repo.append_event(
                    job.id, EventType.JOB_STARTED, {"attempt": job.attempts}
                )
                if event is not None:
                    started.append(event)
        for event in started:
            await self.publisher.publish(event)
        return claimed

    @staticmethod
    async def _wait_for_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _start(self, job: Job) -> None:
        runner = JobRunner(
            job,
            self.tasks.get(job.api_version, job.task),
            worker_id=self.worker_id,
            sessions=self.sessions,
            publisher=self.publisher,
            providers=self.providers,
            coalesce_seconds=self.settings.coalesce_ms / 1000,
            metrics=self.metrics,
        )
        if job.cancel_requested_at is not None:
            runner.stop(StopReason.CANCELLED)
        self.runners[job.id] = runner
        task = asyncio.create_task(runner.run(), name=f"jobql-job-{job.id}")
        self._running.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._running.discard(t)
            self.runners.pop(job.id, None)
            self._slot_free.set()

        task.add_done_callback(done)

    # -- leases --------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        next_purge = 0.0
        while True:
            await asyncio.sleep(self.settings.lease_renew_seconds)
            try:
                await self.renew_leases()
                await self.rescue_expired()
                if (now := time.monotonic()) >= next_purge:
                    next_purge = now + PURGE_EVERY_SECONDS
                    await self.purge_idempotency_keys()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease maintenance failed")

    async def purge_idempotency_keys(self) -> None:
        """Forget idempotency keys older than the window (submit also checks lazily)."""
        cutoff = utcnow() - timedelta(seconds=self.settings.idempotency_window_seconds)
        async with self.sessions() as session, session.begin():
            await JobRepository(session).purge_idempotency_keys(cutoff)

    async def renew_leases(self) -> None:
        held = list(self.runners)
        async with self.sessions() as session, session.begin():
            renewed = await JobRepository(session).renew_leases(self.worker_id, held, self.lease)
        for job_id in held:
            runner = self.runners.get(job_id)
            if runner is None:
                continue
            if job_id not in renewed:
                runner.stop(StopReason.LEASE_LOST)
            elif renewed[job_id] is not None:
                # A cancel whose signal this worker missed.
                runner.stop(StopReason.CANCELLED)

    async def rescue_expired(self) -> None:
        """Requeue jobs whose worker vanished, or fail them after their last attempt."""
        async with self.sessions() as session:
            expired = await JobRepository(session).expired_leases()
        for job in expired:
            guard = [Job.lease_owner == job.lease_owner, Job.lease_expires_at < utcnow()]
            async with self.sessions() as session, session.begin():
                repo = JobRepository(session)
                if job.cancel_requested_at is None and job.attempts < job.max_attempts:
                    requeued = await repo.requeue(job.id, where=guard)
                    event = None
                else:
                    cancelled = job.cancel_requested_at is not None
                    event = await repo.append_event(
                        job.id,
                        EventType.JOB_CANCELLED if cancelled else EventType.JOB_FAILED,
                        self._lost_payload(job, cancelled),
                        where=[Job.status == JobStatus.RUNNING.value, *guard],
                        values={
                            "status": (
                                JobStatus.CANCELLED if cancelled else JobStatus.FAILED
                            ).value,
                            "finished_at": utcnow(),
                            "lease_owner": None,
                            "lease_expires_at": None,
                            "error": None
                            if cancelled
                            else JobError(ErrorCode.WORKER_LOST).to_json(),
                        },
                    )
                    requeued = False
                    if event is not None:
                        await UsageRepository(session).add(
                            job.principal_id,
                            utcnow().date(),
                            input_tokens=job.input_tokens,
                            output_tokens=job.output_tokens,
                            cost_micros=job.cost_micros,
                        )
            if event is not None:
                self.metrics.job_finished(job.task, "CANCELLED" if cancelled else "FAILED")
                await self.publisher.publish(event)
            if requeued:
                log.info("rescued job with expired lease", extra={"job_id": job.id})
                self._wakeup.set()

    @staticmethod
    def _lost_payload(job: Job, cancelled: bool) -> dict[str, Any]:
        payload = terminal_payload(
            job,
            input_tokens=job.input_tokens,
            output_tokens=job.output_tokens,
            cost_micros=job.cost_micros,
            finished_at=utcnow(),
        )
        if cancelled:
            payload["reason"] = job.cancel_reason
        else:
            payload["error"] = JobError(ErrorCode.WORKER_LOST).to_json()
        return payload
