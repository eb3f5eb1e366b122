"""The v1 schema: root types wired to resolvers, hardened like every version
(jobql/schema/hardening.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry

from jobql.resolvers.v1 import jobs as r
from jobql.schema.hardening import SchemaOptions, hardened_schema
from jobql.schema.v1 import errors as e
from jobql.schema.v1.enums import V1JobStatus
from jobql.schema.v1.events import (
    V1Heartbeat,
    V1JobCancelled,
    V1JobEventResult,
    V1JobFailed,
    V1JobQueued,
    V1JobStarted,
    V1JobSucceeded,
    V1OutputDelta,
    V1Progress,
)
from jobql.schema.v1.inputs import V1SubmitJobInput
from jobql.schema.v1.results import V1CancelJobResult, V1JobLookup, V1SubmitJobResult
from jobql.schema.v1.types import V1JobConnection, V1Task, V1Viewer


@strawberry.type
class Query:
    job: V1JobLookup = strawberry.field(resolver=r.job, description="One of your jobs.")
    jobs: V1JobConnection = strawberry.field(
        resolver=r.jobs, description="Your jobs, newest first."
    )
    tasks: list[V1Task] = strawberry.field(
        resolver=r.tasks, description="The tasks you can submit, with their contracts."
    )
    viewer: V1Viewer = strawberry.field(resolver=r.viewer, description="Who you are.")


@strawberry.type
class Mutation:
    submit_job: V1SubmitJobResult = strawberry.mutation(
        resolver=r.submit_job,
        description="Queue a job and answer at once (or after `wait`). Retries with the same "
        "idempotencyKey (or Idempotency-Key header) return the same job.",
    )
    cancel_job: V1CancelJobResult = strawberry.mutation(
        resolver=r.cancel_job, description="Stop a queued or running job."
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The job's events after `after` (default: from the start), then live ones; "
        "completes after the terminal event."
    )
    async def job_events(
        self, info: r.CtxInfo, job_id: strawberry.ID, after: int | None = None
    ) -> AsyncGenerator[V1JobEventResult, None]:
        async for item in r.job_events(info, job_id, after):
            yield item


# Types only reachable through interfaces must be registered explicitly.
EXTRA_TYPES = [
    V1JobQueued,
    V1JobStarted,
    V1OutputDelta,
    V1Progress,
    V1Heartbeat,
    V1JobSucceeded,
    V1JobFailed,
    V1JobCancelled,
    e.V1ProviderUnavailable,
    e.V1ProviderTimeout,
    e.V1ProviderRateLimited,
    e.V1OutputSchemaMismatch,
    e.V1ContentFiltered,
    e.V1DeadlineExceeded,
    e.V1BudgetExceeded,
    e.V1WorkerLost,
    e.V1InternalError,
]


def build_schema(options: SchemaOptions | None = None, **overrides: Any) -> strawberry.Schema:
    """The v1 schema, hardened with ``options`` (defaults, or some set by name)."""
    return hardened_schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=EXTRA_TYPES,
        options=options or SchemaOptions.of(**overrides),
    )


__all__ = ["V1JobStatus", "V1SubmitJobInput", "build_schema"]
