"""Map domain objects (ORM rows, events, errors) to V1 schema types."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from jobql.errors import (
    ConcurrencyLimitExceeded,
    CostLimitExceeded,
    ErrorCode,
    InvalidInput,
    JobError,
    JobNotCancellable,
    NotFound,
    PromptInjectionDetected,
    RateLimited,
    ServiceUnavailable,
    Violation,
    is_retryable,
)
from jobql.events.types import EventType, Heartbeat, StoredEvent
from jobql.models import Job, JobStatus
from jobql.schema.v1 import errors as e
from jobql.schema.v1.enums import V1JobStatus, V1Tier
from jobql.schema.v1.events import (
    V1Heartbeat,
    V1JobCancelled,
    V1JobEvent,
    V1JobFailed,
    V1JobQueued,
    V1JobStarted,
    V1JobSucceeded,
    V1OutputDelta,
    V1Progress,
)
from jobql.schema.v1.types import (
    V1Contract,
    V1Job,
    V1Model,
    V1Pricing,
    V1SecurityFlag,
    V1Task,
    V1Usage,
)
from jobql.services.jobs import IdempotencyKeyReused
from jobql.tasks import TaskContract
from jobql.tasks.contracts import MICROS_PER_DOLLAR

JOB_ERROR_TYPES: dict[ErrorCode, type[e.V1Error]] = {
    ErrorCode.PROVIDER_UNAVAILABLE: e.V1ProviderUnavailable,
    ErrorCode.PROVIDER_TIMEOUT: e.V1ProviderTimeout,
    ErrorCode.CONTENT_FILTERED: e.V1ContentFiltered,
    ErrorCode.DEADLINE_EXCEEDED: e.V1DeadlineExceeded,
    ErrorCode.BUDGET_EXCEEDED: e.V1BudgetExceeded,
    ErrorCode.WORKER_LOST: e.V1WorkerLost,
    ErrorCode.INTERNAL: e.V1InternalError,
}


def violations(items: tuple[Violation, ...]) -> list[e.V1Violation]:
    return [e.V1Violation(path=v.path, message=v.message) for v in items]


def job_error(error: JobError, request_id: str | None) -> e.V1Error:
    common: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "retryable": error.retryable,
        "request_id": request_id,
    }
    if error.code is ErrorCode.PROVIDER_RATE_LIMITED:
        return e.V1ProviderRateLimited(**common, retry_after_seconds=error.retry_after_seconds)
    if error.code is ErrorCode.OUTPUT_SCHEMA_MISMATCH:
        return e.V1OutputSchemaMismatch(**common, violations=violations(error.violations))
    return JOB_ERROR_TYPES.get(error.code, e.V1InternalError)(**common)


def not_found(error: NotFound, request_id: str | None) -> e.V1NotFound:
    return e.V1NotFound(
        code=error.code, message=error.message, retryable=False, request_id=request_id
    )


def service_unavailable(
    error: ServiceUnavailable, request_id: str | None
) -> e.V1ServiceUnavailable:
    return e.V1ServiceUnavailable(
        code=error.code,
        message=error.message,
        retryable=True,
        request_id=request_id,
        retry_after_seconds=error.retry_after_seconds,
        resume_after=error.last_seq,
    )


def invalid_input(error: InvalidInput, request_id: str | None) -> e.V1InvalidInput:
    return e.V1InvalidInput(
        code=error.code,
        message=error.message,
        retryable=False,
        request_id=request_id,
        field=error.field,
        violations=violations(error.violations),
    )


def not_cancellable(error: JobNotCancellable, request_id: str | None) -> e.V1JobNotCancellable:
    return e.V1JobNotCancellable(
        code=error.code,
        message=error.message,
        retryable=False,
        request_id=request_id,
        status=V1JobStatus(error.status),
    )


def key_reused(error: IdempotencyKeyReused, request_id: str | None) -> e.V1IdempotencyKeyReused:
    return e.V1IdempotencyKeyReused(
        code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
        message=error.message,
        retryable=False,
        request_id=request_id,
        job_id=strawberry.ID(error.job_id),
    )


def limit_error(
    error: RateLimited | CostLimitExceeded | ConcurrencyLimitExceeded | PromptInjectionDetected,
    request_id: str | None,
) -> (
    e.V1RateLimited
    | e.V1CostLimitExceeded
    | e.V1ConcurrencyLimitExceeded
    | (e.V1PromptInjectionDetected)
):
    common: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "retryable": is_retryable(error.code),
        "request_id": request_id,
    }
    if isinstance(error, RateLimited):
        return e.V1RateLimited(
            **common,
            retry_after_seconds=error.retry_after_seconds,
            limit=error.limit,
            window_seconds=error.window_seconds,
        )
    if isinstance(error, CostLimitExceeded):
        return e.V1CostLimitExceeded(
            **common,
            cap_usd=error.cap_micros / MICROS_PER_DOLLAR,
            spent_usd=error.spent_micros / MICROS_PER_DOLLAR,
            reserved_usd=error.reserved_micros / MICROS_PER_DOLLAR,
            resets_at=error.resets_at,
        )
    if isinstance(error, ConcurrencyLimitExceeded):
        return e.V1ConcurrencyLimitExceeded(**common, limit=error.limit, active=error.active)
    return e.V1PromptInjectionDetected(
        **common,
        findings=[e.V1InjectionFinding(rule=f.rule, path=f.path) for f in error.findings],
    )


def usage(input_tokens: int, output_tokens: int, cost_micros: int) -> V1Usage:
    return V1Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_micros / MICROS_PER_DOLLAR,
    )


def job(row: Job) -> V1Job:
    return V1Job(
        id=strawberry.ID(row.id),
        task=row.task,
        tier=V1Tier(row.tier),
        status=V1JobStatus(row.status),
        input=JSON(row.input),
        metadata=JSON(row.job_metadata),
        output=row.output,
        result=JSON(row.result),
        phase=row.phase,
        # The error belongs to the job, so it carries the request id of the submit.
        error=job_error(JobError.from_json(row.error), row.request_id) if row.error else None,
        security_flags=[
            V1SecurityFlag(rule=f["rule"], path=f["path"], score=f["score"])
            for f in row.flags or []
        ],
        usage=usage(row.input_tokens, row.output_tokens, row.cost_micros),
        contract=V1Contract(
            api_version=row.api_version,
            prompt_version=row.prompt_version,
            model=V1Model(provider=row.provider, name=row.model_name, version=row.model_version),
        ),
        attempts=row.attempts,
        idempotency_key=row.idempotency_key,
        request_id=row.request_id,
        last_seq=row.last_seq,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        deadline_at=row.deadline_at,
        cancel_requested_at=row.cancel_requested_at,
        # A queued job is cancelled at once, without a request for a worker to act on.
        cancel_requested=row.cancel_requested_at is not None
        or row.status == JobStatus.CANCELLED.value,
        log_compacted=row.log_compacted_at is not None,
    )


def cost_extension(row: Job) -> dict[str, Any]:
    """What submitJob adds to the response's extensions: cost so far (final when the job
    finished within `wait`) and the model that runs it."""
    return {
        "id": row.id,
        "status": row.status,
        "costUsd": row.cost_micros / MICROS_PER_DOLLAR,
        "model": {"provider": row.provider, "name": row.model_name, "version": row.model_version},
    }


def task(contract: TaskContract) -> V1Task:
    return V1Task(
        name=contract.name,
        description=contract.description,
        tier=V1Tier(contract.tier.value),
        prompt_version=contract.prompt_version,
        model=V1Model(
            provider=contract.model.provider,
            name=contract.model.name,
            version=contract.model.version,
        ),
        input_schema=JSON(contract.input_schema),
        output_schema=JSON(contract.output_schema),
        pricing=V1Pricing(
            input_per_1k_tokens_usd=contract.pricing.input_per_1k,
            output_per_1k_tokens_usd=contract.pricing.output_per_1k,
        ),
        max_output_tokens=contract.max_output_tokens,
        deadline_seconds=contract.deadline_seconds,
        max_wait_seconds=contract.max_wait_seconds,
    )


def heartbeat(item: Heartbeat) -> V1Heartbeat:
    return V1Heartbeat(
        job_id=strawberry.ID(item.job_id),
        at=item.at,
        status=V1JobStatus(item.status),
        current_phase=item.phase,
        elapsed_ms=item.elapsed_ms,
        output_tokens=item.output_tokens,
        cost_usd=item.cost_micros / MICROS_PER_DOLLAR,
    )


def event(item: StoredEvent, request_id: str | None, final: Job | None = None) -> V1JobEvent:
    """The event; a terminal one (V1JobFinished) needs the job in its final state."""
    base: dict[str, Any] = {"job_id": strawberry.ID(item.job_id), "seq": item.seq, "at": item.at}
    p = item.payload
    match item.type:
        case EventType.JOB_QUEUED:
            return V1JobQueued(**base)
        case EventType.JOB_STARTED:
            return V1JobStarted(**base, attempt=p["attempt"])
        case EventType.OUTPUT_DELTA:
            return V1OutputDelta(**base, text=p["text"])
        case EventType.PROGRESS:
            return V1Progress(**base, phase=p["phase"], message=p.get("message", ""))
    u = p["usage"]
    base |= {
        "usage": V1Usage(
            input_tokens=u["inputTokens"], output_tokens=u["outputTokens"], cost_usd=u["costUsd"]
        ),
        "cost_usd": p["costUsd"],
        "duration_ms": p["durationMs"],
        "model": V1Model(**p["model"]),
    }
    if final is None:
        raise ValueError(f"a {item.type} event needs the job's final state")
    base["job"] = job(final)
    if item.type is EventType.JOB_SUCCEEDED:
        return V1JobSucceeded(**base, output=p["output"], result=p.get("result"))
    if item.type is EventType.JOB_FAILED:
        return V1JobFailed(**base, error=job_error(JobError.from_json(p["error"]), request_id))
    return V1JobCancelled(**base, reason=p.get("reason"))
