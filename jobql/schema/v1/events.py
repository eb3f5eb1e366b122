"""V1 job events, as jobEvents streams them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from jobql.schema.v1.enums import V1JobStatus
from jobql.schema.v1.errors import V1Error, V1NotFound, V1ServiceUnavailable
from jobql.schema.v1.types import V1Job, V1Model, V1Usage


@strawberry.interface(
    description="One event of a job. Stored events have a seq (1, 2, 3 … "
    "without gaps); reconnect with jobEvents(after: lastSeq) to resume."
)
class V1JobEvent:
    job_id: strawberry.ID
    seq: int
    at: datetime


@strawberry.type(description="The job was accepted and waits for a worker.")
class V1JobQueued(V1JobEvent):
    pass


@strawberry.type(
    description="A worker started an attempt. On attempt > 1, discard the partial "
    "output you have: the job starts over."
)
class V1JobStarted(V1JobEvent):
    attempt: int


@strawberry.type(description="More output text; append it.")
class V1OutputDelta(V1JobEvent):
    text: str


@strawberry.type(description="The job entered a new phase (agent-style work).")
class V1Progress(V1JobEvent):
    phase: str
    message: str


@strawberry.type(
    description="Still working: sent when nothing else was sent for a while. "
    "Live only: it has no seq and is never replayed."
)
class V1Heartbeat:
    job_id: strawberry.ID
    at: datetime
    status: V1JobStatus
    current_phase: str | None
    elapsed_ms: int
    output_tokens: int
    cost_usd: float


@strawberry.interface(description="The last event of every job, with its aggregate usage.")
class V1JobFinished(V1JobEvent):
    usage: V1Usage
    cost_usd: float
    duration_ms: int
    model: V1Model
    job: V1Job = strawberry.field(
        description="The job in its final state, so a normalized client cache (keyed by "
        "__typename and id) learns its status from the stream."
    )


@strawberry.type
class V1JobSucceeded(V1JobFinished):
    output: str
    result: JSON | None


@strawberry.type
class V1JobFailed(V1JobFinished):
    error: V1Error


@strawberry.type
class V1JobCancelled(V1JobFinished):
    reason: str | None


V1JobEventResult = Annotated[
    V1JobQueued
    | V1JobStarted
    | V1OutputDelta
    | V1Progress
    | V1Heartbeat
    | V1JobSucceeded
    | V1JobFailed
    | V1JobCancelled
    | V1NotFound
    | V1ServiceUnavailable,
    strawberry.union(
        "V1JobEventResult",
        description="A job event; or V1NotFound, or V1ServiceUnavailable when an outage cut "
        "the stream (subscribe again with after: resumeAfter): then the stream completes.",
    ),
]
