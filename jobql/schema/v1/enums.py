"""V1 enums."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Where a job is in its life.")
class V1JobStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@strawberry.enum(
    description="simple: 15 s, sync wait allowed; generative: 60 s, streamed; "
    "agent: long-running, job pattern only."
)
class V1Tier(Enum):
    SIMPLE = "simple"
    GENERATIVE = "generative"
    AGENT = "agent"
