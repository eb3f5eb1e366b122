"""The jobs table as a queue: concurrent claims and concurrent event appends, on real
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.events.bus import BroadcastBus
from jobql.events.types import EventType
from jobql.models import JobStatus
from jobql.repositories.jobs import SqlJobStore
from jobql.repositories.store import EventWrite, NewEvent
from jobql.services.auth import Caller, KeyService
from jobql.services.jobs import JobService, SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.states import Usage
from jobql.tasks import load_tasks


async def submit_many(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], n: int
) -> tuple[Caller, list[str]]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    caller, _ = await KeyService(sessions).create("queue-test")
    service = JobService(
        settings, store=SqlJobStore(sessions), bus=bus, tasks=load_tasks(settings.tasks_file)
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
            claimed = await SqlJobStore(sessions).claim(name, 4, timedelta(seconds=30))
            if not claimed:
                return
            for job in (c.job for c in claimed):
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
    claimed = await SqlJobStore(sessions).claim("w", 2, timedelta(seconds=30))
    assert [c.job.id for c in claimed] == ids[:2]
    assert [(c.started.seq, c.started.payload) for c in claimed] == [(2, {"attempt": 1})] * 2


async def test_concurrent_appends_get_gapless_seqs(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, (job_id,) = await submit_many(settings, sessions, 1)
    store = SqlJobStore(sessions)
    await store.claim("w", 1, timedelta(seconds=30))  # seq 2: JobStarted

    async def append(i: int) -> list[int]:
        write = EventWrite(
            job_id, "w", (NewEvent(EventType.PROGRESS, {"phase": f"p{i}", "message": ""}),), Usage()
        )
        (events,) = await store.append_events([write])
        assert events is not None
        return [e.seq for e in events]

    seqs = [seq for batch in await asyncio.gather(*(append(i) for i in range(40))) for seq in batch]
    assert sorted(seqs) == list(range(3, 43))
    log = await store.events_after(job_id, 0)
    job = await store.get(job_id)
    assert [e.seq for e in log] == list(range(1, 43))
    assert job is not None
    assert job.last_seq == 42


async def test_guarded_append_refuses_a_worker_without_the_lease(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, (job_id,) = await submit_many(settings, sessions, 1)
    store = SqlJobStore(sessions)
    await store.claim("owner", 1, timedelta(seconds=30))
    write = EventWrite(
        job_id, "intruder", (NewEvent(EventType.OUTPUT_DELTA, {"text": "x"}),), Usage()
    )
    assert await store.append_events([write]) == [None]
    assert [e.type for e in await store.events_after(job_id, 0)] == [
        EventType.JOB_QUEUED,
        EventType.JOB_STARTED,
    ]
