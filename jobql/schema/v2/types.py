"""V2 object types: jobs, tasks, the viewer and the Relay connection of jobs."""

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
from jobql.schema.v2.enums import V2JobStatus, V2TaskTier
from jobql.schema.v2.errors import V2JobError
from jobql.schema.v2.money import V2Money
from jobql.schema.v2.node import V2Node


@strawberry.type(description="The model a job ran (or runs) on.")
class V2Model:
    provider: str
    name: str
    version: str


@strawberry.type(description="The behavioural contract a job is pinned to.")
class V2Contract:
    api_version: str
    prompt_version: str
    model: V2Model


@strawberry.type(description="Tokens and money; partial while a job runs.")
class V2Usage:
    input_tokens: int
    output_tokens: int
    cost: V2Money

    @strawberry.field(description="inputTokens + outputTokens.")
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@strawberry.type(
    description="A prompt-injection finding on the job's parameters (the task's policy is "
    "to flag, not refuse)."
)
class V2SecurityFlag:
    rule: str
    path: str
    score: float


@strawberry.type(description="A unit of AI work, submitted through API v2.")
class V2Job(V2Node):
    task: str
    tier: V2TaskTier
    status: V2JobStatus
    params: JSON = strawberry.field(description="The task's parameters, defaults filled in.")
    metadata: JSON | None
    output: str = strawberry.field(description="The text so far; partial while running.")
    result: JSON | None = strawberry.field(
        description="Structured output, for tasks with an output schema."
    )
    phase: str | None
    error: V2JobError | None
    security_flags: list[V2SecurityFlag]
    usage: V2Usage
    max_cost: V2Money | None = strawberry.field(description="The budget set at submit.")
    contract: V2Contract
    attempts: int
    idempotency_key: str | None
    request_id: str | None = strawberry.field(description="The request that submitted the job.")
    last_seq: int = strawberry.field(
        description="The seq of the newest stored event: a cursor for jobEvents(afterSeq:)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    cancel_requested_at: datetime | None
    cancel_requested: bool = strawberry.field(
        description="True once a cancel was asked for. A running job stops within moments "
        "(its stream ends with V2JobCancelled) unless it finishes first."
    )
    events_url: str | None = strawberry.field(
        resolver=events_url_field("v2"), description=EVENTS_URL_DESCRIPTION
    )
    log_compacted: bool = strawberry.field(description=LOG_COMPACTED)
    log_expires_at: datetime | None = strawberry.field(
        resolver=log_expires_at_field(), description=LOG_EXPIRES_AT
    )
    expires_at: datetime | None = strawberry.field(
        resolver=expires_at_field(), description=EXPIRES_AT
    )


@strawberry.type
class V2JobEdge:
    cursor: str
    node: V2Job


@strawberry.type(description="Relay page info: where this page sits in the whole list.")
class V2PageInfo:
    has_next_page: bool = strawberry.field(description="More jobs follow endCursor (older).")
    has_previous_page: bool = strawberry.field(description="More jobs precede startCursor (newer).")
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="Your jobs, newest first.")
class V2JobConnection:
    edges: list[V2JobEdge]
    page_info: V2PageInfo


@strawberry.type(description="Money per million tokens.")
class V2Pricing:
    input_per_million_tokens: V2Money
    output_per_million_tokens: V2Money


@strawberry.type(
    description="A task clients can submit through API v2: its tier, model, prompt version, "
    "schemas and prices."
)
class V2Task(V2Node):
    name: str
    description: str
    tier: V2TaskTier
    prompt_version: str
    model: V2Model
    params_schema: JSON = strawberry.field(description="JSON Schema of submitJob's params.")
    output_schema: JSON | None = strawberry.field(description="JSON Schema of the job's result.")
    pricing: V2Pricing
    max_output_tokens: int
    deadline_seconds: int
    max_wait_seconds: int


@strawberry.type
class V2UsageToday:
    day: str = strawberry.field(description="The UTC day, YYYY-MM-DD.")
    jobs: int = strawberry.field(description="Jobs that finished today.")
    input_tokens: int
    output_tokens: int
    cost: V2Money = strawberry.field(description="Spent by jobs that finished today.")
    reserved: V2Money = strawberry.field(
        description="Held by active jobs: their worst-case cost until they finish."
    )
    remaining: V2Money = strawberry.field(description="dailyCostCap - cost - reserved.")


@strawberry.type(description="Your limits: your plan's defaults unless set for you.")
class V2Limits:
    rate_limit: int = strawberry.field(description="submitJob calls per window.")
    rate_window_seconds: int
    daily_cost_cap: V2Money
    max_active_jobs: int = strawberry.field(description="Queued + running jobs at once.")


@strawberry.type(description="The caller.")
class V2Viewer(V2Node):
    name: str
    plan: str = strawberry.field(
        description="Your plan (e.g. free, standard, pro): it sets your default limits. Not a "
        "task tier."
    )
    limits: V2Limits
    usage_today: V2UsageToday
    active_jobs: int
