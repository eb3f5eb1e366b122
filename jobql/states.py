"""The job state machine: which transitions exist, from which states, and what each writes.

Pure: no I/O. The stores apply what these functions decide, under the guard they return.

    QUEUED --claim--> RUNNING --succeed/fail/cancel--> SUCCEEDED | FAILED | CANCELLED
    QUEUED --cancel--> CANCELLED
    RUNNING --requeue (rescue) | hand back (shutdown)--> QUEUED
    RUNNING --lose (rescue after the last attempt)--> FAILED (WORKER_LOST) | CANCELLED
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from jobql.errors import ErrorCode, JobError
from jobql.events.types import EventType
from jobql.tasks.contracts import MICROS_PER_DOLLAR


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class Transition(StrEnum):
    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    REQUEUE = "requeue"  # rescue of an expired lease, attempts left
    HAND_BACK = "hand_back"  # a worker shutting down gives the job back
    LOSE = "lose"  # rescue of an expired lease after the last attempt


# transition -> (the states it may start from, the state it ends in); CANCEL and LOSE end
# in a state chosen by the decision functions below.
ALLOWED: dict[Transition, tuple[frozenset[JobStatus], frozenset[JobStatus]]] = {
    Transition.CLAIM: (frozenset({JobStatus.QUEUED}), frozenset({JobStatus.RUNNING})),
    Transition.SUCCEED: (frozenset({JobStatus.RUNNING}), frozenset({JobStatus.SUCCEEDED})),
    Transition.FAIL: (frozenset({JobStatus.RUNNING}), frozenset({JobStatus.FAILED})),
    Transition.CANCEL: (ACTIVE, frozenset({JobStatus.CANCELLED})),
    Transition.REQUEUE: (frozenset({JobStatus.RUNNING}), frozenset({JobStatus.QUEUED})),
    Transition.HAND_BACK: (frozenset({JobStatus.RUNNING}), frozenset({JobStatus.QUEUED})),
    Transition.LOSE: (
        frozenset({JobStatus.RUNNING}),
        frozenset({JobStatus.FAILED, JobStatus.CANCELLED}),
    ),
}


class TransitionRefused(Exception):
    """A transition that the job's current state does not allow."""

    def __init__(self, transition: Transition, status: JobStatus) -> None:
        super().__init__(f"{transition.value} is not allowed from {status.value}")
        self.transition = transition
        self.status = status


def allowed(transition: Transition, status: JobStatus) -> bool:
    return status in ALLOWED[transition][0]


def check(transition: Transition, status: JobStatus) -> None:
    if not allowed(transition, status):
        raise TransitionRefused(transition, status)


class JobFacts(Protocol):
    """What the decisions read of a job (the ORM row satisfies it)."""

    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def provider(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def cancel_requested_at(self) -> datetime | None: ...
    @property
    def cancel_reason(self) -> str | None: ...
    @property
    def lease_owner(self) -> str | None: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cost_micros(self) -> int: ...


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0


@dataclass(frozen=True)
class Guard:
    """The condition a write is applied under; a job that no longer matches is left alone
    (a worker that lost its lease, a cancel that lost a race, a rescue already done)."""

    status: JobStatus
    lease_owner: str | None = None
    lease_expired_at: datetime | None = None  # the lease must have expired before this

    @staticmethod
    def lease(worker_id: str) -> Guard:
        return Guard(JobStatus.RUNNING, lease_owner=worker_id)


@dataclass(frozen=True)
class Finish:
    """A terminal transition: the event it appends, the columns it writes, the usage it
    adds to the caller's day. ``output`` None means "what the log holds"."""

    status: JobStatus
    event_type: EventType
    payload: dict[str, Any]
    usage: Usage
    finished_at: datetime
    output: str | None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_reason: str | None = None
    cancel_requested: bool = False  # also record the cancel request (a queued job)
    billed: bool = True  # counts in the caller's daily usage (a job that never ran does not)

    def values(self) -> dict[str, Any]:
        """The job's columns after the transition."""
        values: dict[str, Any] = {
            "status": self.status.value,
            "finished_at": self.finished_at,
            "lease_owner": None,
            "lease_expires_at": None,
            "result": self.result,
            "error": self.error,
            "phase": None,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cost_micros": self.usage.cost_micros,
        }
        if self.output is not None:
            values["output"] = self.output
        if self.cancel_requested:
            values["cancel_requested_at"] = self.finished_at
            values["cancel_reason"] = self.cancel_reason
        return values


@dataclass(frozen=True)
class Requeue:
    """Back to the queue for another attempt; the next claim starts it from nothing."""

    transition: Transition

    @staticmethod
    def values() -> dict[str, Any]:
        return {"status": JobStatus.QUEUED.value, "lease_owner": None, "lease_expires_at": None}


def usage_payload(usage: Usage) -> dict[str, Any]:
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "costUsd": usage.cost_micros / MICROS_PER_DOLLAR,
    }


