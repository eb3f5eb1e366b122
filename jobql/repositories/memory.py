"""The job store in memory: the twin of SqlJobStore that services and the worker are
unit-tested with. Same decisions (jobql.states), same guards, plain dicts instead of SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import inspect

from jobql.events.types import EventType, StoredEvent
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.models.jobs import is_job_id
from jobql.repositories.store import (
    CallerLoad,
    CancelOutcome,
    Claimed,
    EventWrite,
    IdempotencyKeyTaken,
    PageCursor,
    Rescued,
)
from jobql.services.retention import PruneCounts, RetentionPolicy
from jobql.states import (
    ACTIVE,
    TERMINAL,
    CancelAction,
    Finish,
    Guard,
    JobStatus,
    Requeue,
    Usage,
    cancel,
    cancel_action,
    claim_values,
    rescue,
    rescue_guard,
)

_COLUMNS = {attr.key: attr.columns[0] for attr in inspect(Job).column_attrs}


def _copy(job: Job) -> Job:
    """A detached copy, so that no caller can change what the store holds."""
    return Job(**{key: copy.deepcopy(getattr(job, key)) for key in _COLUMNS})


def _with_defaults(job: Job) -> None:
    """What an INSERT would fill in for columns the caller left unset."""
    for key, column in _COLUMNS.items():
        default = column.default
        if getattr(job, key) is None and default is not None and default.is_scalar:
            setattr(job, key, default.arg)
    if job.created_at is None:
        job.created_at = utcnow()


def _apply(job: Job, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(job, key, copy.deepcopy(value))


def _matches(job: Job, guard: Guard) -> bool:
    if job.status != guard.status.value:
        return False
    if guard.lease_owner is not None and job.lease_owner != guard.lease_owner:
        return False
    if guard.lease_expired_at is not None:
        return job.lease_expires_at is not None and job.lease_expires_at < guard.lease_expired_at
    return True


def _event(event: StoredEvent) -> StoredEvent:
    return replace(event, payload=copy.deepcopy(event.payload))


@dataclass
class _MemoryAdmission:
    store: MemoryJobStore
    principal_id: str
    load: CallerLoad | None
    keyed_job: Job | None
    # Applied when the block exits normally, like a commit.
    inserted: list[Job] = field(default_factory=list)
    forgotten: set[str] = field(default_factory=set)

    async def insert(self, job: Job) -> StoredEvent:
        _with_defaults(job)
        key = job.idempotency_key
        if key is not None and (
            any(j.idempotency_key == key for j in self.inserted)
            or self.store._keyed(self.principal_id, key, ignore=self.forgotten) is not None
        ):
            raise IdempotencyKeyTaken()
        job.last_seq = 1
        self.inserted.append(_copy(job))
        return StoredEvent(job.id, 1, EventType.JOB_QUEUED, {}, job.created_at)

    async def forget_key(self, job_id: str) -> None:
        self.forgotten.add(job_id)

    def commit(self) -> None:
        for job_id in self.forgotten:
            if (job := self.store._jobs.get(job_id)) is not None:
                job.idempotency_key = None
        for job in self.inserted:
            self.store._jobs[job.id] = job
            self.store._events[job.id] = [
                StoredEvent(job.id, 1, EventType.JOB_QUEUED, {}, job.created_at)
            ]


class MemoryJobStore:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._usage: dict[tuple[str, date], Usage] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, job_id: str, *, with_output: bool = True) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        return self._read(job) if with_output else _copy(job)

    async def get_owned(
        self, principal_id: str, job_id: str, *, with_output: bool = True
    ) -> Job | None:
        job = self._jobs.get(job_id) if is_job_id(job_id) else None
        if job is None or job.principal_id != principal_id:
            return None
        return self._read(job) if with_output else _copy(job)

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
        wanted = {s.value for s in statuses} if statuses else None
        jobs = [
            job
            for job in self._jobs.values()
            if job.principal_id == principal_id
            and (wanted is None or job.status in wanted)
            and (api_version is None or job.api_version == api_version)
            and (after is None or (job.created_at, job.id) < (after.created_at, after.job_id))
            and (before is None or (job.created_at, job.id) > (before.created_at, before.job_id))
        ]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=not oldest_first)
        return [self._read(job) for job in jobs[:limit]]

    async def events_after(self, job_id: str, after: int, limit: int = 500) -> list[StoredEvent]:
        events = [e for e in self._events.get(job_id, []) if e.seq > after]
        return [_event(e) for e in events[:limit]]

    async def by_idempotency_key(self, principal_id: str, key: str) -> Job | None:
        job = self._keyed(principal_id, key)
        return self._read(job) if job is not None else None

    async def cancel_reason(self, job_id: str) -> str | None:
        job = self._jobs.get(job_id)
        return job.cancel_reason if job is not None else None

    async def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._jobs.values():
            if job.status in ACTIVE:
                counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    def _keyed(self, principal_id: str, key: str, ignore: Collection[str] = ()) -> Job | None:
        for job in self._jobs.values():
            if (
                job.principal_id == principal_id
                and job.idempotency_key == key
                and job.id not in ignore
            ):
                return job
        return None

    def _attempt_output(self, job_id: str) -> str:
        """The OutputDeltas since the job's last JobStarted (the log is the output)."""
        texts: list[str] = []
        for event in self._events.get(job_id, []):
            if event.type is EventType.JOB_STARTED:
                texts = []
            elif event.type is EventType.OUTPUT_DELTA:
                texts.append(event.payload["text"])
        return "".join(texts)

    def _read(self, job: Job) -> Job:
        result = _copy(job)
        if job.status == JobStatus.RUNNING.value:
            result.output = self._attempt_output(job.id)
        return result

    # -- submit and cancel ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admission(
        self, principal_id: str, *, day: date | None, key: str | None
    ) -> AsyncIterator[_MemoryAdmission]:
        async with self._locks[principal_id]:
            keyed = self._keyed(principal_id, key) if key is not None else None
            load = None
            if day is not None:
                active = [
                    j
                    for j in self._jobs.values()
                    if j.principal_id == principal_id and j.status in ACTIVE
                ]
                load = CallerLoad(
                    active=len(active),
                    reserved_micros=sum(j.reserved_micros for j in active),
                    spent_micros=self._usage.get((principal_id, day), Usage()).cost_micros,
                    keyed_job_id=keyed.id if keyed is not None else None,
                )
            admission = _MemoryAdmission(
                self, principal_id, load, self._read(keyed) if keyed is not None else None
            )
            yield admission
            admission.commit()

    async def cancel(
        self, principal_id: str, job_id: str, reason: str | None, at: datetime
    ) -> CancelOutcome | None:
        job = self._jobs.get(job_id) if is_job_id(job_id) else None
        if job is None or job.principal_id != principal_id:
            return None
        action = cancel_action(JobStatus(job.status))
        event = None
        if action is CancelAction.NOW:
            finish = cancel(job, reason, output="", usage=Usage(), at=at)
            event = self._finish(job, finish, Guard(JobStatus.QUEUED))
        elif action is CancelAction.REQUEST:
            job.cancel_requested_at = at
            job.cancel_reason = reason
        return CancelOutcome(_copy(job), action, event)

    async def purge_idempotency_keys(self, created_before: datetime) -> int:
        purged = 0
        for job in self._jobs.values():
            if job.idempotency_key is not None and job.created_at < created_before:
                job.idempotency_key = None
                purged += 1
        return purged

    # -- retention -----------------------------------------------------------------------

    async def prune(
        self, policy: RetentionPolicy, now: datetime, *, limit: int = 500
    ) -> PruneCounts:
        counts = PruneCounts()
        for job in self._expiring(policy, now, log=False)[:limit]:
            counts += PruneCounts(events_deleted=len(self._events.pop(job.id)), jobs_deleted=1)
            del self._jobs[job.id]
        for job in self._expiring(policy, now, log=True)[:limit]:
            compacted = self._compacted(job)
            counts += PruneCounts(
                jobs_compacted=1, events_deleted=len(self._events[job.id]) - len(compacted)
            )
            self._events[job.id] = compacted
            job.log_compacted_at = now
        return counts

    async def prune_preview(self, policy: RetentionPolicy, now: datetime) -> PruneCounts:
        counts = PruneCounts()
        for job in self._expiring(policy, now, log=False):
            counts += PruneCounts(events_deleted=len(self._events[job.id]), jobs_deleted=1)
        for job in self._expiring(policy, now, log=True):
            removed = len(self._events[job.id]) - len(self._compacted(job))
            counts += PruneCounts(jobs_compacted=1, events_deleted=removed)
        return counts

    async def reclaim_space(self) -> None:
        return None

    def _expiring(self, policy: RetentionPolicy, now: datetime, *, log: bool) -> list[Job]:
        """Finished jobs past their job window, or (``log``) past their log window with
        the log still whole and the job not past its job window; oldest first."""
        due = []
        for job in self._jobs.values():
            if job.status not in TERMINAL or job.finished_at is None:
                continue
            expires = policy.expires_at(job.tier, job.finished_at)
            assert expires is not None
            if not log:
                if expires < now:
                    due.append(job)
                continue
            log_expires = policy.log_expires_at(job.tier, job.finished_at)
            assert log_expires is not None
            if job.log_compacted_at is None and log_expires < now and not expires < now:
                due.append(job)
        return sorted(due, key=lambda j: j.finished_at or now)

    def _compacted(self, job: Job) -> list[StoredEvent]:
        terminal = self._events[job.id][-1]
        if not job.output:
            return [terminal]
        assert job.finished_at is not None
        delta = StoredEvent(
            job.id, job.last_seq - 1, EventType.OUTPUT_DELTA, {"text": job.output}, job.finished_at
        )
        return [delta, terminal]

    # -- the queue -----------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[Claimed]:
        now = utcnow()
        queued = sorted(
            (j for j in self._jobs.values() if j.status == JobStatus.QUEUED.value),
            key=lambda j: (j.created_at, j.id),
        )
        claimed = []
        for job in queued[:limit]:
            _apply(job, claim_values(worker_id, now + lease, now))
            job.attempts += 1
            started = self._append(job, EventType.JOB_STARTED, {"attempt": job.attempts}, now)
            claimed.append(Claimed(_copy(job), _event(started)))
        return claimed

    async def held(self, worker_id: str) -> list[Job]:
        jobs = [
            j
            for j in self._jobs.values()
            if j.status == JobStatus.RUNNING.value and j.lease_owner == worker_id
        ]
        return [_copy(j) for j in sorted(jobs, key=lambda j: (j.created_at, j.id))]

    async def renew_leases(
        self, worker_id: str, job_ids: Sequence[str], lease: timedelta
    ) -> dict[str, datetime | None]:
        renewed: dict[str, datetime | None] = {}
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and _matches(job, Guard.lease(worker_id)):
                job.lease_expires_at = utcnow() + lease
                renewed[job_id] = job.cancel_requested_at
        return renewed

    async def expired_leases(self, limit: int = 100) -> list[Job]:
        now = utcnow()
        expired = [
            j
            for j in self._jobs.values()
            if j.status == JobStatus.RUNNING.value
            and j.lease_expires_at is not None
            and j.lease_expires_at < now
        ]
        expired.sort(key=lambda j: j.lease_expires_at or now)
        return [_copy(j) for j in expired[:limit]]

    async def rescue(self, job: Job, at: datetime) -> Rescued:
        decision = rescue(job, at)
        guard = rescue_guard(job, at)
        stored = self._jobs.get(job.id)
        if isinstance(decision, Requeue):
            return Rescued(requeued=self._requeue(stored, guard))
        event = self._finish(stored, decision, guard)
        return Rescued(requeued=False, event=event, status=decision.status)

    async def hand_back(self, job_id: str, worker_id: str) -> bool:
        return self._requeue(self._jobs.get(job_id), Guard.lease(worker_id))

    async def append_events(self, writes: Sequence[EventWrite]) -> list[list[StoredEvent] | None]:
        if len({w.job_id for w in writes}) != len(writes):
            raise ValueError("one write per job in a batch")
        now = utcnow()
        results: list[list[StoredEvent] | None] = []
        for write in writes:
            job = self._jobs.get(write.job_id)
            if job is None or not _matches(job, Guard.lease(write.worker_id)):
                results.append(None)
                continue
            if write.after_seq is not None and job.last_seq != write.after_seq:
                results.append(self._appended_before(job, write))
                continue
            job.input_tokens = write.usage.input_tokens
            job.output_tokens = write.usage.output_tokens
            job.cost_micros = write.usage.cost_micros
            if write.phase is not None:
                job.phase = write.phase
            stored = [self._append(job, e.type, e.payload, now) for e in write.events]
            results.append([_event(e) for e in stored])
        return results

    async def finish(self, job_id: str, finish: Finish, guard: Guard) -> StoredEvent | None:
        return self._finish(self._jobs.get(job_id), finish, guard)

    def _appended_before(self, job: Job, write: EventWrite) -> list[StoredEvent] | None:
        """The write's events if the job holds exactly them after ``after_seq``."""
        assert write.after_seq is not None
        if job.last_seq != write.after_seq + len(write.events):
            return None
        stored = self._events[job.id][write.after_seq : job.last_seq]
        if [e.type for e in stored] != [e.type for e in write.events]:
            return None
        return [_event(e) for e in stored]

    # -- state changes -------------------------------------------------------------------

    def _append(
        self, job: Job, type_: EventType, payload: dict[str, Any], at: datetime
    ) -> StoredEvent:
        job.last_seq += 1
        event = StoredEvent(job.id, job.last_seq, type_, copy.deepcopy(payload), at)
        self._events[job.id].append(event)
        return event

    def _finish(self, job: Job | None, finish: Finish, guard: Guard) -> StoredEvent | None:
        if job is None or not _matches(job, guard):
            return None
        values = finish.values()
        if finish.output is None:
            values["output"] = self._attempt_output(job.id)
        _apply(job, values)
        event = self._append(job, finish.event_type, finish.payload, finish.finished_at)
        if finish.billed:
            day = (job.principal_id, finish.finished_at.date())
            spent = self._usage.get(day, Usage())
            self._usage[day] = Usage(
                spent.input_tokens + finish.usage.input_tokens,
                spent.output_tokens + finish.usage.output_tokens,
                spent.cost_micros + finish.usage.cost_micros,
            )
        return _event(event)

    @staticmethod
    def _requeue(job: Job | None, guard: Guard) -> bool:
        if job is None or not _matches(job, guard):
            return False
        _apply(job, Requeue.values())
        return True
