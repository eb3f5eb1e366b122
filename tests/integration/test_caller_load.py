"""The one statement every submit runs when limits are on: what a caller has in flight,
what it spent today and which job holds the idempotency key, on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.events.bus import BroadcastBus
from jobql.models import Job, JobStatus, UsageDay
from jobql.models.base import utcnow
from jobql.repositories.jobs import SqlJobStore
from jobql.repositories.principals import PrincipalRepository
from jobql.services.auth import Caller, KeyService
from jobql.services.jobs import JobService, SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.tasks import load_tasks

ACTIVE_INDEX = "ix_jobs_active_principal_id"


async def submit(
    service: JobService, caller: Caller, count: int, key_prefix: str
) -> list[Submitted]:
    outcomes = []
    for i in range(count):
        outcome = await service.submit(
            caller,
            SubmitRequest(
                api_version="v1",
                task="echo",
                input={"topic": f"{key_prefix} {i}"},
                idempotency_key=f"{key_prefix}{i}",
            ),
        )
        assert isinstance(outcome, Submitted)
        outcomes.append(outcome)
    return outcomes


async def set_status(
    sessions: async_sessionmaker[AsyncSession], job_ids: list[str], status: JobStatus
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id.in_(job_ids)).values(status=status.value))


async def test_load_counts_only_the_callers_active_jobs_and_todays_spending(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    bus = BroadcastBus("memory://")
    await bus.connect()
    keys = KeyService(sessions)
    alice, _ = await keys.create("alice")
    bob, _ = await keys.create("bob")
    service = JobService(
        settings, store=SqlJobStore(sessions), bus=bus, tasks=load_tasks(settings.tasks_file)
    )
    mine = [o.job for o in await submit(service, alice, 6, "k")]
    theirs = [o.job for o in await submit(service, bob, 2, "k")]  # same keys, other caller
    await bus.disconnect()
    await set_status(sessions, [mine[0].id], JobStatus.SUCCEEDED)
    await set_status(sessions, [mine[1].id], JobStatus.CANCELLED)
    await set_status(sessions, [mine[2].id], JobStatus.FAILED)
    await set_status(sessions, [mine[3].id, theirs[0].id], JobStatus.RUNNING)
    today = utcnow().date()
    model = {"api_version": "v1", "provider": "simulated", "model_name": "m", "model_version": "1"}
    async with sessions() as session, session.begin():
        session.add_all(
            [  # the day's spending is the sum over its tasks and models
                UsageDay(principal_id=alice.id, day=today, task="a", cost_micros=400, **model),
                UsageDay(principal_id=alice.id, day=today, task="b", cost_micros=300, **model),
                UsageDay(
                    principal_id=alice.id,
                    day=today - timedelta(days=1),
                    task="a",
                    cost_micros=5000,
                    **model,
                ),
                UsageDay(principal_id=bob.id, day=today, task="a", cost_micros=300, **model),
            ]
        )

    async with sessions() as session, session.begin():
        principals = PrincipalRepository(session)
        load = await principals.lock_and_load(alice.id, today, "k4")
        missing = await principals.load(alice.id, today, "k99")
        unkeyed = await principals.load(alice.id, today)
        finished_key = await principals.load(alice.id, today, "k0")
        bobs = await principals.load(bob.id, today, "k1")

    active = mine[3:]  # one running, two queued
    assert load.active == 3
    assert load.reserved_micros == sum(j.reserved_micros for j in active) > 0
    assert load.spent_micros == 700
    assert load.keyed_job_id == mine[4].id
    assert missing.keyed_job_id is None
    assert unkeyed.keyed_job_id is None
    assert (missing.active, missing.reserved_micros, missing.spent_micros) == (
        load.active,
        load.reserved_micros,
        load.spent_micros,
    )
    assert finished_key.keyed_job_id == mine[0].id  # a key stays taken after its job ends
    assert (bobs.active, bobs.spent_micros, bobs.keyed_job_id) == (2, 300, theirs[1].id)


async def test_load_reads_active_jobs_through_the_partial_index(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The cost of a submit must not grow with the caller's history: the load statement
    reads the active jobs through the partial index, which a planner can only use when it
    sees the index's own predicate (bound statuses hide it). The statement checked is the
    one the driver is sent; on PostgreSQL, through its generic plan, the one a prepared
    statement settles on after a few executions."""
    sent: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        _conn, _cursor, statement, parameters, _context, _many = args
        sent.append((statement, parameters))

    async with sessions() as session, session.begin():
        connection = await session.connection()
        event.listen(connection.sync_engine, "before_cursor_execute", record)
        try:
            await PrincipalRepository(session).load("p", utcnow().date(), "k")
        finally:
            event.remove(connection.sync_engine, "before_cursor_execute", record)
        ((statement, parameters),) = sent
        if connection.dialect.name == "sqlite":
            plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        else:
            values = ", ".join(str(v) if isinstance(v, int) else f"'{v}'" for v in parameters)
            await connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await connection.exec_driver_sql(f"PREPARE caller_load AS {statement}")
            plan = await connection.exec_driver_sql(f"EXPLAIN EXECUTE caller_load({values})")
        lines = [" ".join(str(v) for v in row) for row in plan]
    assert any(ACTIVE_INDEX in line for line in lines), "\n".join(lines)
