"""The v1 schema: root types wired to resolvers, plus Strawberry's safety extensions."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import strawberry
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.config import StrawberryConfig

from jobql.resolvers.v1 import jobs as r
from jobql.schema.base import Schema
from jobql.schema.cost import CostModel, QueryCostLimiter
from jobql.schema.directives import LimitErrorsOnly, directives_rule
from jobql.schema.extensions import (
    MaskInternalErrors,
    ResponseExtensions,
    SafeParserCache,
    should_mask,
)
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


def build_schema(
    *,
    introspection: bool = True,
    field_suggestions: bool = False,
    max_depth: int = 10,
    max_aliases: int = 30,
    max_tokens: int = 2000,
    max_directives: int = 50,
    max_directives_per_node: int = 4,
    max_cost: int = 5000,
    default_page_size: int = 20,
    max_page_size: int = 100,
) -> strawberry.Schema:
    # Validation rules are built once so that, with the parser cache handing back the same
    # document for the same query text, ValidationCache hits: repeated operations (what
    # real clients send) skip parsing and validation, about half of a submit's CPU.
    rules: list[type[ASTValidationRule]] = [
        depth_rule(max_depth, None),
        aliases_rule(max_aliases),
        directives_rule(max_directives, max_directives_per_node),
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    cost_model = CostModel(default_page_size=default_page_size, max_page_size=max_page_size)
    # Factories, not instances: Strawberry builds fresh extensions for every operation.
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        ResponseExtensions,
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: SafeParserCache(maxsize=256),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=256),
        LimitErrorsOnly,
        lambda: QueryCostLimiter(max_cost, cost_model),
        lambda: MaskInternalErrors(
            should_mask_error=should_mask,
            error_message="Internal error; quote the request id when reporting it.",
        ),
    ]
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=EXTRA_TYPES,
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=not field_suggestions),
    )


__all__ = ["V1JobStatus", "V1SubmitJobInput", "build_schema"]
