"""Migration 0005 on SQLite and PostgreSQL: the usage rows per task and model are rebuilt
from the finished jobs, agree with the per-day usage they replace, take new jobs on top,
and go back to per-day usage on downgrade."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from jobql.models import Job, Principal
from jobql.repositories.database import create_engine, create_session_factory
from jobql.repositories.jobs import SqlJobStore
from jobql.repositories.migrate import alembic_config, upgrade
from jobql.repositories.usage import ModelKey, TaskKey, UsageRow, UsageTotals
from jobql.services.usage_report import (
    UsageGroup,
    UsageReport,
    UsageReportService,
    UsageWindow,
)
from jobql.states import Guard, Usage, succeed
from tests.backends import POSTGRES_URL, Databases, _pg_admin, _with_database, run_blocking

BEFORE = "0004_active_jobs_index"
DAY = date(2026, 3, 14)
NEXT = DAY + timedelta(days=1)


def at(day: date, hours: int, minutes: int = 0, micros: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=UTC) + timedelta(
        microseconds=micros
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(
    request: pytest.FixtureRequest, databases: Databases, tmp_path: Path
) -> Iterator[str]:
    """A database with no tables, to migrate step by step."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
        return
    databases.postgres_available()
    name = f"jobql_migrate_{uuid.uuid4().hex[:12]}"
    run_blocking(lambda: _pg_admin([f"CREATE DATABASE {name}"]))
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        run_blocking(lambda: _pg_admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]))


@pytest.fixture
async def engine(empty_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_database)
    yield engine
    await engine.dispose()


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


_SERIAL = itertools.count(1)


def job(principal: str, task: str, model: str, status: str, **values: Any) -> Job:
    """A job as the store leaves it; tokens and cost differ per job so sums tell them apart."""
    n = next(_SERIAL)
    columns: dict[str, Any] = {
        "input_tokens": 10 * n,
        "output_tokens": 100 * n,
        "cost_micros": 1_000 * n + 7,
        "created_at": at(DAY, 8),
    }
    return Job(
        id=str(uuid.uuid4()),
        principal_id=principal,
        status=status,
        task=task,
        api_version="v1",
        tier="generative",
        prompt_version="t1",
        provider="simulated",
        model_name=model,
        model_version=f"{model}-1",
        input={"topic": "x"},
        input_fingerprint="f" * 64,
        **(columns | values),
    )


def ran(day: date, hours: int, minutes: int = 0, micros: int = 0) -> dict[str, Any]:
    return {"started_at": at(DAY, 7), "finished_at": at(day, hours, minutes, micros)}


UNUSED = {"input_tokens": 0, "output_tokens": 0, "cost_micros": 0}


def jobs_before_the_migration(alice: str, bob: str) -> tuple[list[Job], list[Job]]:
    """Alice's and Bob's jobs: those that are usage (they ran and finished), and the rest."""
    billed = [
        job(alice, "echo", "sim-fast", "SUCCEEDED", **ran(DAY, 23, 59, 59_999_999)),  # last µs
        job(alice, "echo", "sim-fast", "SUCCEEDED", **ran(DAY, 9)),
        job(alice, "echo", "sim-fast", "FAILED", **ran(NEXT, 0)),  # the first µs of NEXT
        job(alice, "classify", "sim-small", "SUCCEEDED", **ran(DAY, 12)),
        # Cancelled while running: the request came before the worker stopped it.
        job(
            alice,
            "classify",
            "sim-small",
            "CANCELLED",
            cancel_requested_at=at(DAY, 13),
            **ran(DAY, 13, 1),
        ),
        job(bob, "echo", "sim-fast", "SUCCEEDED", **ran(DAY, 10)),
    ]
    not_usage = [
        # Cancelled while queued: it never ran (its cancel request is its finish).
        job(
            alice,
            "echo",
            "sim-fast",
            "CANCELLED",
            finished_at=at(DAY, 14),
            cancel_requested_at=at(DAY, 14),
            **UNUSED,
        ),
        # Ran, went back to the queue (its worker was lost), was cancelled there.
        job(
            alice,
            "echo",
            "sim-fast",
            "CANCELLED",
            started_at=at(DAY, 7),
            finished_at=at(DAY, 15),
            cancel_requested_at=at(DAY, 15),
            **UNUSED,
        ),
        job(alice, "echo", "sim-fast", "RUNNING", started_at=at(DAY, 16), **UNUSED),
        job(alice, "echo", "sim-fast", "QUEUED", **UNUSED),
    ]
    return billed, not_usage


