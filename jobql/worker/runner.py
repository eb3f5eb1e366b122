"""Run one claimed job: stream the provider, write events, finish with exactly one terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jsonschema import Draft202012Validator

from jobql.errors import ErrorCode, JobError, Violation
from jobql.events.publisher import EventPublisher
from jobql.events.types import EventType, StoredEvent
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.observability.logging import bind_job_id
from jobql.observability.metrics import Metrics
from jobql.outages import is_outage
from jobql.providers.base import (
    Progress,
    ProviderError,
    ProviderRequest,
    TextDelta,
    Usage,
    count_tokens,
)
from jobql.providers.registry import ProviderRegistry
from jobql.repositories.store import EventWrite, JobStore, NewEvent
from jobql.states import Finish, Guard, cancel, fail, succeed
from jobql.states import Usage as JobUsage
from jobql.tasks import TaskContract
from jobql.tasks.contracts import MICROS_PER_DOLLAR
from jobql.worker.pump import Ended, ProviderPump, PumpItem, Raised, Stopped, StopReason
from jobql.worker.retry import Backoff, OutageLog, describe
from jobql.worker.writer import EventWriter

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseAtRisk(Exception):
    """The store stayed unreachable until the job's lease was nearly out: the job goes back
    for another attempt instead of failing."""


class LeaseLost(Exception):
    """The job is no longer this worker's (its lease was taken over): stop, write nothing."""


@dataclass
class Progressed:
    """What the job has produced so far in this attempt."""

    output: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    phase: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.output)


def validate_output(task: TaskContract, text: str) -> tuple[dict[str, Any] | None, JobError | None]:
    """Parse and check structured output against the task's output schema."""
    if task.output_schema is None:
        return None, None
    try:
        value = json.loads(text)
    except ValueError:
        return None, JobError(
            ErrorCode.OUTPUT_SCHEMA_MISMATCH,
            violations=(Violation("output", "The output is not valid JSON."),),
        )
    errors = sorted(
        Draft202012Validator(task.output_schema).iter_errors(value), key=lambda e: list(e.path)
    )
    if errors:
        violations = tuple(
            Violation(".".join(["result", *map(str, e.path)]), e.message) for e in errors[:20]
        )
        return None, JobError(ErrorCode.OUTPUT_SCHEMA_MISMATCH, violations=violations)
    return value if isinstance(value, dict) else {"value": value}, None


