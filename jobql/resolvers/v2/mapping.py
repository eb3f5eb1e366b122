"""Map domain objects (ORM rows, events, errors) to V2 schema types."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON

from jobql.errors import (
    STREAM_CUT_MESSAGE,
    ConcurrencyLimitExceeded,
    CostLimitExceeded,
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
from jobql.resolvers.v2 import ids
from jobql.schema.v2 import errors as e
from jobql.schema.v2.enums import V2ErrorCode, V2JobStatus, V2TaskTier
from jobql.schema.v2.events import (
    V2Heartbeat,
    V2JobCancelled,
    V2JobEvent,
    V2JobFailed,
    V2JobQueued,
    V2JobStarted,
    V2JobSucceeded,
    V2OutputDelta,
    V2Progress,
)
from jobql.schema.v2.money import (
    V2Money,
    format_micros,
    micros_of_usd,
    money,
    price_micros_per_million,
)
from jobql.schema.v2.types import (
    V2Contract,
    V2Job,
    V2Model,
    V2Pricing,
    V2SecurityFlag,
    V2Task,
    V2Usage,
)
from jobql.services.jobs import IdempotencyKeyReused
from jobql.tasks import TaskContract

__all__ = [
    "V2Money",
    "event",
    "heartbeat",
    "invalid_input",
    "job",
    "job_error",
    "key_reused",
    "limit_error",
    "money",
    "not_cancellable",
    "not_found",
    "service_unavailable",
    "task",
    "usage",
]

STREAM_CUT = (
    "The stream was cut by a brief outage; after retryAfterSeconds, subscribe again with "
    "jobEvents(afterSeq: resumeAfterSeq) to get every event after the last one you received."
)

LimitError = e.V2RateLimited | e.V2CostLimitExceeded | e.V2ConcurrencyLimitExceeded


def violations(items: tuple[Violation, ...]) -> list[e.V2Violation]:
    return [e.V2Violation(path=v.path, message=v.message) for v in items]


def job_error(error: JobError, request_id: str | None) -> e.V2JobError:
    """A job's failure: one type, with the details its code has."""
    return e.V2JobError(
        code=V2ErrorCode(error.code.value),
        message=error.message,
        retryable=error.retryable,
        request_id=request_id,
        retry_after_seconds=error.retry_after_seconds,
        violations=violations(error.violations),
    )


def not_found(request_id: str | None, error: NotFound | None = None) -> e.V2NotFound:
    error = error or NotFound()
    return e.V2NotFound(
        code=V2ErrorCode.NOT_FOUND, message=error.message, retryable=False, request_id=request_id
    )


def service_unavailable(
    error: ServiceUnavailable, request_id: str | None
) -> e.V2ServiceUnavailable:
    return e.V2ServiceUnavailable(
        code=V2ErrorCode.SERVICE_UNAVAILABLE,
        message=STREAM_CUT if error.message == STREAM_CUT_MESSAGE else error.message,
        retryable=True,
        request_id=request_id,
        retry_after_seconds=error.retry_after_seconds,
        resume_after_seq=error.last_seq,
    )


# v2's names for the submit fields the service names as v1 does.
RENAMED_FIELDS = {"input": "params", "maxCostUsd": "maxCost", "wait": "waitSeconds"}
# The service's own wording about those fields, in v2's words. Only messages the service
# wrote are reworded (never a JSON Schema message, which may quote the caller's values).
REWORDED = (
    ("The input does not", "The params do not"),
    ("The input must", "The params must"),
    ("Invalid input:", "Invalid params:"),
    ("input schema", "params schema"),
    ("(input.", "(params."),
    ("wait must", "waitSeconds must"),
    ("support wait;", "support waitSeconds;"),
    ("maxCostUsd", "maxCost"),
)


def invalid_input(error: InvalidInput, request_id: str | None) -> e.V2InvalidInput:
    """v2 calls the task's input `params` (and `wait` `waitSeconds`): paths, field names and
    the service's messages say so."""
    return e.V2InvalidInput(
        code=V2ErrorCode.INVALID_INPUT,
        message=_reworded(error.message, error.field),
        retryable=False,
        request_id=request_id,
        field=_params_path(error.field),
        violations=[
            e.V2Violation(
                path=_params_path(v.path),
                message=_reworded(v.message, v.path) if v.path in RENAMED_FIELDS else v.message,
            )
            for v in error.violations
        ],
    )


def _params_path(path: str) -> str:
    head, dot, rest = path.partition(".")
    return RENAMED_FIELDS.get(head, head) + dot + rest


def _reworded(message: str, path: str) -> str:
    if path.partition(".")[0] not in RENAMED_FIELDS:
        return message
    for old, new in REWORDED:
        message = message.replace(old, new)
    return message


def not_cancellable(error: JobNotCancellable, request_id: str | None) -> e.V2JobNotCancellable:
    return e.V2JobNotCancellable(
        code=V2ErrorCode.JOB_NOT_CANCELLABLE,
        message=error.message,
        retryable=False,
        request_id=request_id,
        status=V2JobStatus(error.status),
    )


def key_reused(error: IdempotencyKeyReused, request_id: str | None) -> e.V2IdempotencyKeyReused:
    return e.V2IdempotencyKeyReused(
        code=V2ErrorCode.IDEMPOTENCY_KEY_REUSED,
        message="This idempotency key was used with different parameters.",
        retryable=False,
        request_id=request_id,
        job_id=strawberry.ID(ids.encode(ids.JOB, error.job_id)),
    )


