"""V2 errors as data: every expected failure implements V2Error. Answers to a request keep a
type of their own when they carry fields a client acts on; a job's failure is one type,
V2JobError, whose optional fields are set for the codes they belong to."""

from __future__ import annotations

from datetime import datetime

import strawberry

from jobql.schema.v2.enums import V2ErrorCode, V2JobStatus
from jobql.schema.v2.money import V2Money


@strawberry.interface(
    description="An expected failure. `retryable` says whether the same request may succeed later."
)
class V2Error:
    code: V2ErrorCode
    message: str
    retryable: bool
    request_id: str | None = strawberry.field(
        description="Quote it in bug reports; it is in the X-Request-ID header too."
    )


@strawberry.type(description="One reason an input or an output was refused.")
class V2Violation:
    path: str = strawberry.field(description='A JSON path, e.g. "params.text" or "result.label".')
    message: str


@strawberry.type(description="The request was malformed; `field` names the first bad field.")
class V2InvalidInput(V2Error):
    field: str
    violations: list[V2Violation]


@strawberry.type(
    description="No such object for this caller: also the answer for another caller's ids, "
    "for ids that are not well-formed and for a job of another API version."
)
class V2NotFound(V2Error):
    pass


@strawberry.type(description="The job has already finished.")
class V2JobNotCancellable(V2Error):
    status: V2JobStatus


@strawberry.type(description="This idempotency key was used with different parameters.")
class V2IdempotencyKeyReused(V2Error):
    job_id: strawberry.ID = strawberry.field(description="The job that holds the key.")


@strawberry.type(
    description="Too many submits in the window; retry after retryAfterSeconds (also in the "
    "Retry-After header)."
)
class V2RateLimited(V2Error):
    retry_after_seconds: int
    limit: int
    window_seconds: int


@strawberry.type(description="This job's worst-case cost would pass your daily cap.")
class V2CostLimitExceeded(V2Error):
    cap: V2Money
    spent: V2Money = strawberry.field(description="By your jobs that finished today.")
    reserved: V2Money = strawberry.field(description="Held by your active jobs.")
    resets_at: datetime


@strawberry.type(description="Too many active (queued + running) jobs; retry when one ends.")
class V2ConcurrencyLimitExceeded(V2Error):
    limit: int
    active: int


@strawberry.type(
    description="A server this request needed (the database, the event bus, the rate "
    "limiter's store) is briefly unreachable; nothing was wrong with the request. Retry after "
    "retryAfterSeconds (also in the Retry-After header); a submit retried with the same "
    "idempotency key creates the job at most once. On jobEvents the stream completes after "
    "this; subscribe again with afterSeq: resumeAfterSeq."
)
class V2ServiceUnavailable(V2Error):
    retry_after_seconds: int
    resume_after_seq: int | None = strawberry.field(
        description="On jobEvents: the seq of the last event this stream delivered (0 when "
        "none). Null elsewhere."
    )


@strawberry.type(description="Which detection rule fired on which input field.")
class V2InjectionFinding:
    rule: str
    path: str


@strawberry.type(
    description="The parameters look like a prompt-injection attempt; the task's policy is to "
    "refuse them. Nothing was created."
)
class V2PromptInjectionDetected(V2Error):
    findings: list[V2InjectionFinding]


@strawberry.type(
    description="Why a job failed (or stopped): `code` is one of PROVIDER_UNAVAILABLE, "
    "PROVIDER_TIMEOUT, PROVIDER_RATE_LIMITED, OUTPUT_SCHEMA_MISMATCH, CONTENT_FILTERED, "
    "DEADLINE_EXCEEDED, BUDGET_EXCEEDED, WORKER_LOST, INTERNAL. retryAfterSeconds and "
    "violations are filled for the codes they name (null and empty otherwise)."
)
class V2JobError(V2Error):
    retry_after_seconds: float | None = strawberry.field(
        description="PROVIDER_RATE_LIMITED: when the provider said a retry may succeed."
    )
    violations: list[V2Violation] = strawberry.field(
        description="OUTPUT_SCHEMA_MISMATCH: where the output broke the task's output schema; "
        "empty for other codes."
    )
