"""The job store on SQL (SQLite or PostgreSQL): jobs, their event logs, the queue.

All SQL for jobs lives here, including the queue's claim, leases and rescue. Driver errors
become domain errors at this boundary (a unique idempotency key -> IdempotencyKeyTaken).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from jobql.events.types import EventType, StoredEvent
from jobql.models import Job, JobEvent
from jobql.models.base import utcnow
from jobql.models.jobs import is_job_id
from jobql.repositories import retention
from jobql.repositories.principals import PrincipalRepository
from jobql.repositories.store import (
    CallerLoad,
    CancelOutcome,
    Claimed,
    EventWrite,
    IdempotencyKeyTaken,
    PageCursor,
    Rescued,
)
from jobql.repositories.usage import JobContract, UsageRepository
from jobql.services.retention import PruneCounts, RetentionPolicy
from jobql.states import (
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

_EVENTS = JobEvent.metadata.tables[JobEvent.__tablename__]
_INSERT_EVENT = insert(_EVENTS)

# append_events' UPDATE, per dialect: the batch is a JSON array of
# {id, owner, n, input_tokens, output_tokens, cost_micros, phase, after_seq}.
# Statements that update many job rows lock them in id order (a CTE that selects them
# ORDER BY id FOR UPDATE): two such statements running at once, such as a batch of events
# and a lease renewal, would otherwise lock in different orders and deadlock on PostgreSQL.
# (SQLite has one writer at a time, and compiles FOR UPDATE to nothing.)
_APPEND_SET = """
{batch}
UPDATE jobs SET last_seq = jobs.last_seq + b.n, input_tokens = b.input_tokens,
    output_tokens = b.output_tokens, cost_micros = b.cost_micros,
    phase = coalesce(b.phase, jobs.phase)
FROM b
WHERE jobs.id = b.id AND jobs.status = 'RUNNING' AND jobs.lease_owner = b.owner
    AND (b.after_seq IS NULL OR jobs.last_seq = b.after_seq){locked}
