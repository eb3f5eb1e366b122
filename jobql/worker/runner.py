"""Run one claimed job: stream the provider, write events, finish with exactly one terminal."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.errors import ErrorCode, JobError, Violation
from jobql.events.payloads import terminal_payload
from jobql.events.publisher import EventPublisher
from jobql.events.types import EventType, StoredEvent
from jobql.models import Job, JobStatus
from jobql.models.base import utcnow
from jobql.observability.logging import bind_job_id
from jobql.observability.metrics import Metrics
from jobql.providers.base import (
    Progress,
    ProviderError,
    ProviderRequest,
    TextDelta,
    Usage,
    count_tokens,
)
from jobql.providers.registry import ProviderRegistry
from jobql.repositories.jobs import JobRepository
from jobql.repositories.usage import UsageRepository
from jobql.tasks import TaskContract
from jobql.tasks.contracts import MICROS_PER_DOLLAR
from jobql.worker.pump import Ended, ProviderPump, PumpItem, Raised, Stopped, StopReason

log = logging.getLogger(__name__)


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
        sessions: async_sessionmaker[AsyncSession],
        publisher: EventPublisher,
        providers: ProviderRegistry,
        coalesce_seconds: float,
        metrics: Metrics,
    ) -> None:
        self.job = job
        self.task = task
        self.worker_id = worker_id
        self.sessions = sessions
        self.publisher = publisher
        self.providers = providers
        self.coalesce_seconds = coalesce_seconds
        self.metrics = metrics
        self.progress = Progressed()
        self.pump: ProviderPump | None = None
        self._pending_stop: StopReason | None = None
        self._started = time.monotonic()

    # -- signals from the worker ---------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        if self.pump is not None:
            self.pump.stop(reason)
        elif self._pending_stop is None:
            self._pending_stop = reason

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        with bind_job_id(self.job.id):
            try:
                await self._run()
            except Exception:
                log.exception("job failed unexpectedly")
                await self._finish_failed(JobError(ErrorCode.INTERNAL))

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
            text: list[str] = []
            tokens = 0
            for item in [first, *pump.get_ready()]:
                if isinstance(item, TextDelta):
                    text.append(item.text)
                    tokens += item.tokens
                    continue
                if text:
                    if not await self._write_delta("".join(text), tokens):
                        return Stopped(StopReason.LEASE_LOST)
                    text, tokens = [], 0
                if isinstance(item, Progress):
                    if not await self._write_progress(item):
                        return Stopped(StopReason.LEASE_LOST)
                elif isinstance(item, Usage):
                    self.progress.input_tokens = item.input_tokens
                    self.progress.output_tokens = item.output_tokens
                else:
                    return item
            if text:
                if not await self._write_delta("".join(text), tokens):
                    return Stopped(StopReason.LEASE_LOST)
                last_flush = time.monotonic()
                if self._over_budget():
                    pump.stop(StopReason.BUDGET)
                    return Stopped(StopReason.BUDGET)

    def _cost_micros(self) -> int:
        assert self.task is not None
        return self.task.pricing.cost_micros(
            self.progress.input_tokens, self.progress.output_tokens
        )

    def _over_budget(self) -> bool:
        limit = self.job.max_cost_micros
        return limit is not None and self._cost_micros() > limit

    async def _write_delta(self, text: str, tokens: int) -> bool:
        if not self.progress.output and self.job.started_at is not None:
            ttft = (utcnow() - self.job.started_at).total_seconds()
            self.metrics.observe_time_to_first_token(self.job.task, ttft)
        self.progress.output.append(text)
        self.progress.output_tokens += tokens
        event = await self._append(
            EventType.OUTPUT_DELTA,
            {"text": text},
            values={
                "output": Job.output + text,
                "output_tokens": self.progress.output_tokens,
                "input_tokens": self.progress.input_tokens,
                "cost_micros": self._cost_micros(),
            },
        )
        return event is not None

    async def _write_progress(self, item: Progress) -> bool:
        self.progress.phase = item.phase
        event = await self._append(
            EventType.PROGRESS,
            {"phase": item.phase, "message": item.message},
            values={"phase": item.phase},
        )
        return event is not None

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
                await self._terminal(EventType.JOB_SUCCEEDED, JobStatus.SUCCEEDED, result=result)
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
            async with self.sessions() as session:
                job = await JobRepository(session).get(self.job.id)
                cancel_reason = job.cancel_reason if job else None
            await self._terminal(EventType.JOB_CANCELLED, JobStatus.CANCELLED, reason=cancel_reason)
        elif reason is StopReason.DEADLINE:
            await self._finish_failed(JobError(ErrorCode.DEADLINE_EXCEEDED))
        elif reason is StopReason.BUDGET:
            await self._finish_failed(JobError(ErrorCode.BUDGET_EXCEEDED))
        elif reason is StopReason.SHUTDOWN:
            await self._release()
        # LEASE_LOST: the job is someone else's now; write nothing.

    async def _finish_failed(self, error: JobError) -> None:
        await self._terminal(EventType.JOB_FAILED, JobStatus.FAILED, error=error)

    async def _terminal(
        self,
        event_type: EventType,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: JobError | None = None,
        reason: str | None = None,
    ) -> None:
        job = self.job
        cost = self._cost_micros() if self.task else 0
        finished = utcnow()
        payload = terminal_payload(
            job,
            input_tokens=self.progress.input_tokens,
            output_tokens=self.progress.output_tokens,
            cost_micros=cost,
            finished_at=finished,
        )
        if event_type is EventType.JOB_SUCCEEDED:
            payload["output"] = self.progress.text
            payload["result"] = result
        elif error is not None:
            payload["error"] = error.to_json()
        else:
            payload["reason"] = reason
        async with self.sessions() as session, session.begin():
            event = await JobRepository(session).append_event(
                job.id,
                event_type,
                payload,
                where=self._lease_guard(),
                values={
                    "status": status.value,
                    "finished_at": finished,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "output": self.progress.text,
                    "result": result,
                    "error": error.to_json() if error else None,
                    "phase": None,
                    "input_tokens": self.progress.input_tokens,
                    "output_tokens": self.progress.output_tokens,
                    "cost_micros": cost,
                },
            )
            if event is not None:
                await UsageRepository(session).add(
                    job.principal_id,
                    finished.date(),
                    input_tokens=self.progress.input_tokens,
                    output_tokens=self.progress.output_tokens,
                    cost_micros=cost,
                )
        if event is not None:
            self.metrics.job_finished(job.task, status.value)
            log.info(
                "job finished",
                extra={
                    "status": status.value,
                    "error_code": error.code.value if error else None,
                    "output_tokens": self.progress.output_tokens,
                    "cost_usd": cost / MICROS_PER_DOLLAR,
                },
            )
            await self.publisher.publish(event)

    async def _release(self) -> None:
        """Hand the job back to the queue on shutdown."""
        async with self.sessions() as session, session.begin():
            await JobRepository(session).release(self.job.id, self.worker_id)

    # -- plumbing ------------------------------------------------------------------------

    def _lease_guard(self) -> list[Any]:
        return [Job.status == JobStatus.RUNNING.value, Job.lease_owner == self.worker_id]

    async def _append(
        self, event_type: EventType, payload: dict[str, Any], values: dict[str, Any] | None = None
    ) -> StoredEvent | None:
        async with self.sessions() as session, session.begin():
            event = await JobRepository(session).append_event(
                self.job.id, event_type, payload, where=self._lease_guard(), values=values
            )
        if event is None:
            log.info("lease lost; stopping")
            if self.pump is not None:
                self.pump.stop(StopReason.LEASE_LOST)
            return None
        await self.publisher.publish(event)
        return event
