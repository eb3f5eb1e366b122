"""Pruning finished jobs on SQL: compacting their event logs, deleting them.

Each batch is one short transaction over at most ``limit`` jobs. The jobs are picked with
FOR UPDATE SKIP LOCKED, so on PostgreSQL concurrent pruners (every worker runs one) take
disjoint jobs; on SQLite one writer at a time runs a batch, and the next finds the work
done (a compacted job has log_compacted_at set; a deleted one is gone). Usage rows are
never touched: they live in their own table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from jobql.events.types import EventType
from jobql.models import Job, JobEvent
from jobql.services.retention import PruneCounts, PruneScope, RetentionPolicy
from jobql.states import TERMINAL

_JOBS = Job.metadata.tables[Job.__tablename__]
_C = _JOBS.c
_EVENTS = JobEvent.metadata.tables[JobEvent.__tablename__]
_E = _EVENTS.c
_TERMINAL = sorted(status.value for status in TERMINAL)
# Pages SQLite hands back to the file system after a prune pass (4 KB each by default).
SQLITE_VACUUM_PAGES = 2000


def _tiers(scope: PruneScope) -> list[ColumnElement[bool]]:
    if scope.tiers is not None:
        return [_C.tier.in_(sorted(scope.tiers))]
    if scope.other_than:
        return [_C.tier.not_in(sorted(scope.other_than))]
    return []


def _due(scopes: Sequence[PruneScope], *, log: bool) -> list[ColumnElement[bool]]:
    """Finished jobs past their log window (``log``) or their job window."""

    def before(scope: PruneScope) -> datetime:
        return scope.log_before if log else scope.job_before

    where = [
        _C.finished_at.is_not(None),
        # The latest cutoff first, so the finished_at index narrows the scan.
        _C.finished_at < max(before(scope) for scope in scopes),
        _C.status.in_(_TERMINAL),
        or_(*(and_(_C.finished_at < before(scope), *_tiers(scope)) for scope in scopes)),
    ]
    if log:
        where.append(_C.log_compacted_at.is_(None))
    return where


def _expiring(scopes: Sequence[PruneScope], *, log: bool) -> list[ColumnElement[bool]]:
    """What a pass compacts: past the log window, not yet compacted, and not being deleted
    (a job past its job window is deleted instead). What a pass deletes: past the job window."""
    if not log:
        return _due(scopes, log=False)
    return [*_due(scopes, log=True), ~and_(*_due(scopes, log=False))]


async def delete_expired(
    sessions: async_sessionmaker[AsyncSession], scopes: Sequence[PruneScope], limit: int
) -> PruneCounts:
    """Delete up to ``limit`` jobs past their job window, with their events."""
    pick = (
        select(_C.id)
        .where(*_due(scopes, log=False))
        .order_by(_C.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with sessions() as session, session.begin():
        ids = list(await session.scalars(pick))
        if not ids:
            return PruneCounts()
        events = await session.execute(delete(_EVENTS).where(_E.job_id.in_(ids)))
        await session.execute(delete(_JOBS).where(_C.id.in_(ids)))
        return PruneCounts(events_deleted=_rowcount(events), jobs_deleted=len(ids))


async def compact_logs(
    sessions: async_sessionmaker[AsyncSession],
    scopes: Sequence[PruneScope],
    now: datetime,
    limit: int,
) -> PruneCounts:
    """Compact up to ``limit`` logs past their window: keep the terminal event (its seq
    unchanged) and write one OutputDelta with the whole output at the seq before it."""
    pick = (
        select(_C.id, _C.last_seq, _C.output, _C.finished_at)
        .where(*_expiring(scopes, log=True))
        .order_by(_C.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    last_seq = select(_C.last_seq).where(_C.id == _E.job_id).scalar_subquery()
    async with sessions() as session, session.begin():
        jobs = list(await session.execute(pick))
        if not jobs:
            return PruneCounts()
        ids = [job.id for job in jobs]
        removed = await session.execute(
            delete(_EVENTS).where(_E.job_id.in_(ids), _E.seq < last_seq)
        )
        deltas: list[dict[str, Any]] = [
            {
                "job_id": job.id,
                "seq": job.last_seq - 1,
                "type": EventType.OUTPUT_DELTA.value,
                "payload": {"text": job.output},
                "created_at": job.finished_at,
            }
            for job in jobs
            if job.output
        ]
        if deltas:
            await session.execute(insert(_EVENTS), deltas)
        await session.execute(update(_JOBS).where(_C.id.in_(ids)).values(log_compacted_at=now))
        return PruneCounts(jobs_compacted=len(ids), events_deleted=_rowcount(removed) - len(deltas))


async def preview(
    sessions: async_sessionmaker[AsyncSession], policy: RetentionPolicy, now: datetime
) -> PruneCounts:
    """What prune passes at ``now`` would remove in all, changing nothing."""
    scopes = policy.scopes(now)
    deleting = select(_C.id).where(*_due(scopes, log=False))
    compacting = select(_C.id, _C.output).where(*_expiring(scopes, log=True)).subquery()
    async with sessions() as session:
        jobs_deleted = await session.scalar(select(func.count()).select_from(deleting.subquery()))
        events_of_deleted = await session.scalar(
            select(func.count()).select_from(_EVENTS).where(_E.job_id.in_(deleting))
        )
        jobs_compacted, with_output = (
            await session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((compacting.c.output != "", 1), else_=0)), 0),
                ).select_from(compacting)
            )
        ).one()
        events_of_compacted = await session.scalar(
            select(func.count()).select_from(_EVENTS).where(_E.job_id.in_(select(compacting.c.id)))
        )
    # A compacted log keeps the terminal event and, with output, one OutputDelta.
    kept = int(jobs_compacted) + int(with_output)
    return PruneCounts(
        jobs_compacted=int(jobs_compacted),
        events_deleted=int(events_of_deleted or 0) + int(events_of_compacted or 0) - kept,
        jobs_deleted=int(jobs_deleted or 0),
    )


async def reclaim_space(engine: AsyncEngine) -> None:
    """SQLite: give freed pages back to the file system (with auto_vacuum=INCREMENTAL, set
    on new databases; a no-op otherwise). PostgreSQL: autovacuum reuses the space."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        # The pragma frees one page per step, and a statement executed through the driver
        # is stepped once; a script runs it to the end (in its own implicit transaction).
        await raw.driver_connection.executescript(  # type: ignore[union-attr]
            f"PRAGMA incremental_vacuum({SQLITE_VACUUM_PAGES});"
        )


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)
