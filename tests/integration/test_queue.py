"""The jobs table as a queue: concurrent claims and concurrent event appends, on real
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.events.bus import BroadcastBus
from jobql.events.types import EventType
from jobql.models import Job, JobStatus
from jobql.repositories.jobs import JobRepository
from jobql.services.auth import Caller, KeyService
from jobql.services.jobs import JobService, SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.tasks import load_tasks


async def submit_many(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], n: int
) -> tuple[Caller, list[str]]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    caller, _ = await KeyService(sessions).create("queue-test")
    service = JobService(
        settings, sessions=sessions, bus=bus, tasks=load_tasks(settings.tasks_file)
    )
    ids = []
    for i in range(n):
        outcome = await service.submit(
            caller, SubmitRequest(api_version="v1", task="echo", input={"topic": str(i)})
        )
        assert isinstance(outcome, Submitted)
        ids.append(outcome.job.id)
    await bus.disconnect()
    return caller, ids


async def test_concurrent_workers_claim_each_job_exactly_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, ids = await submit_many(settings, sessions, 60)
    claims: Counter[str] = Counter()

    async def worker(name: str) -> None:
        while True:
            async with sessions() as session, session.begin():
                jobs = await JobRepository(session).claim(name, 4, timedelta(seconds=30))
            if not jobs:
                return
            for job in jobs:
                assert job.status == JobStatus.RUNNING.value
                assert job.lease_owner == name
                claims[job.id] += 1

    await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    assert set(claims) == set(ids)
    assert set(claims.values()) == {1}


async def test_claim_takes_the_oldest_first(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, ids = await submit_many(settings, sessions, 5)
    async with sessions() as session, session.begin():
        claimed = await JobRepository(session).claim("w", 2, timedelta(seconds=30))
    assert [j.id for j in claimed] == ids[:2]


async def test_concurrent_appends_get_gapless_seqs(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, (job_id,) = await submit_many(settings, sessions, 1)

    async def append(i: int) -> int:
        async with sessions() as session, session.begin():
            event = await JobRepository(session).append_event(
                job_id, EventType.PROGRESS, {"phase": f"p{i}", "message": ""}
            )
        assert event is not None
        return event.seq

    seqs = await asyncio.gather(*(append(i) for i in range(40)))
    assert sorted(seqs) == list(range(2, 42))  # seq 1 is JobQueued
    async with sessions() as session:
        log = await JobRepository(session).events_after(job_id, 0)
        job = await session.get(Job, job_id)
    assert [e.seq for e in log] == list(range(1, 42))
    assert job is not None
    assert job.last_seq == 41


async def test_guarded_append_refuses_a_worker_without_the_lease(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, (job_id,) = await submit_many(settings, sessions, 1)
    async with sessions() as session, session.begin():
        await JobRepository(session).claim("owner", 1, timedelta(seconds=30))
    async with sessions() as session, session.begin():
        event = await JobRepository(session).append_event(
            job_id, EventType.OUTPUT_DELTA, {"text": "x"}, where=[Job.lease_owner == "intruder"]
        )
    assert event is None
    async with sessions() as session:
        assert [e.type for e in await JobRepository(session).events_after(job_id, 0)] == [
            EventType.JOB_QUEUED
        ]
