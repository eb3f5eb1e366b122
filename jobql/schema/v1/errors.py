"""V1 errors as data: every expected failure implements V1Error."""

from __future__ import annotations

from datetime import datetime

import strawberry

from jobql.errors import ErrorCode
from jobql.schema.v1.enums import V1JobStatus

V1ErrorCode = strawberry.enum(ErrorCode, name="V1ErrorCode", description="What went wrong.")


@strawberry.interface(
    description="An expected failure. `retryable` says whether the same request may succeed later."
)
class V1Error:
    code: V1ErrorCode  # type: ignore[valid-type]
    message: str
    retryable: bool
    request_id: str | None = strawberry.field(
        description="Quote it in bug reports; it is in the X-Request-ID header too."
    )


@strawberry.type
class V1Violation:
    path: str
    message: str


@strawberry.type(description="The request was malformed; `field` names the first bad field.")
class V1InvalidInput(V1Error):
    field: str
    violations: list[V1Violation]


@strawberry.type(description="No such job for this caller.")
class V1NotFound(V1Error):
    pass


@strawberry.type(description="The job has already finished.")
class V1JobNotCancellable(V1Error):
    status: V1JobStatus


@strawberry.type(description="This idempotency key was used with a different input.")
class V1IdempotencyKeyReused(V1Error):
    job_id: strawberry.ID


@strawberry.type(
    description="Too many submits in the window; retry after retryAfterSeconds "
    "(also in the Retry-After header)."
)
class V1RateLimited(V1Error):
    retry_after_seconds: int
    limit: int
    window_seconds: int


@strawberry.type(description="This job's worst-case cost would pass your daily cap.")
class V1CostLimitExceeded(V1Error):
    cap_usd: float
    spent_usd: float
    reserved_usd: float = strawberry.field(description="Held by your active jobs.")
    resets_at: datetime


@strawberry.type(description="Too many active (queued + running) jobs; retry when one ends.")
class V1ConcurrencyLimitExceeded(V1Error):
    limit: int
    active: int


@strawberry.type(
    description="A server this request needed (the database, the event bus, the rate "
    "limiter's store) is briefly unreachable; nothing was wrong with the request. Retry after "
    "retryAfterSeconds (also in the Retry-After header). Retry a submit with the same "
    "idempotency key: it creates the job at most once. On jobEvents the stream completes "
    "after this; subscribe again with after: resumeAfter."
)
class V1ServiceUnavailable(V1Error):
    retry_after_seconds: int
    # Not `lastSeq`: V1Job.lastSeq is Int!, and one selection set over V1JobLookup could
    # not ask for both.
    resume_after: int | None = strawberry.field(
        description="On jobEvents: the seq of the last event this stream delivered (0 when "
        "none); subscribe again with jobEvents(after: resumeAfter) to lose nothing. Null "
        "elsewhere."
    )


@strawberry.type(description="Which detection rule fired on which input field.")
class V1InjectionFinding:
    rule: str
    path: str


@strawberry.type(
    description="The input looks like a prompt-injection attempt; the task's "
    "policy is to refuse it. Nothing was created."
)
class V1PromptInjectionDetected(V1Error):
    findings: list[V1InjectionFinding]


@strawberry.type
class V1ProviderUnavailable(V1Error):
    pass


@strawberry.type(description="The provider is up but too slow.")
class V1ProviderTimeout(V1Error):
    pass


@strawberry.type
class V1ProviderRateLimited(V1Error):
    retry_after_seconds: float | None


@strawberry.type
class V1OutputSchemaMismatch(V1Error):
    violations: list[V1Violation]


@strawberry.type
class V1ContentFiltered(V1Error):
    pass


@strawberry.type
class V1DeadlineExceeded(V1Error):
    pass


@strawberry.type
class V1BudgetExceeded(V1Error):
    pass


@strawberry.type
class V1WorkerLost(V1Error):
    pass


@strawberry.type
class V1InternalError(V1Error):
    pass
