"""The error taxonomy as plain data: what went wrong, and whether a retry can help."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    JOB_NOT_CANCELLABLE = "JOB_NOT_CANCELLABLE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    RATE_LIMITED = "RATE_LIMITED"
    COST_LIMIT_EXCEEDED = "COST_LIMIT_EXCEEDED"
    CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
    PROMPT_INJECTION_DETECTED = "PROMPT_INJECTION_DETECTED"
    # A database, event bus or rate-limit store could not be reached: an outage, not a bug.
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    # Failures of a job, recorded on the job and in its JobFailed event.
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    OUTPUT_SCHEMA_MISMATCH = "OUTPUT_SCHEMA_MISMATCH"
    CONTENT_FILTERED = "CONTENT_FILTERED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    WORKER_LOST = "WORKER_LOST"
    INTERNAL = "INTERNAL"


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.CONCURRENCY_LIMIT_EXCEEDED,
        ErrorCode.SERVICE_UNAVAILABLE,
        ErrorCode.PROVIDER_UNAVAILABLE,
        ErrorCode.PROVIDER_TIMEOUT,
        ErrorCode.PROVIDER_RATE_LIMITED,
        ErrorCode.OUTPUT_SCHEMA_MISMATCH,
        ErrorCode.WORKER_LOST,
        ErrorCode.INTERNAL,
    }
)


def is_retryable(code: ErrorCode) -> bool:
    return code in RETRYABLE


@dataclass(frozen=True)
class Violation:
    """One reason an input was refused; ``path`` is a JSON path such as ``input.text``."""

    path: str
    message: str


@dataclass(frozen=True)
class InvalidInput:
    field: str
    violations: tuple[Violation, ...]
    message: str = "The input is invalid."
    code: ErrorCode = ErrorCode.INVALID_INPUT


@dataclass(frozen=True)
class NotFound:
    message: str = "No such job."
    code: ErrorCode = ErrorCode.NOT_FOUND


@dataclass(frozen=True)
class JobNotCancellable:
    status: str
    message: str = "The job has already finished."
    code: ErrorCode = ErrorCode.JOB_NOT_CANCELLABLE


@dataclass(frozen=True)
class RateLimited:
    retry_after_seconds: int
    limit: int
    window_seconds: int
    message: str = "Too many requests; retry after retryAfterSeconds."
    code: ErrorCode = ErrorCode.RATE_LIMITED


@dataclass(frozen=True)
class CostLimitExceeded:
    cap_micros: int
    spent_micros: int
    reserved_micros: int
    resets_at: datetime
    message: str = "This job could exceed today's cost limit."
    code: ErrorCode = ErrorCode.COST_LIMIT_EXCEEDED


@dataclass(frozen=True)
class ConcurrencyLimitExceeded:
    limit: int
    active: int
    message: str = "Too many active jobs; wait for one to finish."
    code: ErrorCode = ErrorCode.CONCURRENCY_LIMIT_EXCEEDED


@dataclass(frozen=True)
class InjectionFinding:
    """Which rule fired where; never the matched text."""

    rule: str
    path: str


@dataclass(frozen=True)
class PromptInjectionDetected:
    findings: tuple[InjectionFinding, ...] = ()
    message: str = "The input looks like a prompt-injection attempt."
    code: ErrorCode = ErrorCode.PROMPT_INJECTION_DETECTED


@dataclass(frozen=True)
class ServiceUnavailable:
    """A server the request needed (the database, the event bus, the rate-limit store) could
    not be reached: retry after ``retry_after_seconds``. On a stream, ``last_seq`` is the
    seq of the last event it delivered: resubscribe with ``after`` set to it."""

    retry_after_seconds: int
    last_seq: int | None = None
    message: str = "The service is briefly unavailable; retry after retryAfterSeconds."
    code: ErrorCode = ErrorCode.SERVICE_UNAVAILABLE


STREAM_CUT_MESSAGE = (
    "The stream was cut by a brief outage; after retryAfterSeconds, subscribe again with "
    "jobEvents(after: resumeAfter) to get every event after the last one you received."
)

LimitExceeded = RateLimited | CostLimitExceeded | ConcurrencyLimitExceeded

DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.PROVIDER_UNAVAILABLE: "The model provider is unavailable.",
    ErrorCode.PROVIDER_TIMEOUT: "The model provider did not answer in time.",
    ErrorCode.PROVIDER_RATE_LIMITED: "The model provider is rate limiting requests.",
    ErrorCode.OUTPUT_SCHEMA_MISMATCH: "The model output did not match the task's output schema.",
    ErrorCode.CONTENT_FILTERED: "The provider's content filter stopped the output.",
    ErrorCode.DEADLINE_EXCEEDED: "The job did not finish before its deadline.",
    ErrorCode.BUDGET_EXCEEDED: "The job reached its cost budget.",
    ErrorCode.WORKER_LOST: "The worker running the job was lost too many times.",
    ErrorCode.INTERNAL: "An internal error occurred.",
}


@dataclass(frozen=True)
class JobError:
    """Why a job failed. Safe to show to the job's owner: it never holds provider bodies."""

    code: ErrorCode
    message: str = ""
    retry_after_seconds: float | None = None
    violations: tuple[Violation, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.message:
            object.__setattr__(self, "message", DEFAULT_MESSAGES.get(self.code, "The job failed."))

    @property
    def retryable(self) -> bool:
        return is_retryable(self.code)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "message": self.message,
            "retryAfterSeconds": self.retry_after_seconds,
            "violations": [{"path": v.path, "message": v.message} for v in self.violations],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobError:
        return cls(
            code=ErrorCode(data["code"]),
            message=data.get("message", ""),
            retry_after_seconds=data.get("retryAfterSeconds"),
            violations=tuple(
                Violation(v["path"], v["message"]) for v in data.get("violations", [])
            ),
        )
