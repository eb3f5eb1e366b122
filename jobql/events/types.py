"""Job event types and the stored form every layer passes around."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    JOB_QUEUED = "JobQueued"
    JOB_STARTED = "JobStarted"
    OUTPUT_DELTA = "OutputDelta"
    PROGRESS = "Progress"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    JOB_CANCELLED = "JobCancelled"


TERMINAL_EVENTS: frozenset[EventType] = frozenset(
    {EventType.JOB_SUCCEEDED, EventType.JOB_FAILED, EventType.JOB_CANCELLED}
)


@dataclass(frozen=True)
class StoredEvent:
    """One entry of a job's durable log."""

    job_id: str
    seq: int
    type: EventType
    payload: dict[str, Any]
    at: datetime

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


@dataclass(frozen=True)
class Heartbeat:
    """Live-only "still working" marker: never stored, carries no seq."""

    job_id: str
    at: datetime
    status: str
    phase: str | None
    elapsed_ms: int
    output_tokens: int
    cost_micros: int


StreamItem = StoredEvent | Heartbeat
