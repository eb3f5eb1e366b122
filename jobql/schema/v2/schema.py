"""The v2 schema: root types wired to resolvers, hardened like every version
(jobql/schema/hardening.py). Fields are added here, one line each, with their resolvers in
jobql/resolvers/v2/."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import strawberry

from jobql.resolvers.v2 import catalog, jobs, nodes, usage
from jobql.resolvers.v2.events import job_events
from jobql.resolvers.v2.lookup import CtxInfo
from jobql.resolvers.v2.run import run_job
from jobql.schema.hardening import SchemaOptions, hardened_schema
from jobql.schema.v2.errors import V2JobError
from jobql.schema.v2.events import EVENT_TYPES, V2JobEventResult
from jobql.schema.v2.inputs import V2SubmitJobInput
from jobql.schema.v2.node import V2Node
from jobql.schema.v2.results import V2CancelJobResult, V2JobLookup, V2SubmitJobResult
from jobql.schema.v2.run import V2RunJobEvent
from jobql.schema.v2.types import V2Job, V2JobConnection, V2Task, V2Viewer
from jobql.schema.v2.usage import V2UsageResult


@strawberry.type
class Query:
    node: V2Node | None = strawberry.field(
        resolver=nodes.node,
        description="Any object by its global id (V2Job, V2Task, V2Viewer); null when the id "
        "stands for nothing you may see.",
    )
    job: V2JobLookup = strawberry.field(resolver=jobs.job, description="One of your v2 jobs.")
    jobs: V2JobConnection = strawberry.field(
        resolver=jobs.jobs,
        description="Your v2 jobs, newest first: `first`/`after` pages forwards (older), "
        "`last`/`before` backwards (newer).",
    )
    tasks: list[V2Task] = strawberry.field(
        resolver=catalog.tasks, description="The tasks of API v2, with their contracts."
    )
    viewer: V2Viewer = strawberry.field(resolver=catalog.viewer, description="Who you are.")
    usage: V2UsageResult = strawberry.field(
        resolver=usage.usage,
        description="Your usage (jobs, tokens, cost) over UTC days `from` to `to`, both "
        "included, grouped by any of DAY, TASK, MODEL; through every API version.",
    )


@strawberry.type
class Mutation:
    submit_job: V2SubmitJobResult = strawberry.mutation(
        resolver=jobs.submit_job,
        description="Queue a job and answer at once (or after `waitSeconds`). Retries with the "
        "same idempotencyKey (or Idempotency-Key header) return the same job.",
    )
    cancel_job: V2CancelJobResult = strawberry.mutation(
        resolver=jobs.cancel_job, description="Stop a queued or running job."
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The job's events after `afterSeq` (default: from the start), then live "
        "ones; completes after the terminal event."
    )
    async def job_events(
        self, info: CtxInfo, id: strawberry.ID, after_seq: int | None = None
    ) -> AsyncGenerator[V2JobEventResult, None]:
        async for item in job_events(info, id, after_seq):
            yield item

    @strawberry.subscription(
        description="Submit a job (as submitJob) and stream it: V2RunJobAccepted, then its "
        "events, then completion. The job belongs to this subscription: unsubscribing or "
        "losing the connection before the terminal event cancels it (client_disconnected), "
        "unless `detach` is true. See docs/run-job.md."
    )
    async def run_job(
        self, info: CtxInfo, input: V2SubmitJobInput, detach: bool | None = False
    ) -> AsyncGenerator[V2RunJobEvent, None]:
        # aclosing: leaving closes the run at once (it cancels the job it owns).
        async with aclosing(run_job(info, input, detach)) as items:
            async for item in items:
                yield item


# Types only reachable through interfaces must be registered explicitly.
EXTRA_TYPES: list[type] = [*EVENT_TYPES, V2Job, V2Task, V2Viewer, V2JobError]


def build_schema(options: SchemaOptions | None = None, **overrides: Any) -> strawberry.Schema:
    """The v2 schema, hardened with ``options`` (defaults, or some set by name)."""
    return hardened_schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=EXTRA_TYPES,
        options=options or SchemaOptions.of(**overrides),
    )


__all__ = ["build_schema"]
