"""What runJob streams: the accepted job first (or why the submit was refused), then the
job's events."""

from __future__ import annotations

from typing import Annotated

import strawberry

from jobql.schema.v2.errors import (
    V2ConcurrencyLimitExceeded,
    V2CostLimitExceeded,
    V2IdempotencyKeyReused,
    V2InvalidInput,
    V2NotFound,
    V2PromptInjectionDetected,
    V2RateLimited,
    V2ServiceUnavailable,
)
from jobql.schema.v2.events import (
    V2Heartbeat,
    V2JobCancelled,
    V2JobFailed,
    V2JobQueued,
    V2JobStarted,
    V2JobSucceeded,
    V2OutputDelta,
    V2Progress,
)
from jobql.schema.v2.types import V2Job


@strawberry.type(
    description="runJob's first item: the job it runs, before any of the job's events."
)
class V2RunJobAccepted:
    job: V2Job
    deduplicated: bool = strawberry.field(
        description="True when an earlier submit with the same idempotency key made this job: "
        "this subscription re-attached to it."
    )
    owned: bool = strawberry.field(
        description="True when this subscription owns the job: unsubscribing, or losing the "
        "connection, before the terminal event cancels it (reason client_disconnected). "
        "False with detach: true and when re-attached (only the subscription that created "
        "the job owns it)."
    )


V2RunJobEvent = Annotated[
    V2RunJobAccepted
    | V2InvalidInput
    | V2IdempotencyKeyReused
    | V2RateLimited
    | V2CostLimitExceeded
    | V2ConcurrencyLimitExceeded
    | V2PromptInjectionDetected
    | V2JobQueued
    | V2JobStarted
    | V2OutputDelta
    | V2Progress
    | V2Heartbeat
    | V2JobSucceeded
    | V2JobFailed
    | V2JobCancelled
    | V2NotFound
    | V2ServiceUnavailable,
    strawberry.union(
        "V2RunJobEvent",
        description="runJob's items: V2RunJobAccepted, then the job's events up to its "
        "terminal event; or, alone, why the submit was refused (as submitJob answers it). "
        "V2ServiceUnavailable after V2RunJobAccepted means an outage cut the stream: the job "
        "goes on, follow it with jobEvents(id:, afterSeq: resumeAfterSeq).",
    ),
]
