"""SQL for jobs and their event log, including the queue's claim, leases and rescue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobql.events.types import EventType, StoredEvent
from jobql.models import Job, JobEvent, JobStatus
from jobql.models.base import utcnow
from jobql.models.jobs import is_job_id


@dataclass(frozen=True)
class PageCursor:
    created_at: datetime
    job_id: str


def to_stored(row: JobEvent) -> StoredEvent:
    return StoredEvent(
        job_id=row.job_id,
        seq=row.seq,
        type=EventType(row.type),
        payload=row.payload,
        at=row.created_at,
    )


_INSERT_EVENT = insert(JobEvent.metadata.tables[JobEvent.__tablename__])


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- reads ---------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return await self.session.get(Job, job_id, populate_existing=True)

    async def get_owned(self, principal_id: str, job_id: str, *, lock: bool = False) -> Job | None:
        if not is_job_id(job_id):
            return None  # not an id we issue (and e.g. a NUL byte PostgreSQL would refuse)
        stmt = select(Job).where(Job.id == job_id, Job.principal_id == principal_id)
        if lock:
            stmt = stmt.with_for_update()
        return (
            await self.session.scalars(stmt.execution_options(populate_existing=True))
        ).one_or_none()

    async def list_owned(
        self,
        principal_id: str,
        *,
        limit: int,
        after: PageCursor | None,
        statuses: Sequence[JobStatus] | None,
    ) -> list[Job]:
        """Newest first; ``after`` continues below the given (created_at, id)."""
        stmt = select(Job).where(Job.principal_id == principal_id)
        if statuses:
            stmt = stmt.where(Job.status.in_([s.value for s in statuses]))
        if after is not None:
            stmt = stmt.where(
                or_(
                    Job.created_at < after.created_at,
                    and_(Job.created_at == after.created_at, Job.id < after.job_id),
                )
            )
        stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        return list(await self.session.scalars(stmt))

    async def events_after(self, job_id: str, after: int, limit: int = 500) -> list[StoredEvent]:
        stmt = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after)
            .order_by(JobEvent.seq)
            .limit(limit)
        )
        return [to_stored(row) for row in await self.session.scalars(stmt)]

    # -- writes --------------------------------------------------------------------------

    async def insert(
        self, job: Job, first_event: EventType, payload: dict[str, Any]
    ) -> StoredEvent:
        """Insert a new job together with event seq 1."""
        job.last_seq = 1
        self.session.add(job)
        await self.session.flush()  # the job row first: the event references it
        row = JobEvent(
            job_id=job.id, seq=1, type=first_event.value, payload=payload, created_at=job.created_at
        )
        self.session.add(row)
        await self.session.flush()
        return to_stored(row)

    async def append_event(
        self,
        job_id: str,
        event_type: EventType,
        payload: dict[str, Any],
        *,
        where: Sequence[ColumnElement[bool]] = (),
        values: dict[str, Any] | None = None,
    ) -> StoredEvent | None:
        """Append the next event and apply ``values`` to the job, atomically.

        Returns None (and changes nothing) when the job no longer matches ``where``: that is
        how a worker that lost its lease, or a cancel that lost a race, finds out.
        """
        stmt = (
            update(Job)
            .where(Job.id == job_id, *where)
            .values(last_seq=Job.last_seq + 1, **(values or {}))
            .returning(Job.last_seq)
            .execution_options(synchronize_session=False)
        )
        seq = (await self.session.execute(stmt)).scalar_one_or_none()
        if seq is None:
            return None
        now = utcnow()
        # A Core INSERT: the ORM's unit of work costs more than the statement here.
        await self.session.execute(
            _INSERT_EVENT,
            {
                "job_id": job_id,
                "seq": seq,
                "type": event_type.value,
                "payload": payload,
                "created_at": now,
            },
        )
        return StoredEvent(job_id=job_id, seq=seq, type=event_type, payload=payload, at=now)

    async def request_cancel(self, job_id: str, reason: str | None) -> None:
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
            .values(cancel_requested_at=utcnow(), cancel_reason=reason)
            .execution_options(synchronize_session=False)
        )

    # -- the queue -----------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[Job]:
        """Claim up to ``limit`` queued jobs, oldest first.

        One statement: WITH claimable AS MATERIALIZED (SELECT ... FOR UPDATE SKIP LOCKED)
        UPDATE ... RETURNING. On PostgreSQL concurrent workers skip each other's rows; the
        CTE is materialized because the planner may otherwise re-run a LIMIT subquery per
        row and claim more than ``limit``. On SQLite the statement is atomic because SQLite
        has one writer at a time (SKIP LOCKED compiles to nothing there).
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
        candidates = select(claimable.c.id)
        stmt = (
            update(Job)
            .where(Job.id.in_(candidates), Job.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                lease_owner=worker_id,
                lease_expires_at=now + lease,
                attempts=Job.attempts + 1,
                started_at=now,
                # A new attempt starts from nothing; JobStarted{attempt} tells clients so.
                output="",
                result=None,
                phase=None,
                input_tokens=0,
                output_tokens=0,
                cost_micros=0,
            )
            .returning(Job)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return list(await self.session.scalars(stmt))

    async def renew_leases(
        self, worker_id: str, job_ids: Sequence[str], lease: timedelta
    ) -> dict[str, datetime | None]:
        """Extend the leases this worker holds; answer {job_id: cancel_requested_at}.

        A job missing from the answer is no longer ours (rescued, or finished elsewhere).
        """
        if not job_ids:
            return {}
        stmt = (
            update(Job)
            .where(
                Job.id.in_(list(job_ids)),
                Job.lease_owner == worker_id,
                Job.status == JobStatus.RUNNING.value,
            )
            .values(lease_expires_at=utcnow() + lease)
            .returning(Job.id, Job.cancel_requested_at)
            .execution_options(synchronize_session=False)
        )
        return {row.id: row.cancel_requested_at for row in await self.session.execute(stmt)}

    async def expired_leases(self, limit: int = 100) -> list[Job]:
        stmt = (
            select(Job)
            .where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < utcnow())
            .order_by(Job.lease_expires_at)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def requeue(self, job_id: str, *, where: Sequence[ColumnElement[bool]]) -> bool:
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, *where)
            .values(status=JobStatus.QUEUED.value, lease_owner=None, lease_expires_at=None)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def queued_ids(self, limit: int) -> list[str]:
        stmt = (
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED.value)
            .order_by(Job.created_at)
            .limit(limit)
        )
        return list(await self.session.scalars(stmt))

    async def release(self, job_id: str, worker_id: str) -> bool:
        """Give a job back to the queue (graceful shutdown). The next claim starts a new
        attempt, and its JobStarted{attempt} tells clients to drop the partial output."""
        stmt = (
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == JobStatus.RUNNING.value,
                Job.lease_owner == worker_id,
            )
            .values(
                status=JobStatus.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def get_by_idempotency_key(self, principal_id: str, key: str) -> Job | None:
        stmt = select(Job).where(Job.principal_id == principal_id, Job.idempotency_key == key)
        return (await self.session.scalars(stmt)).one_or_none()

    async def id_by_idempotency_key(self, principal_id: str, key: str) -> str | None:
        stmt = select(Job.id).where(Job.principal_id == principal_id, Job.idempotency_key == key)
        return (await self.session.scalars(stmt)).one_or_none()

    async def forget_idempotency_key(self, job_id: str) -> None:
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(idempotency_key=None)
            .execution_options(synchronize_session=False)
        )

    async def purge_idempotency_keys(self, created_before: datetime) -> int:
        """Forget keys older than the idempotency window, so they can be used again."""
        stmt = (
            update(Job)
            .where(Job.idempotency_key.is_not(None), Job.created_at < created_before)
            .values(idempotency_key=None)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
        return len(list(await self.session.scalars(stmt)))

    async def count_by_status(self) -> dict[str, int]:
        """Jobs per active status (queue depth)."""
        stmt = (
            select(Job.status, func.count())
            .where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
            .group_by(Job.status)
        )
        return {status: int(n) for status, n in await self.session.execute(stmt)}