def limit_error(
    error: RateLimited | CostLimitExceeded | ConcurrencyLimitExceeded | PromptInjectionDetected,
    request_id: str | None,
) -> LimitError | e.V2PromptInjectionDetected:
    common: dict[str, Any] = {
        "code": V2ErrorCode(error.code.value),
        "message": error.message,
        "retryable": is_retryable(error.code),
        "request_id": request_id,
    }
    if isinstance(error, RateLimited):
        return e.V2RateLimited(
            **common,
            retry_after_seconds=error.retry_after_seconds,
            limit=error.limit,
            window_seconds=error.window_seconds,
        )
    if isinstance(error, CostLimitExceeded):
        return e.V2CostLimitExceeded(
            **common,
            cap=money(error.cap_micros),
            spent=money(error.spent_micros),
            reserved=money(error.reserved_micros),
            resets_at=error.resets_at,
        )
    if isinstance(error, ConcurrencyLimitExceeded):
        return e.V2ConcurrencyLimitExceeded(**common, limit=error.limit, active=error.active)
    return e.V2PromptInjectionDetected(
        **common,
        findings=[
            e.V2InjectionFinding(rule=f.rule, path=_params_path(f.path)) for f in error.findings
        ],
    )


def usage(input_tokens: int, output_tokens: int, cost_micros: int) -> V2Usage:
    return V2Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost=money(cost_micros))


def job_global_id(job_id: str) -> strawberry.ID:
    return strawberry.ID(ids.encode(ids.JOB, job_id))


def job(row: Job) -> V2Job:
    return V2Job(
        id=job_global_id(row.id),
        task=row.task,
        tier=V2TaskTier(row.tier),
        status=V2JobStatus(row.status),
        params=JSON(row.input),
        metadata=JSON(row.job_metadata),
        output=row.output,
        result=JSON(row.result),
        phase=row.phase,
        # The error belongs to the job, so it carries the request id of the submit.
        error=job_error(JobError.from_json(row.error), row.request_id) if row.error else None,
        security_flags=[
            V2SecurityFlag(rule=f["rule"], path=_params_path(f["path"]), score=f["score"])
            for f in row.flags or []
        ],
        usage=usage(row.input_tokens, row.output_tokens, row.cost_micros),
        max_cost=money(row.max_cost_micros) if row.max_cost_micros is not None else None,
        contract=V2Contract(
            api_version=row.api_version,
            prompt_version=row.prompt_version,
            model=V2Model(provider=row.provider, name=row.model_name, version=row.model_version),
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
    finished within waitSeconds) and the model that runs it."""
    return {
        "id": ids.encode(ids.JOB, row.id),
        "status": row.status,
        "cost": {"amount": format_micros(row.cost_micros), "currency": "USD"},
        "model": {"provider": row.provider, "name": row.model_name, "version": row.model_version},
    }


def task(contract: TaskContract) -> V2Task:
    return V2Task(
        id=strawberry.ID(ids.encode(ids.TASK, contract.name)),
        name=contract.name,
        description=contract.description,
        tier=V2TaskTier(contract.tier.value),
        prompt_version=contract.prompt_version,
        model=V2Model(
            provider=contract.model.provider,
            name=contract.model.name,
            version=contract.model.version,
        ),
        params_schema=JSON(contract.input_schema),
        output_schema=JSON(contract.output_schema),
        pricing=V2Pricing(
            input_per_million_tokens=money(price_micros_per_million(contract.pricing.input_per_1k)),
            output_per_million_tokens=money(
                price_micros_per_million(contract.pricing.output_per_1k)
            ),
        ),
        max_output_tokens=contract.max_output_tokens,
        deadline_seconds=contract.deadline_seconds,
        max_wait_seconds=contract.max_wait_seconds,
    )


def heartbeat(item: Heartbeat) -> V2Heartbeat:
    return V2Heartbeat(
        job_id=job_global_id(item.job_id),
        at=item.at,
        status=V2JobStatus(item.status),
        phase=item.phase,
        elapsed_ms=item.elapsed_ms,
        output_tokens=item.output_tokens,
        cost=money(item.cost_micros),
    )


def event(item: StoredEvent, request_id: str | None, final: Job | None = None) -> V2JobEvent:
    """The event; a terminal one (V2JobFinished) needs the job in its final state."""
    base: dict[str, Any] = {"job_id": job_global_id(item.job_id), "seq": item.seq, "at": item.at}
    p = item.payload
    match item.type:
        case EventType.JOB_QUEUED:
            return V2JobQueued(**base)
        case EventType.JOB_STARTED:
            return V2JobStarted(**base, attempt=p["attempt"])
        case EventType.OUTPUT_DELTA:
            return V2OutputDelta(**base, text=p["text"])
        case EventType.PROGRESS:
            return V2Progress(**base, phase=p["phase"], message=p.get("message", ""))
    if final is None:
        raise ValueError(f"a {item.type} event needs the job's final state")
    u = p["usage"]
    base |= {
        "usage": usage(u["inputTokens"], u["outputTokens"], micros_of_usd(u["costUsd"])),
        "duration_ms": p["durationMs"],
        "model": V2Model(**p["model"]),
        "job": job(final),
    }
    if item.type is EventType.JOB_SUCCEEDED:
        return V2JobSucceeded(**base, output=p["output"], result=p.get("result"))
    if item.type is EventType.JOB_FAILED:
        return V2JobFailed(**base, error=job_error(JobError.from_json(p["error"]), request_id))
    return V2JobCancelled(**base, reason=p.get("reason"))
