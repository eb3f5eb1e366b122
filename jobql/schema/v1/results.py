"""V1 result unions: success or an expected failure, as data."""

from __future__ import annotations

from typing import Annotated

import strawberry

from jobql.schema.v1.errors import (
    V1ConcurrencyLimitExceeded,
    V1CostLimitExceeded,
    V1IdempotencyKeyReused,
    V1InvalidInput,
    V1JobNotCancellable,
    V1NotFound,
    V1PromptInjectionDetected,
    V1RateLimited,
    V1ServiceUnavailable,
)
from jobql.schema.v1.types import V1Job


@strawberry.type
class V1SubmitJobSuccess:
    job: V1Job
    deduplicated: bool = strawberry.field(
        description="True when an earlier submit with the same idempotency key made this job."
    )


@strawberry.type
class V1CancelJobSuccess:
    job: V1Job


V1JobLookup = Annotated[V1Job | V1NotFound | V1ServiceUnavailable, strawberry.union("V1JobLookup")]
V1SubmitJobResult = Annotated[
    V1SubmitJobSuccess
    | V1InvalidInput
    | V1IdempotencyKeyReused
    | V1RateLimited
    | V1CostLimitExceeded
    | V1ConcurrencyLimitExceeded
    | V1PromptInjectionDetected
    | V1ServiceUnavailable,
    strawberry.union("V1SubmitJobResult"),
]
V1CancelJobResult = Annotated[
    V1CancelJobSuccess | V1NotFound | V1JobNotCancellable | V1ServiceUnavailable,
    strawberry.union("V1CancelJobResult"),
]