def terminal_payload(job: JobFacts, usage: Usage, finished_at: datetime) -> dict[str, Any]:
    """The aggregate every terminal event carries: tokens, cost, wall time, model version."""
    started_at = job.started_at or job.created_at
    return {
        "usage": usage_payload(usage),
        "costUsd": usage.cost_micros / MICROS_PER_DOLLAR,
        "durationMs": max(0, int((finished_at - started_at).total_seconds() * 1000)),
        "model": {"provider": job.provider, "name": job.model_name, "version": job.model_version},
    }


def claim_values(worker_id: str, lease_expires_at: datetime, now: datetime) -> dict[str, Any]:
    """QUEUED -> RUNNING: a new attempt starts from nothing (JobStarted{attempt} tells
    clients to drop what an earlier attempt streamed)."""
    return {
        "status": JobStatus.RUNNING.value,
        "lease_owner": worker_id,
        "lease_expires_at": lease_expires_at,
        "started_at": now,
        "output": "",
        "result": None,
        "phase": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_micros": 0,
    }


def succeed(
    job: JobFacts,
    *,
    output: str,
    result: dict[str, Any] | None,
    usage: Usage,
    at: datetime,
) -> Finish:
    check(Transition.SUCCEED, JobStatus(job.status))
    payload = terminal_payload(job, usage, at)
    payload["output"] = output
    payload["result"] = result
    return Finish(
        JobStatus.SUCCEEDED,
        EventType.JOB_SUCCEEDED,
        payload,
        usage,
        at,
        output=output,
        result=result,
    )


def fail(
    job: JobFacts, error: JobError, *, output: str | None, usage: Usage, at: datetime
) -> Finish:
    check(Transition.FAIL, JobStatus(job.status))
    payload = terminal_payload(job, usage, at)
    payload["error"] = error.to_json()
    return Finish(
        JobStatus.FAILED,
        EventType.JOB_FAILED,
        payload,
        usage,
        at,
        output=output,
        error=error.to_json(),
    )


def cancel(
    job: JobFacts, reason: str | None, *, output: str | None, usage: Usage, at: datetime
) -> Finish:
    """A cancel that takes effect: a queued job at once, a running one by its worker."""
    status = JobStatus(job.status)
    check(Transition.CANCEL, status)
    payload = terminal_payload(job, usage, at)
    payload["reason"] = reason
    return Finish(
        JobStatus.CANCELLED,
        EventType.JOB_CANCELLED,
        payload,
        usage,
        at,
        output=output,
        cancel_reason=reason,
        cancel_requested=status is JobStatus.QUEUED,
        billed=status is not JobStatus.QUEUED,
    )


class CancelAction(StrEnum):
    NOW = "now"  # queued: finish it here
    REQUEST = "request"  # running: record the request, the worker finishes it
    REFUSE = "refuse"  # terminal: JobNotCancellable


def cancel_action(status: JobStatus) -> CancelAction:
    if status is JobStatus.QUEUED:
        return CancelAction.NOW
    if status is JobStatus.RUNNING:
        return CancelAction.REQUEST
    return CancelAction.REFUSE


def rescue(job: JobFacts, at: datetime) -> Requeue | Finish:
    """An expired lease: another attempt if any is left (and no cancel is pending), else
    the job ends as WORKER_LOST, or CANCELLED when a cancel was requested. The output is
    what the log holds; the usage is what the lost worker last recorded."""
    status = JobStatus(job.status)
    if job.cancel_requested_at is None and job.attempts < job.max_attempts:
        check(Transition.REQUEUE, status)
        return Requeue(Transition.REQUEUE)
    check(Transition.LOSE, status)
    usage = Usage(job.input_tokens, job.output_tokens, job.cost_micros)
    if job.cancel_requested_at is not None:
        return cancel(job, job.cancel_reason, output=None, usage=usage, at=at)
    return fail(job, JobError(ErrorCode.WORKER_LOST), output=None, usage=usage, at=at)


def rescue_guard(job: JobFacts, at: datetime) -> Guard:
    """A rescue applies only while the job is still the vanished worker's, still expired."""
    return Guard(JobStatus.RUNNING, lease_owner=job.lease_owner, lease_expired_at=at)
