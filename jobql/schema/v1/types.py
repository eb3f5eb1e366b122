"""V1 object and enum types for jobs, tasks and the viewer."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from jobql.resolvers.events_url import DESCRIPTION as EVENTS_URL_DESCRIPTION
from jobql.resolvers.events_url import events_url_field
from jobql.resolvers.retention import (
    EXPIRES_AT,
    LOG_COMPACTED,
    LOG_EXPIRES_AT,
    expires_at_field,
    log_expires_at_field,
)
from jobql.schema.v1.enums import V1JobStatus, V1Tier
from jobql.schema.v1.errors import V1Error


@strawberry.type(description="The model a job ran (or runs) on.")
class V1Model:
    provider: str
    name: str
    version: str


@strawberry.type(description="The behavioural contract a job is pinned to.")
class V1Contract:
    api_version: str
    prompt_version: str
    model: V1Model


@strawberry.type(description="Tokens and dollars; partial while a job runs.")
class V1Usage:
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @strawberry.field(description="inputTokens + outputTokens.")
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@strawberry.type(
    description="A prompt-injection finding on the job's input (the task's "
    "policy is to flag, not refuse)."
)
class V1SecurityFlag:
    rule: str
    path: str
    score: float


@strawberry.type(description="A unit of AI work.")
class V1Job:
    id: strawberry.ID
    task: str
    tier: V1Tier
    status: V1JobStatus
    input: JSON
    metadata: JSON | None
    output: str = strawberry.field(description="The text so far; partial while running.")
    result: JSON | None = strawberry.field(
        description="Structured output, for tasks with an output schema."
    )
    phase: str | None
    error: V1Error | None
    security_flags: list[V1SecurityFlag]
    usage: V1Usage
    contract: V1Contract
    attempts: int
    idempotency_key: str | None
    request_id: str | None = strawberry.field(description="The request that submitted the job.")
    last_seq: int = strawberry.field(
        description="The seq of the newest stored event: a cursor for jobEvents(after:)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    cancel_requested_at: datetime | None
    cancel_requested: bool = strawberry.field(
        description="True once a cancel was asked for. A running job stops within moments "
        "(its stream ends with V1JobCancelled) unless it finishes first."
    )
    events_url: str | None = strawberry.field(
        resolver=events_url_field("v1"), description=EVENTS_URL_DESCRIPTION
    )
    log_compacted: bool = strawberry.field(description=LOG_COMPACTED)
    log_expires_at: datetime | None = strawberry.field(
        resolver=log_expires_at_field(), description=LOG_EXPIRES_AT
    )
    expires_at: datetime | None = strawberry.field(
        resolver=expires_at_field(), description=EXPIRES_AT
    )


@strawberry.type
class V1JobEdge:
    cursor: str
    node: V1Job


@strawberry.type
class V1PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class V1JobConnection:
    edges: list[V1JobEdge]
    page_info: V1PageInfo


@strawberry.type(description="Dollars per 1,000 tokens.")
class V1Pricing:
    input_per_1k_tokens_usd: float
    output_per_1k_tokens_usd: float


@strawberry.type(
    description="A task clients can submit: its tier, model, prompt version, schemas and prices."
)
class V1Task:
    name: str
    description: str
    tier: V1Tier
    prompt_version: str
    model: V1Model
    input_schema: JSON
    output_schema: JSON | None
    pricing: V1Pricing
    max_output_tokens: int
    deadline_seconds: int
    max_wait_seconds: int


@strawberry.type
class V1UsageToday:
    day: str = strawberry.field(description="The UTC day, YYYY-MM-DD.")
    jobs: int = strawberry.field(description="Jobs that finished today.")
    input_tokens: int
    output_tokens: int
    cost_usd: float = strawberry.field(description="Spent by jobs that finished today.")
    reserved_usd: float = strawberry.field(
        description="Held by active jobs: their worst-case cost until they finish."
    )
    remaining_usd: float = strawberry.field(description="dailyCostCapUsd - cost - reserved.")


@strawberry.type(description="Your limits: your tier's defaults unless set for you.")
class V1Limits:
    rate_limit: int = strawberry.field(description="submitJob calls per window.")
    rate_window_seconds: int
    daily_cost_cap_usd: float
    max_active_jobs: int = strawberry.field(description="Queued + running jobs at once.")


@strawberry.type(description="The caller.")
class V1Viewer:
    id: strawberry.ID
    name: str
    tier: str
    limits: V1Limits
    usage_today: V1UsageToday
    active_jobs: int
