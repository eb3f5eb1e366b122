"""Submit, read, list and cancel jobs for a caller."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobql.errors import (
    InjectionFinding,
    InvalidInput,
    JobNotCancellable,
    LimitExceeded,
    NotFound,
    PromptInjectionDetected,
    RateLimited,
    ServiceUnavailable,
    Violation,
)
from jobql.events.bus import EventBus
from jobql.events.channels import job_channel
from jobql.events.publisher import EventPublisher
from jobql.events.types import TERMINAL_EVENTS, StoredEvent
from jobql.models import Job, JobStatus
from jobql.models.base import utcnow
from jobql.models.jobs import is_job_id
from jobql.observability.metrics import Metrics, SubmitOutcome, UnavailableOperation
from jobql.outages import is_outage
from jobql.providers.base import count_tokens
from jobql.repositories.store import IdempotencyKeyTaken, JobStore, PageCursor
from jobql.services.auth import Caller
from jobql.services.injection import HeuristicDetector, InjectionDetector, screen
from jobql.services.inputs import (
    check_idempotency_key,
    check_json,
    fingerprint,
    printable,
    validate_task_input,
    with_defaults,
)
from jobql.services.limits import (
    check_concurrency,
    check_cost,
    effective_limits,
    worst_case_cost_micros,
)
from jobql.services.ratelimit import RateLimiter, RateState
from jobql.services.unavailable import ThrottledWarning, unavailable
from jobql.settings import Settings
from jobql.states import CancelAction
from jobql.tasks import TaskRegistry
from jobql.tasks.contracts import MICROS_PER_DOLLAR

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 4096
MAX_CANCEL_REASON = 500
MAX_COST_USD = 1_000_000.0
MIN_COST_USD = 1 / MICROS_PER_DOLLAR


@dataclass(frozen=True)
class SubmitRequest:
    api_version: str
    task: str
    input: Any
    idempotency_key: str | None = None
    wait_seconds: float | None = None
    deadline_seconds: int | None = None
    max_cost_usd: float | None = None
    metadata: Any = None
    request_id: str | None = None


@dataclass(frozen=True)
class Submitted:
    job: Job
    deduplicated: bool


@dataclass(frozen=True)
class IdempotencyKeyReused:
    job_id: str
    message: str = "This idempotency key was used with a different input."


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]  # newest first
    has_next_page: bool  # older jobs follow the page
    has_previous_page: bool = False  # newer jobs precede it

    @staticmethod
    def cursor(job: Job) -> str:
        raw = f"{job.created_at.isoformat()}|{job.id}".encode()
        return base64.urlsafe_b64encode(raw).decode()


class InvalidCursor(ValueError):
    pass


def decode_cursor(cursor: str) -> PageCursor:
    """The position a cursor from JobPage.cursor stands for; anything else is InvalidCursor."""
    try:
        created, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None or not is_job_id(job_id):
            raise ValueError("not a cursor of ours")
        return PageCursor(created_at=created_at.astimezone(UTC), job_id=job_id)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidCursor("invalid cursor") from exc


SubmitOutcomeType = (
    Submitted
    | InvalidInput
    | IdempotencyKeyReused
    | LimitExceeded
    | PromptInjectionDetected
    | ServiceUnavailable
)


def _outcome_label(outcome: object) -> SubmitOutcome:
    if isinstance(outcome, Submitted):
        return SubmitOutcome.DEDUPLICATED if outcome.deduplicated else SubmitOutcome.CREATED
    if isinstance(outcome, InvalidInput):
        return SubmitOutcome.INVALID_INPUT
    if isinstance(outcome, IdempotencyKeyReused):
        return SubmitOutcome.IDEMPOTENCY_KEY_REUSED
    if isinstance(outcome, PromptInjectionDetected):
        return SubmitOutcome.PROMPT_INJECTION
    if isinstance(outcome, ServiceUnavailable):
        return SubmitOutcome.SERVICE_UNAVAILABLE
    return SubmitOutcome.LIMIT_EXCEEDED


def _dedupe(existing: Job, job_fingerprint: str) -> Submitted | IdempotencyKeyReused:
    if existing.input_fingerprint != job_fingerprint:
        return IdempotencyKeyReused(job_id=existing.id)
    return Submitted(job=existing, deduplicated=True)


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(field=field, violations=(Violation(field, message),), message=message)


class JobService:
    def __init__(
        self,
        settings: Settings,
        *,
        store: JobStore,
        bus: EventBus,
        tasks: TaskRegistry,
        rate_limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        detector: InjectionDetector | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.publisher = EventPublisher(bus)
        self.tasks = tasks
        self.rate_limiter = rate_limiter
        self.metrics = metrics or Metrics()
        self.detector = detector or HeuristicDetector()
        # The rate-limit state of the current request's submit, for the RateLimit headers.
        self.last_rate: ContextVar[RateState | None] = ContextVar("jobql_rate", default=None)
        self._warn_unavailable = ThrottledWarning(
            log,
            "jobs: the database or the rate limiter's Redis is unreachable; answering "
            "ServiceUnavailable",
        )
        self._warn_unpublished = ThrottledWarning(
            log,
            "jobs: committed, but the event bus is unreachable; workers and subscribers "
            "will find it in the database",
        )

    # -- submit --------------------------------------------------------------------------

    async def submit(self, caller: Caller, req: SubmitRequest) -> SubmitOutcomeType:
        """Store the job (or answer why not); with ``wait``, hold for its end.

        An outage before the job is committed answers ServiceUnavailable. The commit itself
        is all or nothing, so a client that retries with the same idempotency key gets the
        job it may have created (deduplicated) or creates it now: never two."""
        started = time.perf_counter()
        try:
            outcome = await self._submit(caller, req)
        except Exception as exc:
            if (answer := self._unavailable(exc, UnavailableOperation.SUBMIT)) is None:
                self.metrics.observe_submit(time.perf_counter() - started, SubmitOutcome.ERROR)
                raise
            outcome = answer
        self.metrics.observe_submit(time.perf_counter() - started, _outcome_label(outcome))
        if isinstance(outcome, Submitted) and not outcome.deduplicated:
            self.metrics.job_submitted(outcome.job.task)
            log.info("job submitted", extra={"job_id": outcome.job.id, "task": outcome.job.task})
            if req.wait_seconds:
                task = self.tasks.get(outcome.job.api_version, outcome.job.task)
                cap = task.max_wait_seconds if task else 0
                try:
                    job = await self.wait_for_terminal(outcome.job, min(req.wait_seconds, cap))
                except Exception as exc:
                    # The job is stored: answer it as it was, the client follows it later.
                    if not is_outage(exc):
                        raise
                    self._warn_unavailable(exc)
                    job = outcome.job
                return Submitted(job=job, deduplicated=False)
        return outcome

    def _unavailable(
        self, exc: BaseException, operation: UnavailableOperation
    ) -> ServiceUnavailable | None:
        answer = unavailable(exc)
        if answer is not None:
            self._warn_unavailable(exc)
            self.metrics.service_unavailable(operation)
        return answer

    async def _publish_committed(
        self, event: StoredEvent | None, *, wake: bool = False, cancel: str | None = None
    ) -> None:
        """Tell workers and subscribers about a committed change. The database is the truth:
        with the bus down they see it on their next poll (or lease renewal, for a cancel),
        so the client still gets its answer."""
        try:
            if event is not None:
                await self.publisher.publish(event)
            if wake:
                await self.publisher.wake_workers()
            if cancel is not None:
                await self.publisher.request_cancel(cancel)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._warn_unpublished(exc)

    async def _submit(self, caller: Caller, req: SubmitRequest) -> SubmitOutcomeType:
        task = self.tasks.get(req.api_version, req.task)
        if task is None:
            return _invalid("task", f"Unknown task {req.task[:100]!r}; see the `tasks` query.")
        if not isinstance(req.input, dict):
            return _invalid("input", "The input must be a JSON object.")
        if (problem := check_json("input", req.input)) is not None:
            return problem
        if len(json.dumps(req.input)) > self.settings.max_input_bytes:
            return _invalid(
                "input", f"The input must be at most {self.settings.max_input_bytes} bytes of JSON."
            )
        if (problem := validate_task_input(task.input_schema, req.input)) is not None:
            return problem
        if req.idempotency_key is not None and (
            problem := check_idempotency_key(req.idempotency_key)
        ):
            return problem
        if req.wait_seconds is not None and req.wait_seconds < 0:
            return _invalid("wait", "wait must not be negative.")
        if req.wait_seconds and task.max_wait_seconds == 0:
            return _invalid(
                "wait", f"{task.tier.value} tasks do not support wait; subscribe to jobEvents."
            )
        deadline_seconds = task.deadline_seconds
        if req.deadline_seconds is not None:
            if not 1 <= req.deadline_seconds <= task.deadline_seconds:
                return _invalid(
                    "deadlineSeconds",
                    f"deadlineSeconds must be between 1 and {task.deadline_seconds}.",
                )
            deadline_seconds = req.deadline_seconds
        max_cost_micros = None
        if req.max_cost_usd is not None:
            # Below a micro-dollar the cap rounds to nothing: refused, not reserved as $0.
            if not MIN_COST_USD <= req.max_cost_usd <= MAX_COST_USD:
                return _invalid(
                    "maxCostUsd",
                    f"maxCostUsd must be at least {MIN_COST_USD:.6f} (one micro-dollar) "
                    f"and at most {MAX_COST_USD}.",
                )
            max_cost_micros = round(req.max_cost_usd * MICROS_PER_DOLLAR)
        if req.metadata is not None and (problem := check_json("metadata", req.metadata)):
            return problem
        if req.metadata is not None and (
            not isinstance(req.metadata, dict) or len(json.dumps(req.metadata)) > MAX_METADATA_BYTES
        ):
            return _invalid(
                "metadata", f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes."
            )

        task_input = with_defaults(task.input_schema, req.input)
        screened = screen(self.detector, task.injection, task_input)
        if screened.blocked:
            return PromptInjectionDetected(
                findings=tuple(InjectionFinding(f.rule, f.path) for f in screened.findings)
            )
        job_fingerprint = fingerprint(
            {
                "task": task.name,
                "apiVersion": task.api_version,
                "input": task_input,
                "deadlineSeconds": req.deadline_seconds,
                "maxCostUsd": req.max_cost_usd,
                "metadata": req.metadata,
            }
        )
        now = utcnow()
        job = Job(
            id=str(uuid.uuid4()),
            principal_id=caller.id,
            status=JobStatus.QUEUED.value,
            task=task.name,
            api_version=task.api_version,
            tier=task.tier.value,
            prompt_version=task.prompt_version,
            provider=task.model.provider,
            model_name=task.model.name,
            model_version=task.model.version,
            input=task_input,
            input_fingerprint=job_fingerprint,
            idempotency_key=req.idempotency_key,
            job_metadata=req.metadata,
            flags=[{"rule": f.rule, "path": f.path, "score": f.score} for f in screened.findings]
            or None,
            request_id=req.request_id,
            max_cost_micros=max_cost_micros,
            max_attempts=self.settings.max_attempts,
            created_at=now,
            deadline_at=now + timedelta(seconds=deadline_seconds),
            output="",
        )
        job.reserved_micros = worst_case_cost_micros(
            task, count_tokens(task.render_prompt(task_input)), max_cost_micros
        )
        try:
            outcome = await self._admit(caller, job)
        except IdempotencyKeyTaken:
            # Another submit with this key won a race the caller lock did not cover.
            if req.idempotency_key is None:
                raise
            existing = await self.store.by_idempotency_key(caller.id, req.idempotency_key)
            if existing is None:
                raise
            outcome = _dedupe(existing, job_fingerprint)
        if not isinstance(outcome, StoredEvent):
            return outcome
        await self._publish_committed(outcome, wake=True)
        return Submitted(job=job, deduplicated=False)

    async def _admit(
        self, caller: Caller, job: Job
    ) -> StoredEvent | Submitted | IdempotencyKeyReused | LimitExceeded:
        """Under the caller's lock: answer a known idempotency key with its job, else check
        the rate, concurrency and cost limits and, if all pass, store the job."""
        now = job.created_at
        # Under the caller's lock (limits enforced), so its submits are checked one at a time.
        day = now.date() if self.settings.enforce_limits else None
        async with self.store.admission(caller.id, day=day, key=job.idempotency_key) as admit:
            existing = admit.keyed_job
            if existing is not None:
                window = timedelta(seconds=self.settings.idempotency_window_seconds)
                if existing.created_at > now - window:
                    return _dedupe(existing, job.input_fingerprint)
                await admit.forget_key(existing.id)
            load = admit.load
            if load is None:
                return await admit.insert(job)
            limits = effective_limits(self.settings.limits_for(caller.tier), caller.overrides)
            refused = check_concurrency(limits, load.active) or check_cost(
                limits,
                spent=load.spent_micros,
                reserved=load.reserved_micros,
                reservation=job.reserved_micros,
                now=now,
            )
            if self.rate_limiter is None:
                return refused or await admit.insert(job)
            hit = await self.rate_limiter.acquire(
                "submit", caller.id, limits.rate_limit, limits.rate_window_seconds
            )
            # The window's state feeds the RateLimit headers (and Retry-After). With Redis it
            # is a round trip of its own, so it is read while the job is being stored.
            reading = asyncio.create_task(self.rate_limiter.state(hit))
            try:
                stored = None
                if hit.allowed and refused is None:
                    stored = await admit.insert(job)
            except BaseException:
                reading.cancel()
                raise
            rate = await reading
            if rate is not None:
                self.last_rate.set(rate)
            if not hit.allowed:
                window_seconds = hit.item.get_expiry()
                return RateLimited(
                    retry_after_seconds=rate.reset_seconds if rate is not None else window_seconds,
                    limit=hit.item.amount,
                    window_seconds=window_seconds,
                )
            if refused is not None:
                return refused
            assert stored is not None  # allowed and not refused: stored above
            return stored

    async def wait_for_terminal(self, job: Job, seconds: float) -> Job:
        """Hold until the job is terminal or ``seconds`` pass; return it as it is then."""
        deadline = time.monotonic() + seconds
        terminal_types = {None, *(t.value for t in TERMINAL_EVENTS)}
        current: Job | None = job
        check = True
        async with self.bus.subscribe(job_channel(job.id)) as subscription:
            while True:
                if check:
                    current = await self.store.get(job.id)
                    if current is None or current.is_terminal:
                        return current or job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return current or job
                # Re-read on a terminal (or reference-only) event, and at least every second
                # in case a message was lost.
                message = await subscription.receive(min(remaining, 1.0))
                check = message is None or message.get("type") in terminal_types

    # -- reads ---------------------------------------------------------------------------

    async def get(
        self, caller: Caller, job_id: str, *, api_version: str | None = None
    ) -> Job | NotFound | ServiceUnavailable:
        """The caller's job. With ``api_version``, a job submitted through another version
        is NotFound (its contract is not that version's), as in ``StreamService.open``."""
        try:
            job = await self.store.get_owned(caller.id, job_id)
        except Exception as exc:
            if (answer := self._unavailable(exc, UnavailableOperation.READ)) is None:
                raise
            return answer
        if job is None or (api_version is not None and job.api_version != api_version):
            return NotFound()
        return job

    async def list(
        self,
        caller: Caller,
        *,
        first: int | None,
        after: str | None,
        statuses: Sequence[JobStatus] | None,
        last: int | None = None,
        before: str | None = None,
        api_version: str | None = None,
    ) -> JobPage:
        """A page of the caller's jobs, newest first, between the cursors ``after`` and
        ``before``: the ``first`` of them, or with ``last`` (and no ``first``) the last ones,
        for paging backwards. Raises InvalidCursor."""
        backwards = last is not None and first is None
        wanted = last if backwards else first
        size = wanted if wanted is not None else self.settings.default_page_size
        size = max(0, min(size, self.settings.max_page_size))
        below = decode_cursor(after) if after else None
        above = decode_cursor(before) if before else None
        jobs = await self.store.list_owned(
            caller.id,
            limit=size + 1,
            after=below,
            statuses=statuses,
            before=above,
            oldest_first=backwards,
            api_version=api_version,
        )
        more = len(jobs) > size
        jobs = jobs[:size]

        async def beyond(cursor: PageCursor, *, older: bool) -> bool:
            """Whether any job lies past a cursor the page was bounded by."""
            found = await self.store.list_owned(
                caller.id,
                limit=1,
                after=cursor if older else None,
                statuses=statuses,
                before=None if older else cursor,
                api_version=api_version,
            )
            return bool(found)

        if backwards:
            jobs.reverse()
            return JobPage(
                jobs=jobs,
                has_next_page=above is not None and await beyond(above, older=True),
                has_previous_page=more,
            )
        return JobPage(
            jobs=jobs,
            has_next_page=more,
            has_previous_page=below is not None and await beyond(below, older=False),
        )

    # -- cancel --------------------------------------------------------------------------

    async def cancel(
        self, caller: Caller, job_id: str, reason: str | None
    ) -> Job | NotFound | JobNotCancellable | ServiceUnavailable:
        """Commit the cancel (or answer why not), then tell the worker. Retrying after
        ServiceUnavailable is safe: if the first cancel did commit, the retry finds the job
        cancelled (JobNotCancellable) or already asked to stop."""
        reason = printable(reason)[:MAX_CANCEL_REASON] if reason else None
        try:
            outcome = await self.store.cancel(caller.id, job_id, reason, utcnow())
        except Exception as exc:
            if (answer := self._unavailable(exc, UnavailableOperation.CANCEL)) is None:
                raise
            return answer
        if outcome is None:
            return NotFound()
        if outcome.action is CancelAction.REFUSE:
            return JobNotCancellable(status=outcome.job.status)
        if outcome.event is not None:
            self.metrics.job_finished(outcome.job.task, JobStatus.CANCELLED.value)
            await self._publish_committed(outcome.event)
        elif outcome.action is CancelAction.REQUEST:
            await self._publish_committed(None, cancel=outcome.job.id)
        return outcome.job