def expected(jobs: list[Job], principal: str) -> UsageReport:
    rows: dict[tuple[date, str, str], UsageTotals] = {}
    for j in jobs:
        if j.principal_id != principal:
            continue
        assert j.finished_at is not None
        key = (j.finished_at.date(), j.task, j.model_name)
        rows[key] = rows.get(key, UsageTotals()) + UsageTotals(
            succeeded=int(j.status == "SUCCEEDED"),
            failed=int(j.status == "FAILED"),
            cancelled=int(j.status == "CANCELLED"),
            input_tokens=j.input_tokens,
            output_tokens=j.output_tokens,
            cost_micros=j.cost_micros,
        )
    usage_rows = tuple(
        UsageRow(
            totals=totals,
            day=day,
            task=TaskKey("v1", task),
            model=ModelKey("simulated", model, f"{model}-1"),
        )
        for (day, task, model), totals in sorted(rows.items())
    )
    total = sum((row.totals for row in usage_rows), UsageTotals())
    return UsageReport(UsageWindow(DAY, NEXT), tuple(UsageGroup), usage_rows, total)


async def per_day(engine: AsyncEngine, sql: str) -> set[tuple[str, str, int, int, int, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(sql))
        return {(r[0], str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows}


OLD_USAGE = "SELECT principal_id, day, jobs, input_tokens, output_tokens, cost_micros FROM usage"
NEW_USAGE_PER_DAY = (
    "SELECT principal_id, day, sum(succeeded + failed + cancelled), sum(input_tokens), "
    "sum(output_tokens), sum(cost_micros) FROM usage GROUP BY principal_id, day"
)


JOBS = Job.metadata.tables[Job.__tablename__]
# Columns of jobs that migrations after BEFORE add.
LATER_COLUMNS = {"log_compacted_at"}


def row_before(job: Job) -> dict[str, Any]:
    """The job as a row of the jobs table at BEFORE (unset columns take their defaults)."""
    row: dict[str, Any] = {}
    for attr in inspect(Job).column_attrs:
        column = attr.columns[0]
        if column.name in LATER_COLUMNS:
            continue
        value = getattr(job, attr.key)
        if value is None and column.default is not None and column.default.is_scalar:
            value = column.default.arg
        row[column.name] = value
    return row


async def test_usage_is_rebuilt_from_finished_jobs(engine: AsyncEngine) -> None:
    await upgrade(engine, BEFORE)
    sessions = create_session_factory(engine)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    billed, not_usage = jobs_before_the_migration(alice, bob)
    async with sessions() as session, session.begin():
        session.add_all([Principal(id=alice, name="alice"), Principal(id=bob, name="bob")])
        await session.flush()
        await session.execute(insert(JOBS), [row_before(j) for j in billed + not_usage])
    # What the per-day usage held before: what 0004's upsert added for each billed job.
    per_day_before: dict[tuple[str, date], list[int]] = {}
    for j in billed:
        assert j.finished_at is not None
        sums = per_day_before.setdefault((j.principal_id, j.finished_at.date()), [0, 0, 0, 0])
        for i, n in enumerate((1, j.input_tokens, j.output_tokens, j.cost_micros)):
            sums[i] += n
    async with engine.begin() as connection:
        for (principal, day), (n, tokens_in, tokens_out, cost) in per_day_before.items():
            await connection.execute(
                text(
                    "INSERT INTO usage (principal_id, day, jobs, input_tokens, output_tokens, "
                    "cost_micros) VALUES (:p, :d, :n, :i, :o, :c)"
                ),
                {"p": principal, "d": day, "n": n, "i": tokens_in, "o": tokens_out, "c": cost},
            )
    old = await per_day(engine, OLD_USAGE)
    assert len(old) == 3  # alice on DAY and NEXT, bob on DAY

    await upgrade(engine)

    # Per caller and day, the new rows add up to what the old table said (viewer.usageToday
    # and the daily cost cap read these sums).
    assert await per_day(engine, NEW_USAGE_PER_DAY) == old
    reports = UsageReportService(sessions)
    for principal in (alice, bob):
        report = await reports.report(principal, DAY, NEXT, list(UsageGroup))
        assert report == expected(billed, principal)
    by_task = await reports.report(alice, DAY, DAY, [UsageGroup.TASK])
    assert isinstance(by_task, UsageReport)
    assert [(r.task, r.totals.jobs) for r in by_task.rows] == [
        (TaskKey("v1", "classify"), 2),
        (TaskKey("v1", "echo"), 2),
    ]

    # A job finishing now adds to the rebuilt row of its day, task and model.
    store = SqlJobStore(sessions)
    claimed = await store.claim("worker-1", 1, timedelta(minutes=1))
    assert [c.job.id for c in claimed] == [not_usage[-1].id]
    finish = succeed(claimed[0].job, output="x", result=None, usage=Usage(1, 2, 3), at=at(DAY, 17))
    assert await store.finish(claimed[0].job.id, finish, Guard.lease("worker-1")) is not None
    after = await reports.report(alice, DAY, DAY, [UsageGroup.TASK])
    assert isinstance(after, UsageReport)
    assert after.rows[1].totals == by_task.rows[1].totals + UsageTotals(
        succeeded=1, input_tokens=1, output_tokens=2, cost_micros=3
    )

    # And back: one row per caller and day again, with the same sums.
    per_day_now = await per_day(engine, NEW_USAGE_PER_DAY)
    await downgrade(engine, BEFORE)
    assert await per_day(engine, OLD_USAGE) == per_day_now
