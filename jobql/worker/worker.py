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
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from jobql.events.bus import EventBus
from jobql.events.channels import CONTROL, WAKEUP
from jobql.events.publisher import EventPublisher
from jobql.events.types import EventType
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics
from jobql.outages import is_outage
from jobql.providers.registry import ProviderRegistry
from jobql.repositories.store import JobStore
from jobql.services.retention import PruneCounts, RetentionPolicy, prune_pass
from jobql.settings import Settings
from jobql.states import Usage
from jobql.tasks import TaskRegistry
from jobql.worker.load import LoopLag
from jobql.worker.pump import StopReason
from jobql.worker.retry import Backoff, OutageLog
from jobql.worker.runner import JobRunner
from jobql.worker.writer import EventWriter

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 600.0
OVERLOAD_RECHECK_SECONDS = 0.05
# How long a loop waits at most between two tries while the database or bus is down.
OUTAGE_RETRY_CAP_SECONDS = 2.0
# How often a worker looks for expired leases (a cheap query on the running jobs).
RESCUE_EVERY_SECONDS = 1.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        store: JobStore,
        bus: EventBus,
        tasks: TaskRegistry,
        providers: ProviderRegistry,
        metrics: Metrics | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = EventWriter(store)
        self.lag = LoopLag()
        self.bus = bus
        self.publisher = EventPublisher(bus)
        self.tasks = tasks
        self.providers = providers
        self.metrics = metrics or Metrics()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.retention = RetentionPolicy.from_settings(settings)
        # A runner stops retrying an unreachable database this long before its lease runs
        # out, leaving time to hand the job back before another worker rescues it.
        self.lease_margin = min(settings.lease_renew_seconds, settings.lease_seconds / 4)
        self.runners: dict[str, JobRunner] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._renew_now = asyncio.Event()
        self._claim_lock = asyncio.Lock()  # held from a claim until its jobs have started
        # A claim raised on an outage: it may have committed, taking jobs nothing runs.
        self._claim_uncertain = False
        self._stopping = False
        self._claiming: list[asyncio.Task[None]] = []
        self._keeping: list[asyncio.Task[None]] = []
        self.database_outage = OutageLog("the database", log)
        self.bus_outage = OutageLog("the event bus", log)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.writer.start()
        self.lag.start()
        # Claiming stops first on shutdown; what keeps running jobs going (their leases,
        # their cancels) stops only after the last of them is finished or handed back.
        self._claiming = [
            self._supervise(lambda: self._listen(WAKEUP), "jobql-worker-wakeup"),
            self._supervise(self._claim_loop, "jobql-worker-claim"),
        ]
        if self.settings.prune_every_seconds > 0:
            self._claiming.append(self._supervise(self._prune_loop, "jobql-worker-prune"))
        self._keeping = [
            self._supervise(lambda: self._listen(CONTROL), "jobql-worker-control"),
            self._supervise(self._lease_loop, "jobql-worker-leases"),
        ]

    @staticmethod
    def _supervise(loop: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
        """Run a loop that should only end when cancelled; should it fail (a bug: each
        loop handles outages itself), log it and start it again."""

        async def supervised() -> None:
            while True:
                try:
                    await loop()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s failed; restarting it", name)
                    await asyncio.sleep(1.0)

        return asyncio.create_task(supervised(), name=name)

    async def stop(self) -> None:
        """Stop claiming; give running jobs the grace period (their leases renewed and
        their cancels heard meanwhile), then hand the rest back."""
        self._stopping = True
        # A claim in flight is let finish, so the jobs it takes start and get the grace
        # too (cancelled, it could commit and leave them to be rescued).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(self.settings.shutdown_grace_seconds, 5.0)):
                await self._claim_lock.acquire()
        await self._cancel(self._claiming)
        if self._claim_lock.locked():
            self._claim_lock.release()
        if self._running:
            _, pending = await asyncio.wait(
                self._running, timeout=self.settings.shutdown_grace_seconds
            )
            for runner in list(self.runners.values()):
                runner.stop(StopReason.SHUTDOWN)
            if pending:
                await asyncio.wait(pending)
        await self._cancel(self._keeping)
        await self.writer.aclose()
        await self.lag.aclose()

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()

    @property
    def active_jobs(self) -> int:
        return len(self.runners)

    # -- claiming ------------------------------------------------------------------------

    async def _listen(self, channel: str) -> None:
        backoff = Backoff(first=0.2, cap=OUTAGE_RETRY_CAP_SECONDS)
        while True:
            try:
                async with self.bus.subscribe(channel) as subscription:
                    self.bus_outage.recovered()
                    backoff.reset()
                    while True:
                        message = await subscription.receive(None)
                        if message is None:
                            if subscription.take_lost():
                                self._resync(channel)
                            continue
                        if channel == WAKEUP:
                            self._wakeup.set()
                        elif (job_id := message.get("cancel")) and job_id in self.runners:
                            self.runners[job_id].stop(StopReason.CANCELLED)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.bus_outage.failed(f"listening to {channel}", exc)
                # Whatever was published meanwhile is lost.
                self._resync(channel)
                await asyncio.sleep(backoff.delay())

    def _resync(self, channel: str) -> None:
        """Messages on ``channel`` may have been lost: look in the database instead. A lost
        doorbell means queued jobs: claim now. A lost cancel: renew the leases now, which
        answers the cancel requests of the jobs held here."""
        if channel == WAKEUP:
            self._wakeup.set()
        else:
            self._renew_now.set()

    async def _claim_loop(self) -> None:
        poll = self.settings.worker_poll_seconds
        failures = Backoff(first=0.1, cap=min(poll, OUTAGE_RETRY_CAP_SECONDS))
        while True:
            # Clear the signals before claiming: a doorbell or a freed slot that arrives
            # while the claim runs must wake the next wait, not be lost until the next poll.
            self._wakeup.clear()
            self._slot_free.clear()
            if self._claim_uncertain:
                try:
                    async with self._claim_lock:
                        await self._adopt()
                except Exception as exc:
                    self.database_outage.failed("looking for jobs claimed here", exc)
                    await asyncio.sleep(failures.delay())
                    continue
            free = self.settings.worker_concurrency - len(self.runners)
            overloaded = self.overloaded()
            if free > 0 and not overloaded:
                limit = min(free, self.settings.worker_claim_batch)
                claimed: list[Job] = []
                claimed_at = time.monotonic()
                try:
                    async with self._claim_lock:
                        claimed = await self._claim(limit)
                        for job in claimed:
                            self._start(job, claimed_at + self.settings.lease_seconds)
                except Exception as exc:
                    self._claim_uncertain = self._claim_uncertain or is_outage(exc)
                    self.database_outage.failed("claiming jobs", exc)
                    # Try again after a backoff; a doorbell does not hurry it.
                    await asyncio.sleep(failures.delay())
                    continue
                self.database_outage.recovered()
                failures.reset()
                if len(claimed) == limit:
                    continue  # a full batch: the queue may hold more
            # Claim again when a slot frees up or a submit rings the doorbell; the poll is
            # the safety net for lost doorbells. An overloaded process looks again soon.
            await self._wait_for_any(
                (self._slot_free, self._wakeup), OVERLOAD_RECHECK_SECONDS if overloaded else poll
            )

    def overloaded(self) -> bool:
        """Streams wait on I/O, so a process runs many jobs at once (worker_concurrency);
        what bounds it is what the process can serve. While its event loop runs late or
        its event writer has a backlog, it claims nothing more: the queue waits (or other
        processes claim) instead of every running stream slowing down."""
        return (
            self.lag.seconds > self.settings.worker_max_loop_lag_ms / 1000
            or self.writer.backlog > self.settings.worker_max_write_backlog
        )

    async def _claim(self, limit: int) -> list[Job]:
        """Claim jobs (their JobStarted{attempt} is written in the same statement)."""
        claimed = await self.store.claim(self.worker_id, limit, self.lease)
        for item in claimed:
            await self.publisher.publish(item.started)
        return [item.job for item in claimed]

    @staticmethod
    async def _wait_for_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _adopt(self) -> None:
        """Start the jobs that a claim whose answer was lost took: they are held here with
        their JobStarted written, and nothing runs them (else they would wait for their
        lease to run out and be rescued as another attempt). A held job with events after
        its JobStarted was released by its runner; its lease takes its course."""
        for job in await self.store.held(self.worker_id):
            if job.id in self.runners or job.lease_expires_at is None:
                continue
            last = await self.store.events_after(job.id, job.last_seq - 1, limit=1)
            if not last or last[0].type is not EventType.JOB_STARTED:
                continue
            log.info("running a job whose claim answer was lost", extra={"job_id": job.id})
            remaining = (job.lease_expires_at - utcnow()).total_seconds()
            self._start(job, time.monotonic() + remaining)
        self._claim_uncertain = False

    def _start(self, job: Job, lease_expires: float) -> None:
        """Run a claimed job; ``lease_expires`` is when its lease runs out, on the
        monotonic clock."""
        runner = JobRunner(
            job,
            self.tasks.get(job.api_version, job.task),
            worker_id=self.worker_id,
            store=self.store,
            writer=self.writer,
            publisher=self.publisher,
            providers=self.providers,
            coalesce_seconds=self.settings.coalesce_ms / 1000,
            metrics=self.metrics,
            lease_expires=lease_expires,
            lease_margin=self.lease_margin,
            outage=self.database_outage,
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
            # JobRunner.run lets nothing escape; should that ever break, say so here.
            if not t.cancelled() and (error := t.exception()) is not None:
                log.error("job runner raised", exc_info=error, extra={"job_id": job.id})

        task.add_done_callback(done)

    # -- leases --------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Renew this worker's leases every lease_renew_seconds (at once when a cancel may
        have been missed, sooner after a failure: the leases run out meanwhile), and look
        for other workers' expired leases every second, so that a vanished worker's jobs
        are rescued about when their lease runs out, not up to a renewal interval later."""
        renew = self.settings.lease_renew_seconds
        tick = min(renew, RESCUE_EVERY_SECONDS)
        failures = Backoff(first=0.1, cap=min(renew, OUTAGE_RETRY_CAP_SECONDS))
        next_renew = time.monotonic() + renew
        next_purge = 0.0
        wait = tick
        while True:
            await self._wait_for_any((self._renew_now,), wait)
            doing = "renewing leases"
            try:
                if self._renew_now.is_set() or time.monotonic() >= next_renew:
                    self._renew_now.clear()  # a request from here on asks for another round
                    next_renew = time.monotonic() + renew
                    await self.renew_leases()
                if not self._stopping:
                    doing = "rescuing expired leases"
                    await self.rescue_expired()
                    if (now := time.monotonic()) >= next_purge:
                        next_purge = now + PURGE_EVERY_SECONDS
                        await self.purge_idempotency_keys()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.database_outage.failed(doing, exc)
                if doing == "renewing leases":
                    next_renew = 0.0  # again after the backoff
                wait = failures.delay()
                continue
            self.database_outage.recovered()
            failures.reset()
            wait = max(0.0, min(tick, next_renew - time.monotonic()))

    async def purge_idempotency_keys(self) -> None:
        """Forget idempotency keys older than the window (submit also checks lazily)."""
        cutoff = utcnow() - timedelta(seconds=self.settings.idempotency_window_seconds)
        await self.store.purge_idempotency_keys(cutoff)

    # -- retention -----------------------------------------------------------------------

    async def _prune_loop(self) -> None:
        """Every prune_every_seconds, compact the logs and delete the finished jobs past
        their windows (bounded work per pass; other workers' passes take other jobs)."""
        every = self.settings.prune_every_seconds
        failures = Backoff(first=0.5, cap=max(every, OUTAGE_RETRY_CAP_SECONDS))
        wait = every
        while True:
            await asyncio.sleep(wait)
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.database_outage.failed("pruning finished jobs", exc)
                wait = failures.delay()
                continue
            failures.reset()
            wait = every

    async def prune(self, now: datetime | None = None) -> PruneCounts:
        """One prune pass as of ``now`` (default: the current time)."""
        counts = await prune_pass(
            self.store,
            self.retention,
            now,
            batch_size=self.settings.prune_batch_size,
            max_batches=self.settings.prune_max_batches,
            pause_seconds=self.settings.prune_pause_seconds,
        )
        if counts.jobs_deleted or counts.events_deleted:
            await self.store.reclaim_space()
        return counts

    async def renew_leases(self) -> None:
        held = list(self.runners)
        if not held:
            return
        asked_at = time.monotonic()  # the new expiry is counted from no earlier than this
        renewed = await self.store.renew_leases(self.worker_id, held, self.lease)
        for job_id in held:
            runner = self.runners.get(job_id)
            if runner is None:
                continue
            if job_id not in renewed:
                runner.stop(StopReason.LEASE_LOST)
                continue
            runner.lease_renewed(asked_at + self.settings.lease_seconds)
            if renewed[job_id] is not None:
                # A cancel whose signal this worker missed.
                runner.stop(StopReason.CANCELLED)

    async def rescue_expired(self) -> None:
        """Requeue jobs whose worker vanished, or end them after their last attempt."""
        requeued = False
        for job in await self.store.expired_leases():
            rescued = await self.store.rescue(job, utcnow())
            if rescued.event is not None and rescued.status is not None:
                # The usage is what the lost worker last recorded, as the rescue wrote it.
                usage = Usage(job.input_tokens, job.output_tokens, job.cost_micros)
                self.metrics.job_finished(
                    job.task, rescued.status.value, model=job.model_name, usage=usage
                )
                await self.publisher.publish(rescued.event)
            if rescued.requeued:
                log.info("rescued job with expired lease", extra={"job_id": job.id})
                requeued = True
        if requeued:
            # Every worker, this one included, claims the requeued jobs now.
            self._wakeup.set()
            await self.publisher.wake_workers()