RETURNING jobs.id, jobs.last_seq
"""
_APPEND_UPDATE = {
    "sqlite": text(
        _APPEND_SET.format(
            batch="WITH b AS (SELECT json_extract(value, '$.id') AS id,"
            " json_extract(value, '$.owner') AS owner, json_extract(value, '$.n') AS n,"
            " json_extract(value, '$.input_tokens') AS input_tokens,"
            " json_extract(value, '$.output_tokens') AS output_tokens,"
            " json_extract(value, '$.cost_micros') AS cost_micros,"
            " json_extract(value, '$.phase') AS phase,"
            " json_extract(value, '$.after_seq') AS after_seq FROM json_each(:batch))",
            locked="",
        )
    ),
    "postgresql": text(
        _APPEND_SET.format(
            batch="WITH b AS (SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb))"
            " AS r(id text, owner text, n int, input_tokens int, output_tokens int,"
            " cost_micros bigint, phase text, after_seq int)),"
            " locked AS (SELECT id FROM jobs WHERE id IN (SELECT id FROM b)"
            " ORDER BY id FOR UPDATE)",
            locked=" AND jobs.id IN (SELECT id FROM locked)",
        )
    ),
}
_RUNNING = JobStatus.RUNNING.value


# The per-job writes (claim, finish, requeue, lease renewal) are Core statements on the
# table: through the ORM entity, SQLAlchemy takes its bulk-UPDATE path, which costs about a
# millisecond of CPU per statement, more than the statement itself.
_JOBS = Job.metadata.tables[Job.__tablename__]
_C = _JOBS.c


def _where(guard: Guard) -> list[ColumnElement[bool]]:
    where = [_C.status == guard.status.value]
    if guard.lease_owner is not None:
        where.append(_C.lease_owner == guard.lease_owner)
    if guard.lease_expired_at is not None:
        where.append(_C.lease_expires_at < guard.lease_expired_at)
    return where


def _stored(row: JobEvent) -> StoredEvent:
    return StoredEvent(
        job_id=row.job_id,
        seq=row.seq,
        type=EventType(row.type),
        payload=row.payload,
        at=row.created_at,
    )


def _event_row(
    job_id: str, seq: int, type_: EventType, payload: dict[str, Any], at: datetime
) -> dict[str, Any]:
    return {"job_id": job_id, "seq": seq, "type": type_.value, "payload": payload, "created_at": at}


class _SqlAdmission:
    def __init__(
        self, session: AsyncSession, load: CallerLoad | None, keyed_job: Job | None
    ) -> None:
        self.session = session
        self.load = load
        self.keyed_job = keyed_job

    async def insert(self, job: Job) -> StoredEvent:
        job.last_seq = 1
        self.session.add(job)
        try:
            await self.session.flush()  # the job row first: the event references it
        except IntegrityError as exc:
            raise IdempotencyKeyTaken() from exc
        await self.session.execute(
            _INSERT_EVENT, _event_row(job.id, 1, EventType.JOB_QUEUED, {}, job.created_at)
        )
        return StoredEvent(job.id, 1, EventType.JOB_QUEUED, {}, job.created_at)

    async def forget_key(self, job_id: str) -> None:
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(idempotency_key=None)
            .execution_options(synchronize_session=False)
        )


class SqlJobStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.sessions = sessions
        # Single-statement reads: on SQLite they take no write lock (database.py).
        self.reads = reads or sessions
        bind = sessions.kw["bind"]
        assert isinstance(bind, AsyncEngine)
        self.engine: AsyncEngine = bind

    # -- reads ---------------------------------------------------------------------------

    async def get(self, job_id: str, *, with_output: bool = True) -> Job | None:
        async with self.reads() as session:
            job = await session.get(Job, job_id, populate_existing=True)
            if job is not None and with_output:
                await self._fill_output(session, [job])
            return job

    async def get_owned(
        self, principal_id: str, job_id: str, *, with_output: bool = True
    ) -> Job | None:
        if not is_job_id(job_id):
            return None  # not an id we issue (and e.g. a NUL byte PostgreSQL would refuse)
        async with self.reads() as session:
            stmt = select(Job).where(Job.id == job_id, Job.principal_id == principal_id)
            job = (await session.scalars(stmt)).one_or_none()
            if job is not None and with_output:
                await self._fill_output(session, [job])
            return job

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
        stmt = select(Job).where(Job.principal_id == principal_id)
        if statuses:
            stmt = stmt.where(Job.status.in_([s.value for s in statuses]))
        if api_version is not None:
            stmt = stmt.where(Job.api_version == api_version)
        if after is not None:
            stmt = stmt.where(
                or_(
                    Job.created_at < after.created_at,
                    and_(Job.created_at == after.created_at, Job.id < after.job_id),
                )
            )
        if before is not None:
            stmt = stmt.where(
                or_(
                    Job.created_at > before.created_at,
                    and_(Job.created_at == before.created_at, Job.id > before.job_id),
                )
            )
        if oldest_first:
            stmt = stmt.order_by(Job.created_at.asc(), Job.id.asc()).limit(limit)
        else:
            stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        async with self.reads() as session:
            jobs = list(await session.scalars(stmt))
            await self._fill_output(session, jobs)
            return jobs

    async def events_after(self, job_id: str, after: int, limit: int = 500) -> list[StoredEvent]:
        stmt = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
        async with self.reads() as session:
            return [_stored(row) for row in await session.scalars(stmt)]

    async def by_idempotency_key(self, principal_id: str, key: str) -> Job | None:
        stmt = select(Job).where(Job.principal_id == principal_id, Job.idempotency_key == key)
        async with self.reads() as session:
            job = (await session.scalars(stmt)).one_or_none()
            if job is not None:
                await self._fill_output(session, [job])
            return job

    async def cancel_reason(self, job_id: str) -> str | None:
        async with self.reads() as session:
            return (
                await session.scalars(select(Job.cancel_reason).where(Job.id == job_id))
            ).one_or_none()

    async def count_by_status(self) -> dict[str, int]:
        stmt = (
            select(Job.status, func.count())
            .where(Job.status.in_([JobStatus.QUEUED.value, _RUNNING]))
            .group_by(Job.status)
        )
        async with self.reads() as session:
            return {status: int(n) for status, n in await session.execute(stmt)}

    @staticmethod
    async def _attempt_output(session: AsyncSession, job_id: str) -> str:
        """The output of the job's current attempt: its OutputDeltas since its last
        JobStarted. The log is the durable output; the column is written at the end."""
        started = (
            select(func.coalesce(func.max(JobEvent.seq), 0))
            .where(JobEvent.job_id == job_id, JobEvent.type == EventType.JOB_STARTED.value)
            .scalar_subquery()
        )
        stmt = (
            select(JobEvent.payload)
            .where(
                JobEvent.job_id == job_id,
                JobEvent.type == EventType.OUTPUT_DELTA.value,
                JobEvent.seq > started,
            )
            .order_by(JobEvent.seq)
        )
        return "".join(payload["text"] for payload in await session.scalars(stmt))

    async def _fill_output(self, session: AsyncSession, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.status == _RUNNING:
                set_committed_value(job, "output", await self._attempt_output(session, job.id))

    # -- submit and cancel ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admission(
        self, principal_id: str, *, day: date | None, key: str | None
    ) -> AsyncIterator[_SqlAdmission]:
        try:
            async with self.sessions() as session, session.begin():
                load = None
                keyed_id = None
                if day is not None:
                    # Locks the caller until commit, so its submits are checked one at a
                    # time; the same statement finds the job holding the key, if any.
                    load = await PrincipalRepository(session).lock_and_load(principal_id, day, key)
                    keyed_id = load.keyed_job_id
                elif key is not None:
                    keyed_id = (
                        await session.scalars(
                            select(Job.id).where(
                                Job.principal_id == principal_id, Job.idempotency_key == key
                            )
                        )
                    ).one_or_none()
                keyed_job = None
                if keyed_id is not None:
                    keyed_job = await session.get(Job, keyed_id)
                    if keyed_job is not None:
                        await self._fill_output(session, [keyed_job])
                yield _SqlAdmission(session, load, keyed_job)
        except IntegrityError as exc:  # at commit, where the constraint is checked late
            raise IdempotencyKeyTaken() from exc

    async def cancel(
        self, principal_id: str, job_id: str, reason: str | None, at: datetime
    ) -> CancelOutcome | None:
        if not is_job_id(job_id):
            return None
        async with self.sessions() as session, session.begin():
            stmt = (
                select(Job)
                .where(Job.id == job_id, Job.principal_id == principal_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            job = (await session.scalars(stmt)).one_or_none()
            if job is None:
                return None
            action = cancel_action(JobStatus(job.status))
            event = None
            if action is CancelAction.NOW:
                finish = cancel(job, reason, output="", usage=Usage(), at=at)
                event = await self._finish(session, job_id, finish, Guard(JobStatus.QUEUED))
            elif action is CancelAction.REQUEST:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == _RUNNING)
                    .values(cancel_requested_at=at, cancel_reason=reason)
                    .execution_options(synchronize_session=False)
                )
            if action is not CancelAction.REFUSE:
                await session.refresh(job)
            return CancelOutcome(job, action, event)

    async def purge_idempotency_keys(self, created_before: datetime) -> int:
        stmt = (
            update(Job)
            .where(Job.idempotency_key.is_not(None), Job.created_at < created_before)
            .values(idempotency_key=None)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        async with self.sessions() as session, session.begin():
            return len(list(await session.scalars(stmt)))

    # -- retention -----------------------------------------------------------------------

    async def prune(
        self, policy: RetentionPolicy, now: datetime, *, limit: int = 500
    ) -> PruneCounts:
        scopes = policy.scopes(now)
        deleted = await retention.delete_expired(self.sessions, scopes, limit)
        return deleted + await retention.compact_logs(self.sessions, scopes, now, limit)

    async def prune_preview(self, policy: RetentionPolicy, now: datetime) -> PruneCounts:
        return await retention.preview(self.reads, policy, now)

    async def reclaim_space(self) -> None:
        await retention.reclaim_space(self.engine)

    # -- the queue -----------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[Claimed]:
        """One statement: WITH claimable AS MATERIALIZED (SELECT ... FOR UPDATE SKIP LOCKED)
        UPDATE ... RETURNING, which also takes the seq of each job's JobStarted.

        On PostgreSQL concurrent workers skip each other's rows; the CTE is materialized
        because the planner may otherwise re-run a LIMIT subquery per row and claim more
        than ``limit``. On SQLite the statement is atomic because SQLite has one writer at
        a time (SKIP LOCKED compiles to nothing there).
        """
        now = utcnow()
        claimable = (
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED.value)
            .order_by(Job.created_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("claimable")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        claim = (
            update(_JOBS)
            .where(_C.id.in_(select(claimable.c.id)), _C.status == JobStatus.QUEUED.value)
            .values(
                **claim_values(worker_id, now + lease, now),
                attempts=_C.attempts + 1,
                last_seq=_C.last_seq + 1,
            )
            .returning(*_C)
        )
        async with self.sessions() as session, session.begin():
            jobs = list(await session.scalars(select(Job).from_statement(claim)))
            if not jobs:
                return []
            started = [
                StoredEvent(
                    job.id, job.last_seq, EventType.JOB_STARTED, {"attempt": job.attempts}, now
                )
                for job in jobs
            ]
            await session.execute(
                _INSERT_EVENT,
                [_event_row(e.job_id, e.seq, e.type, e.payload, e.at) for e in started],
            )
        return [Claimed(job, event) for job, event in zip(jobs, started, strict=True)]

    async def held(self, worker_id: str) -> list[Job]:
        stmt = (
            select(Job)
            .where(Job.status == _RUNNING, Job.lease_owner == worker_id)
            .order_by(Job.created_at, Job.id)
        )
        async with self.reads() as session:
            return list(await session.scalars(stmt))

    async def renew_leases(
        self, worker_id: str, job_ids: Sequence[str], lease: timedelta
    ) -> dict[str, datetime | None]:
        if not job_ids:
            return {}
        locked = (
            select(_C.id)
            .where(_C.id.in_(list(job_ids)), *_where(Guard.lease(worker_id)))
            .order_by(_C.id)
            .with_for_update()
            .cte("locked")
        )
        stmt = (
            update(_JOBS)
            .where(_C.id.in_(select(locked.c.id)))
            .values(lease_expires_at=utcnow() + lease)
            .returning(_C.id, _C.cancel_requested_at)
        )
        async with self.sessions() as session, session.begin():
            return {row.id: row.cancel_requested_at for row in await session.execute(stmt)}

    async def expired_leases(self, limit: int = 100) -> list[Job]:
        stmt = (
            select(Job)
            .where(Job.status == _RUNNING, Job.lease_expires_at < utcnow())
            .order_by(Job.lease_expires_at)
            .limit(limit)
        )
        async with self.reads() as session:
            return list(await session.scalars(stmt))

    async def rescue(self, job: Job, at: datetime) -> Rescued:
        decision = rescue(job, at)
        guard = rescue_guard(job, at)
        async with self.sessions() as session, session.begin():
            if isinstance(decision, Requeue):
                return Rescued(requeued=await self._requeue(session, job.id, guard))
            event = await self._finish(session, job.id, decision, guard)
            return Rescued(requeued=False, event=event, status=decision.status)

    async def hand_back(self, job_id: str, worker_id: str) -> bool:
        async with self.sessions() as session, session.begin():
            return await self._requeue(session, job_id, Guard.lease(worker_id))

    async def append_events(self, writes: Sequence[EventWrite]) -> list[list[StoredEvent] | None]:
        """Two statements for any number of jobs: one UPDATE takes every job's seqs (and
        sets its usage) under its lease guard, one INSERT writes all the events. The batch
        travels as one JSON parameter, so the UPDATE is the same statement for every batch
        (built and compiled once, where a VALUES list would be compiled per batch)."""
        if not writes:
            return []
        if len({w.job_id for w in writes}) != len(writes):
            raise ValueError("one write per job in a batch")
        batch = json.dumps(
            [
                {
                    "id": w.job_id,
                    "owner": w.worker_id,
                    "n": len(w.events),
                    "input_tokens": w.usage.input_tokens,
                    "output_tokens": w.usage.output_tokens,
                    "cost_micros": w.usage.cost_micros,
                    "phase": w.phase,
                    "after_seq": w.after_seq,
                }
                for w in writes
            ]
        )
        now = utcnow()
        # A Core connection: the ORM's session and unit of work cost more than the SQL here.
        async with self.engine.begin() as conn:
            update_sql = _APPEND_UPDATE[conn.dialect.name]
            last = {row[0]: row[1] for row in await conn.execute(update_sql, {"batch": batch})}
            before = await self._appended_before(
                conn, [w for w in writes if w.job_id not in last and w.after_seq is not None]
            )
            results: list[list[StoredEvent] | None] = []
            rows: list[dict[str, Any]] = []
            for write in writes:
                if write.job_id not in last:
                    results.append(before.get(write.job_id))
                    continue
                first = last[write.job_id] - len(write.events) + 1
                stored = [
                    StoredEvent(write.job_id, first + i, e.type, e.payload, now)
                    for i, e in enumerate(write.events)
                ]
                rows.extend(_event_row(e.job_id, e.seq, e.type, e.payload, e.at) for e in stored)
                results.append(stored)
            if rows:
                await conn.execute(_INSERT_EVENT, rows)
        return results

    async def finish(self, job_id: str, finish: Finish, guard: Guard) -> StoredEvent | None:
        async with self.sessions() as session, session.begin():
            return await self._finish(session, job_id, finish, guard)

    @staticmethod
    async def _appended_before(
        conn: AsyncConnection, writes: Sequence[EventWrite]
    ) -> dict[str, list[StoredEvent]]:
        """Of writes whose job moved past their ``after_seq``, those whose events the job
        holds exactly after it, still under the write's lease (a retry of a write whose
        commit landed): job id -> the events as stored."""
        if not writes:
            return {}
        held = {
            row.id: (row.lease_owner, row.last_seq)
            for row in await conn.execute(
                select(_C.id, _C.lease_owner, _C.last_seq).where(
                    _C.id.in_([w.job_id for w in writes]), _C.status == _RUNNING
                )
            )
        }
        found: dict[str, list[StoredEvent]] = {}
        for write in writes:
            assert write.after_seq is not None
            last = write.after_seq + len(write.events)
            if held.get(write.job_id) != (write.worker_id, last):
                continue
            rows = await conn.execute(
                select(_EVENTS.c.seq, _EVENTS.c.type, _EVENTS.c.payload, _EVENTS.c.created_at)
                .where(
                    _EVENTS.c.job_id == write.job_id,
                    _EVENTS.c.seq > write.after_seq,
                    _EVENTS.c.seq <= last,
                )
                .order_by(_EVENTS.c.seq)
            )
            stored = [
                StoredEvent(write.job_id, row.seq, EventType(row.type), row.payload, row.created_at)
                for row in rows
            ]
            if [e.type for e in stored] == [e.type for e in write.events]:
                found[write.job_id] = stored
        return found

    # -- within a transaction ------------------------------------------------------------

    async def _finish(
        self, session: AsyncSession, job_id: str, finish: Finish, guard: Guard
    ) -> StoredEvent | None:
        values = finish.values()
        if finish.output is None:
            values["output"] = await self._attempt_output(session, job_id)
        stmt = (
            update(_JOBS)
            .where(_C.id == job_id, *_where(guard))
            .values(last_seq=_C.last_seq + 1, **values)
            .returning(
                _C.last_seq,
                _C.principal_id,
                _C.api_version,
                _C.task,
                _C.provider,
                _C.model_name,
                _C.model_version,
            )
        )
        row = (await session.execute(stmt)).one_or_none()
        if row is None:
            return None
        event = StoredEvent(
            job_id, row.last_seq, finish.event_type, finish.payload, finish.finished_at
        )
        await session.execute(
            _INSERT_EVENT, _event_row(job_id, event.seq, event.type, event.payload, event.at)
        )
        if finish.billed:
            contract = JobContract(
                row.api_version, row.task, row.provider, row.model_name, row.model_version
            )
            await UsageRepository(session).add(
                row.principal_id, finish.finished_at.date(), contract, finish.status, finish.usage
            )
        return event

    @staticmethod
    async def _requeue(session: AsyncSession, job_id: str, guard: Guard) -> bool:
        stmt = (
            update(_JOBS)
            .where(_C.id == job_id, *_where(guard))
            .values(**Requeue.values())
            .returning(_C.id)
        )
        return (await session.execute(stmt)).scalar_one_or_none() is not None
