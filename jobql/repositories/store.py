"""The job store: what the services and the worker may ask of jobs and their event logs.

One method per intent; implementations hold all the SQL (repositories/jobs.py) or none at
all (repositories/memory.py, the in-memory twin for fast tests). Both pass one contract
suite (tests/contract/).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from jobql.events.types import EventType, StoredEvent
from jobql.models import Job
from jobql.services.retention import PruneCounts, RetentionPolicy
from jobql.states import CancelAction, Finish, Guard, JobStatus, Usage


@dataclass(frozen=True)
class PageCursor:
    created_at: datetime
    job_id: str


@dataclass(frozen=True)
class CallerLoad:
    active: int  # queued + running jobs
    reserved_micros: int  # held by those jobs
    spent_micros: int  # by jobs that finished today
    keyed_job_id: str | None = None  # the caller's job holding the asked-for idempotency key


@dataclass(frozen=True)
class NewEvent:
    type: EventType
    payload: dict[str, Any]


@dataclass(frozen=True)
class EventWrite:
    """Events a worker appends to one job it holds, with the job's usage so far."""

    job_id: str
    worker_id: str
    events: tuple[NewEvent, ...]
    usage: Usage
    phase: str | None = None  # None leaves the job's phase as it is
    # The job's last seq the events follow. With it the append is idempotent: a write
    # retried after its commit landed but its answer was lost (a dropped connection) finds
    # its events stored and answers them instead of appending them again.
    after_seq: int | None = None


@dataclass(frozen=True)
class Claimed:
    job: Job
    started: StoredEvent  # JobStarted{attempt}, written with the claim


@dataclass(frozen=True)
class CancelOutcome:
    job: Job
    action: CancelAction
    event: StoredEvent | None = None  # the JobCancelled of a queued job


@dataclass(frozen=True)
class Rescued:
    requeued: bool
    event: StoredEvent | None = None  # the terminal event of a job out of attempts
    status: JobStatus | None = None  # and the state it ended in


class IdempotencyKeyTaken(Exception):
    """Another submit stored a job with this caller's idempotency key first."""


class Admission(Protocol):
    """A submit under its caller's lock: what the limits are checked against, then the
    insert. Leaving the block commits; an exception rolls back."""

    load: CallerLoad | None  # None when limits are not enforced
    keyed_job: Job | None  # the job holding the asked-for idempotency key

    async def insert(self, job: Job) -> StoredEvent:
        """Store the new job with its JobQueued (seq 1). Raises IdempotencyKeyTaken."""
        ...

    async def forget_key(self, job_id: str) -> None:
        """Release an expired idempotency key held by ``job_id``."""
        ...


class JobStore(Protocol):
    # -- reads: a running job's output is built from its log -----------------------------

    async def get(self, job_id: str, *, with_output: bool = True) -> Job | None:
        """The job; without its output (left empty) when the caller needs only its state."""
        ...

    async def get_owned(
        self, principal_id: str, job_id: str, *, with_output: bool = True
    ) -> Job | None: ...

    async def list_owned(
        self,
        principal_id: str,
        *,
        limit: int,
        after: PageCursor | None,
        statuses: Sequence[JobStatus] | None,
        before: PageCursor | None = None,
        oldest_first: bool = False,
        api_version: str | None = None,
    ) -> list[Job]:
        """The caller's jobs ordered by (created_at, id), newest first: those below ``after``
        and above ``before`` (both exclusive), of ``api_version`` when given. With
        ``oldest_first`` the order is reversed, so ``limit`` keeps the oldest of them (the
        page just above ``after``/below ``before`` when paging backwards)."""
        ...

    async def events_after(
        self, job_id: str, after: int, limit: int = 500
    ) -> list[StoredEvent]: ...

    async def by_idempotency_key(self, principal_id: str, key: str) -> Job | None: ...

    async def cancel_reason(self, job_id: str) -> str | None: ...

    async def count_by_status(self) -> dict[str, int]:
        """Jobs per active status (queue depth)."""
        ...

    # -- submit and cancel ---------------------------------------------------------------

    def admission(
        self, principal_id: str, *, day: date | None, key: str | None
    ) -> AbstractAsyncContextManager[Admission]:
        """Lock the caller; with ``day``, load what its limits are checked against."""
        ...

    async def cancel(
        self, principal_id: str, job_id: str, reason: str | None, at: datetime
    ) -> CancelOutcome | None:
        """Cancel a queued job now, or record the request on a running one (its worker
        finishes it). None when the caller has no such job."""
        ...

    async def purge_idempotency_keys(self, created_before: datetime) -> int: ...

    # -- the queue -----------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[Claimed]:
        """Up to ``limit`` queued jobs, oldest first, each with its JobStarted{attempt}."""
        ...

    async def held(self, worker_id: str) -> list[Job]:
        """The running jobs whose lease ``worker_id`` holds: a worker whose claim raised
        after its commit landed (the answer was lost) finds the jobs it took here."""
        ...

    async def renew_leases(
        self, worker_id: str, job_ids: Sequence[str], lease: timedelta
    ) -> dict[str, datetime | None]:
        """Extend this worker's leases; answer {job_id: cancel_requested_at}. A job missing
        from the answer is no longer the worker's."""
        ...

    async def expired_leases(self, limit: int = 100) -> list[Job]: ...

    async def rescue(self, job: Job, at: datetime) -> Rescued:
        """Requeue a job whose lease expired, or end it when it is out of attempts."""
        ...

    async def hand_back(self, job_id: str, worker_id: str) -> bool:
        """Give a running job back to the queue (shutdown)."""
        ...

    async def append_events(self, writes: Sequence[EventWrite]) -> list[list[StoredEvent] | None]:
        """Append each write's events after its job's last seq, in one transaction; None for
        a job no longer held by the write's worker (nothing is written for it).

        A write with ``after_seq`` is appended only while the job's last seq is still
        ``after_seq``; when the job already holds exactly these events after it (the same
        write, committed before), the stored events are the answer and nothing is added."""
        ...

    async def finish(self, job_id: str, finish: Finish, guard: Guard) -> StoredEvent | None:
        """Apply a terminal transition, append its event and add its usage to the
        caller's day, if the job still matches ``guard``."""
        ...

    # -- retention (services/retention.py) ------------------------------------------------

    async def prune(
        self, policy: RetentionPolicy, now: datetime, *, limit: int = 500
    ) -> PruneCounts:
        """One batch as of ``now``: delete up to ``limit`` finished jobs past their job
        window (with their events), then compact the logs of up to ``limit`` past their log
        window to the terminal event (its seq unchanged) and, for a job with output, one
        OutputDelta holding all of it at the seq before. Each step is its own short
        transaction; concurrent calls take disjoint jobs, so each job is compacted or
        deleted once. Queued and running jobs and usage are never touched."""
        ...

    async def prune_preview(self, policy: RetentionPolicy, now: datetime) -> PruneCounts:
        """Everything prune batches as of ``now`` would remove, changing nothing."""
        ...

    async def reclaim_space(self) -> None:
        """Hand space freed by pruning back where the database allows it cheaply."""
        ...