class JobRunner:
    """Executes one job for the worker that holds its lease."""

    def __init__(
        self,
        job: Job,
        task: TaskContract | None,
        *,
        worker_id: str,
        store: JobStore,
        writer: EventWriter,
        publisher: EventPublisher,
        providers: ProviderRegistry,
        coalesce_seconds: float,
        metrics: Metrics,
        lease_expires: float,
        lease_margin: float,
        outage: OutageLog | None = None,
    ) -> None:
        self.job = job
        self.task = task
        self.worker_id = worker_id
        self.store = store
        self.writer = writer
        self.publisher = publisher
        self.providers = providers
        self.coalesce_seconds = coalesce_seconds
        self.metrics = metrics
        self.progress = Progressed()
        self.pump: ProviderPump | None = None
        self._pending_stop: StopReason | None = None
        # The lease, on this process's monotonic clock (the worker moves it on at each
        # renewal); the runner stops retrying an unreachable store ``lease_margin`` before
        # it runs out, so the job can still be handed back before another worker rescues it.
        self.lease_expires = lease_expires
        self.lease_margin = lease_margin
        self.outage = outage or OutageLog()
        self._lease_lost = False
        # The seq of the job's last stored event (the claim wrote its JobStarted): each
        # write names it, which makes a retried write idempotent.
        self.last_seq = job.last_seq

    # -- signals from the worker ---------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        if reason is StopReason.LEASE_LOST:
            self._lease_lost = True
        if self.pump is not None:
            self.pump.stop(reason)
        elif self._pending_stop is None:
            self._pending_stop = reason

    def lease_renewed(self, until: float) -> None:
        self.lease_expires = max(self.lease_expires, until)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the job to its end. Nothing escapes: an outage releases the job for another
        attempt, a bug fails it as INTERNAL."""
        with bind_job_id(self.job.id):
            try:
                await self._run()
            except LeaseLost:
                log.info("lease lost; stopping")
            except LeaseAtRisk as exc:
                await self._release(exc)
            except Exception as exc:
                if is_outage(exc):
                    await self._release(exc)
                    return
                log.exception("job failed unexpectedly")
                await self._fail_internal()

    async def _fail_internal(self) -> None:
        try:
            await self._finish_failed(JobError(ErrorCode.INTERNAL))
        except LeaseLost:
            pass
        except LeaseAtRisk as exc:
            await self._release(exc)
        except Exception:
            log.exception("could not record the job's failure; its lease will run out")

    async def _release(self, cause: BaseException) -> None:
        """Give the job back for another attempt, because the store could not be written
        before the lease was at risk. If it cannot be handed back either, its lease runs
        out and it is rescued as the next attempt."""
        try:
            handed_back = await self.store.hand_back(self.job.id, self.worker_id)
        except Exception as exc:
            log.warning(
                "released the job (%s); it could not be handed back (%s), so it is rescued"
                " for another attempt when its lease runs out",
                describe(cause),
                describe(exc),
            )
            return
        if handed_back:
            log.warning("handed the job back for another attempt (%s)", describe(cause))
            await self.publisher.wake_workers()

    def _lease_at_risk(self, wait: float) -> bool:
        return time.monotonic() + wait > self.lease_expires - self.lease_margin

    async def _durably(self, doing: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a store operation, retrying through outages with backoff for as long as
        the lease allows. The operation must be safe to repeat (its effect may have been
        committed by an attempt whose answer was lost)."""
        backoff = Backoff()
        while True:
            try:
                result = await operation()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.outage.failed(doing, exc)
                if self._lease_lost:
                    raise LeaseLost() from exc
                delay = backoff.delay()
                if self._lease_at_risk(delay):
                    raise LeaseAtRisk(f"the store stayed unreachable while {doing}") from exc
                await asyncio.sleep(delay)
                continue
            self.outage.recovered()
            return result

    async def _run(self) -> None:
        job = self.job  # claimed, with its JobStarted{attempt} written by the claim
        task = self.task
        provider = self.providers.get(job.provider)
        if task is None or provider is None:
            # The task or provider was removed from the configuration after the job was queued.
            await self._finish_failed(JobError(ErrorCode.INTERNAL))
            return
        if job.deadline_at is not None and job.deadline_at <= utcnow():
            await self._finish_failed(JobError(ErrorCode.DEADLINE_EXCEEDED))
            return

        prompt = task.render_prompt(job.input)
        self.progress.input_tokens = count_tokens(prompt)
        request = ProviderRequest(
            request_id=f"{job.id}:{job.attempts}",
            model=task.model.name,
            model_version=task.model.version,
            prompt=prompt,
            max_output_tokens=task.max_output_tokens,
            output_schema=task.output_schema,
            options=task.provider_options,
        )
        self.pump = pump = ProviderPump(provider.stream(request))
        if self._pending_stop is not None:
            pump.stop(self._pending_stop)
        deadline_timer = None
        if job.deadline_at is not None:
            delay = (job.deadline_at - utcnow()).total_seconds()
            deadline_timer = asyncio.get_running_loop().call_later(
                max(0.0, delay), pump.stop, StopReason.DEADLINE
            )
        try:
            outcome = await self._consume(pump)
        finally:
            if deadline_timer is not None:
                deadline_timer.cancel()
            await pump.aclose()
        await self._finish(outcome, pump)

    async def _consume(self, pump: ProviderPump) -> PumpItem:
        """Relay provider output as events until the stream ends, fails or is stopped."""
        last_flush: float | None = None
        while True:
            first = await pump.get()
            if isinstance(first, TextDelta) and last_flush is not None and self.coalesce_seconds:
                # Later deltas are coalesced: wait out the window, then take all that came.
                remaining = last_flush + self.coalesce_seconds - time.monotonic()
                if remaining > 0:
                    await asyncio.sleep(remaining)
            events: list[NewEvent] = []
            text: list[str] = []
            tokens = 0
            phase = None
            outcome: PumpItem | None = None
            for item in [first, *pump.get_ready()]:
                if isinstance(item, TextDelta):
                    text.append(item.text)
                    tokens += item.tokens
                    continue
                if text:
                    events.append(self._delta("".join(text), tokens))
                    text, tokens = [], 0
                if isinstance(item, Progress):
                    phase = self.progress.phase = item.phase
                    events.append(
                        NewEvent(EventType.PROGRESS, {"phase": item.phase, "message": item.message})
                    )
                elif isinstance(item, Usage):
                    self.progress.input_tokens = item.input_tokens
                    self.progress.output_tokens = item.output_tokens
                else:
                    outcome = item
                    break
            wrote_text = bool(text)
            if text:
                events.append(self._delta("".join(text), tokens))
            if events and not await self._write(events, phase):
                return Stopped(StopReason.LEASE_LOST)
            if wrote_text:
                last_flush = time.monotonic()
            # Checked before the end of the stream too: output that arrived in the same
            # batch as the end counts against the budget like any other.
            if (outcome is None or isinstance(outcome, Ended)) and self._over_budget():
                pump.stop(StopReason.BUDGET)
                return Stopped(StopReason.BUDGET)
            if outcome is not None:
                return outcome

    def _delta(self, text: str, tokens: int) -> NewEvent:
        if not self.progress.output and self.job.started_at is not None:
            ttft = (utcnow() - self.job.started_at).total_seconds()
            self.metrics.observe_time_to_first_token(self.job.task, ttft)
        self.progress.output.append(text)
        self.progress.output_tokens += tokens
        return NewEvent(EventType.OUTPUT_DELTA, {"text": text})

    def _usage(self) -> JobUsage:
        cost = 0
        if self.task is not None:
            cost = self.task.pricing.cost_micros(
                self.progress.input_tokens, self.progress.output_tokens
            )
        return JobUsage(self.progress.input_tokens, self.progress.output_tokens, cost)

    def _over_budget(self) -> bool:
        limit = self.job.max_cost_micros
        return limit is not None and self._usage().cost_micros > limit

    async def _write(self, events: list[NewEvent], phase: str | None) -> bool:
        """Append through the process's event writer, then publish what is now durable."""
        write = EventWrite(
            self.job.id,
            self.worker_id,
            tuple(events),
            self._usage(),
            phase,
            after_seq=self.last_seq,
        )
        stored = await self._durably("writing events", lambda: self.writer.write(write))
        if stored is None:
            log.info("lease lost; stopping")
            if self.pump is not None:
                self.pump.stop(StopReason.LEASE_LOST)
            return False
        self.last_seq = stored[-1].seq
        for event in stored:
            await self.publisher.publish(event)
        return True

    # -- terminal ------------------------------------------------------------------------

    async def _finish(self, outcome: PumpItem, pump: ProviderPump) -> None:
        # Output the provider produced before it was closed is kept and billed.
        for item in pump.get_ready():
            if isinstance(item, TextDelta):
                self.progress.output.append(item.text)
                self.progress.output_tokens += item.tokens
        if isinstance(outcome, Ended):
            result, error = (
                validate_output(self.task, self.progress.text) if self.task else (None, None)
            )
            if error is not None:
                await self._finish_failed(error)
            else:
                await self._terminal(
                    succeed(
                        self.job,
                        output=self.progress.text,
                        result=result,
                        usage=self._usage(),
                        at=utcnow(),
                    )
                )
        elif isinstance(outcome, Raised):
            if isinstance(outcome.error, ProviderError):
                self.metrics.provider_error(self.job.provider, outcome.error.code.value)
                await self._finish_failed(outcome.error.to_job_error())
            else:
                log.error("provider raised unexpectedly", exc_info=outcome.error)
                await self._finish_failed(JobError(ErrorCode.INTERNAL))
        elif isinstance(outcome, Stopped):
            await self._finish_stopped(outcome.reason)

    async def _finish_stopped(self, reason: StopReason) -> None:
        if reason is StopReason.CANCELLED:
            cancel_reason = await self._durably(
                "reading the cancel reason", lambda: self.store.cancel_reason(self.job.id)
            )
            await self._terminal(
                cancel(
                    self.job,
                    cancel_reason,
                    output=self.progress.text,
                    usage=self._usage(),
                    at=utcnow(),
                )
            )
        elif reason is StopReason.DEADLINE:
            await self._finish_failed(JobError(ErrorCode.DEADLINE_EXCEEDED))
        elif reason is StopReason.BUDGET:
            await self._finish_failed(JobError(ErrorCode.BUDGET_EXCEEDED))
        elif reason is StopReason.SHUTDOWN:
            handed_back = await self._durably(
                "handing the job back", lambda: self.store.hand_back(self.job.id, self.worker_id)
            )
            if handed_back:
                await self.publisher.wake_workers()  # another worker starts it at once
        # LEASE_LOST: the job is someone else's now; write nothing.

    async def _landed(self, finish: Finish) -> StoredEvent | None:
        """The terminal event of ``finish``, if it follows this runner's last event in
        the log (no other writer could have put an equal one there)."""
        following = await self.store.events_after(self.job.id, self.last_seq, limit=1)
        if following and (following[0].type, following[0].payload) == (
            finish.event_type,
            finish.payload,
        ):
            return following[0]
        return None

    async def _finish_failed(self, error: JobError) -> None:
        await self._terminal(
            fail(self.job, error, output=self.progress.text, usage=self._usage(), at=utcnow())
        )

    async def _terminal(self, finish: Finish) -> None:
        attempts = 0

        async def apply() -> StoredEvent | None:
            nonlocal attempts
            attempts += 1
            return await self.store.finish(self.job.id, finish, Guard.lease(self.worker_id))

        event = await self._durably("finishing the job", apply)
        if event is None and attempts > 1:
            # An attempt whose answer was lost may have committed: then the job holds this
            # very terminal event right after the last one this runner wrote.
            event = await self._durably("reading the job's log", lambda: self._landed(finish))
        if event is None:
            return
        self.metrics.job_finished(
            self.job.task, finish.status.value, model=self.job.model_name, usage=finish.usage
        )
        log.info(
            "job finished",
            extra={
                "status": finish.status.value,
                "error_code": finish.error["code"] if finish.error else None,
                "output_tokens": finish.usage.output_tokens,
                "cost_usd": finish.usage.cost_micros / MICROS_PER_DOLLAR,
            },
        )
        await self.publisher.publish(event)
