"""V2 job events, as jobEvents streams them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from jobql.schema.v2.enums import V2JobStatus
from jobql.schema.v2.errors import V2JobError, V2NotFound, V2ServiceUnavailable
from jobql.schema.v2.money import V2Money
from jobql.schema.v2.types import V2Job, V2Model, V2Usage


@strawberry.interface(
    description="One stored event of a job: seq is 1, 2, 3 … without gaps; subscribe with "
    "jobEvents(afterSeq: lastSeq) to resume."
)
class V2JobEvent:
    job_id: strawberry.ID = strawberry.field(description="The job's global id.")
    seq: int
    at: datetime


@strawberry.type(description="The job was accepted and waits for a worker.")
class V2JobQueued(V2JobEvent):
    pass


@strawberry.type(
    description="A worker started an attempt. On attempt > 1, discard the partial output you "
    "have: the job starts over."
)
class V2JobStarted(V2JobEvent):
    attempt: int


@strawberry.type(description="More output text; append it.")
class V2OutputDelta(V2JobEvent):
    text: str


@strawberry.type(description="The job entered a new phase (agent-style work).")
class V2Progress(V2JobEvent):
    # Nullable only so that it has V2Heartbeat.phase's type: one selection over
    # V2JobEventResult can then ask both for `phase` without an alias. Always set here.
    phase: str | None = strawberry.field(description="The new phase; always set on this event.")
    message: str


@strawberry.type(
    description="Still working: sent when nothing else was sent for a while. Live only: it "
    "has no seq and is never replayed."
)
class V2Heartbeat:
    job_id: strawberry.ID
    at: datetime
    status: V2JobStatus
    phase: str | None
    elapsed_ms: int
    output_tokens: int
    cost: V2Money = strawberry.field(description="Cost so far.")


@strawberry.interface(description="The last event of every job, with its aggregate usage.")
class V2JobFinished(V2JobEvent):
    usage: V2Usage
    duration_ms: int
    model: V2Model
    job: V2Job = strawberry.field(
        description="The job in its final state, so a normalized client cache (keyed by "
        "__typename and id) learns its status from the stream."
    )


@strawberry.type
class V2JobSucceeded(V2JobFinished):
    output: str
    result: JSON | None


@strawberry.type
class V2JobFailed(V2JobFinished):
    error: V2JobError


@strawberry.type
class V2JobCancelled(V2JobFinished):
    reason: str | None


V2JobEventResult = Annotated[
    V2JobQueued
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
        "V2JobEventResult",
        description="A job event; or V2NotFound, or V2ServiceUnavailable when an outage cut "
        "the stream (subscribe again with afterSeq: resumeAfterSeq): then the stream completes.",
    ),
]

# The members only reachable through the union's interfaces, for the schema's `types`.
EVENT_TYPES: tuple[type, ...] = (
    V2JobQueued,
    V2JobStarted,
    V2OutputDelta,
    V2Progress,
    V2Heartbeat,
    V2JobSucceeded,
    V2JobFailed,
    V2JobCancelled,
)
