"""V2 enums."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Where a job is in its life.")
class V2JobStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@strawberry.enum(
    description="A task's tier (not your plan, which is viewer.plan). SIMPLE: 15 s, "
    "waitSeconds allowed; GENERATIVE: 60 s, streamed; AGENT: long-running, job pattern only."
)
class V2TaskTier(Enum):
    SIMPLE = "simple"
    GENERATIVE = "generative"
    AGENT = "agent"


@strawberry.enum(description="What went wrong; `retryable` on the error says if a retry can help.")
class V2ErrorCode(Enum):
    # Answers to a request.
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    JOB_NOT_CANCELLABLE = "JOB_NOT_CANCELLABLE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    RATE_LIMITED = "RATE_LIMITED"
    COST_LIMIT_EXCEEDED = "COST_LIMIT_EXCEEDED"
    CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
    PROMPT_INJECTION_DETECTED = "PROMPT_INJECTION_DETECTED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    # Failures of a job (V2JobError).
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    OUTPUT_SCHEMA_MISMATCH = "OUTPUT_SCHEMA_MISMATCH"
    CONTENT_FILTERED = "CONTENT_FILTERED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    WORKER_LOST = "WORKER_LOST"
    INTERNAL = "INTERNAL"
