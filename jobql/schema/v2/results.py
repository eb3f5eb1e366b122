"""V2 result unions: success or an expected failure, as data."""

from __future__ import annotations

from typing import Annotated

import strawberry

from jobql.schema.v2.errors import (
    V2ConcurrencyLimitExceeded,
    V2CostLimitExceeded,
    V2IdempotencyKeyReused,
    V2InvalidInput,
    V2JobNotCancellable,
    V2NotFound,
    V2PromptInjectionDetected,
    V2RateLimited,
    V2ServiceUnavailable,
)
from jobql.schema.v2.types import V2Job


@strawberry.type
class V2SubmitJobSuccess:
    job: V2Job
    deduplicated: bool = strawberry.field(
        description="True when an earlier submit with the same idempotency key made this job."
    )


@strawberry.type
class V2CancelJobSuccess:
    job: V2Job


V2JobLookup = Annotated[V2Job | V2NotFound | V2ServiceUnavailable, strawberry.union("V2JobLookup")]
V2SubmitJobResult = Annotated[
    V2SubmitJobSuccess
    | V2InvalidInput
    | V2IdempotencyKeyReused
    | V2RateLimited
    | V2CostLimitExceeded
    | V2ConcurrencyLimitExceeded
    | V2PromptInjectionDetected
    | V2ServiceUnavailable,
    strawberry.union("V2SubmitJobResult"),
]
V2CancelJobResult = Annotated[
    V2CancelJobSuccess | V2NotFound | V2JobNotCancellable | V2ServiceUnavailable,
    strawberry.union("V2CancelJobResult"),
]
