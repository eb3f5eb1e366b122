"""Many live streams in one process, on real SQLite and PostgreSQL (with their buses): every
subscriber gets every event once, a stolen lease stops only its job, and the per-event write
does not grow with the length of the output."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.engine import Connection

from jobql.events.types import EventType, StoredEvent
from jobql.models import Job, JobStatus
from jobql.providers.simulated import SimulatedProvider
from jobql.repositories.store import EventWrite, NewEvent
from jobql.runtime import Runtime, build_providers, open_runtime
from jobql.services.auth import Caller
from jobql.services.container import Services, open_services
from jobql.services.jobs import SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.states import Usage

STREAMS = 100
LONG_OUTPUT_TOKENS = 100_000

TASKS = f"""
[v1.paced]
tier = "generative"
prompt_version = "t1"
prompt = "Write about $topic."
max_output_tokens = 200
input_schema = {{ type = "object", required = ["topic"] }}
[v1.paced.model]
provider = "simulated"
name = "sim"
version = "sim-1"
options = {{ tokens_per_second = 100, length = 80 }}

[v1.endless]
tier = "generative"
prompt_version = "t1"
prompt = "Write forever about $topic."
max_output_tokens = 100000
input_schema = {{ type = "object", required = ["topic"] }}
[v1.endless.model]
provider = "simulated"
name = "sim"
version = "sim-1"
options = {{ tokens_per_second = 50, length = 100000 }}

[v1.long]
tier = "generative"
prompt_version = "t1"
prompt = "Write at length about $topic."
max_output_tokens = {LONG_OUTPUT_TOKENS}
input_schema = {{ type = "object", required = ["topic"] }}
[v1.long.model]
provider = "simulated"
name = "sim"
version = "sim-1"
options = {{ tokens_per_second = 0, length = {LONG_OUTPUT_TOKENS} }}
"""


@contextlib.asynccontextmanager
async def running(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, Services, Caller, SimulatedProvider]]:
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(TASKS)
    settings = settings.model_copy(update={"tasks_file": tasks, "lease_seconds": 30})
    provider = SimulatedProvider()
    async with (
        open_runtime(
            settings, with_worker=True, providers=build_providers(settings, simulated=provider)
        ) as runtime,
        open_services(runtime) as services,
    ):
        caller, _ = await services.keys.create("streams")
        yield runtime, services, caller, provider


async def submit(services: Services, caller: Caller, task: str, topic: str) -> Job:
    outcome = await services.jobs.submit(
        caller, SubmitRequest(api_version="v1", task=task, input={"topic": topic})
    )
    assert isinstance(outcome, Submitted)
    return outcome.job


async def follow(services: Services, caller: Caller, job_id: str) -> list[StoredEvent]:
    stream = await services.streams.open(caller, job_id, after=0)
    assert hasattr(stream, "__aiter__"), stream
    events = []
    async with contextlib.aclosing(stream):
        async for item in stream:
            if isinstance(item, StoredEvent):
                events.append(item)
    return events


def deltas(events: list[StoredEvent]) -> str:
    return "".join(e.payload["text"] for e in events if e.type is EventType.OUTPUT_DELTA)


async def test_every_one_of_a_hundred_subscribers_gets_its_stream_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    async with running(settings, tmp_path) as (runtime, services, caller, _):
        jobs = [await submit(services, caller, "paced", f"t{i}") for i in range(STREAMS)]
        streams = await asyncio.gather(*(follow(services, caller, job.id) for job in jobs))
        assert runtime.worker is not None
        writes = sum(1 for events in streams for e in events if e.type is EventType.OUTPUT_DELTA)
        batches = runtime.worker.writer.batches
        for job, events in zip(jobs, streams, strict=True):
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[0].type is EventType.JOB_QUEUED
            assert events[-1].type is EventType.JOB_SUCCEEDED
            stored = await runtime.store.get(job.id)
            assert stored is not None
            assert stored.status == JobStatus.SUCCEEDED.value
            assert stored.output == deltas(events) == events[-1].payload["output"]
            assert stored.output_tokens == 80
            assert stored.last_seq == events[-1].seq
    # The writes of concurrent streams shared transactions.
    assert batches < writes


async def test_a_lease_lost_mid_stream_stops_only_that_jobs_writes(
    settings: Settings, tmp_path: Path
) -> None:
    async with running(settings, tmp_path) as (runtime, services, caller, provider):
        victim = await submit(services, caller, "endless", "victim")
        others = [await submit(services, caller, "paced", f"o{i}") for i in range(20)]
        followers = [asyncio.create_task(follow(services, caller, j.id)) for j in others]
        # Wait until the victim streams, then give its lease to another worker.
        stream = await services.streams.open(caller, victim.id, after=0)
        assert hasattr(stream, "__aiter__")
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, StoredEvent) and item.type is EventType.OUTPUT_DELTA:
                    break
        async with runtime.sessions() as db, db.begin():
            stolen_at = (
                await db.execute(
                    update(Job)
                    .where(Job.id == victim.id)
                    .values(lease_owner="another-worker")
                    .returning(Job.last_seq)
                )
            ).scalar_one()
        # The worker finds out at its next write and closes the provider stream.
        record = provider.records[f"{victim.id}:1"]
        await asyncio.wait_for(record.stopped.wait(), 10)
        assert record.closed
        assert not record.finished
        for events in await asyncio.gather(*followers):
            assert events[-1].type is EventType.JOB_SUCCEEDED
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
        # Its runner saw the refused write before it closed the stream: nothing after.
        assert await runtime.store.events_after(victim.id, stolen_at) == []
        stored = await runtime.store.get(victim.id)
        assert stored is not None
        assert (stored.status, stored.lease_owner) == (JobStatus.RUNNING.value, "another-worker")


async def test_a_hundred_thousand_token_output_costs_the_same_per_event(
    settings: Settings, tmp_path: Path
) -> None:
    statements: list[tuple[str, Any]] = []

    def record(conn: Connection, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    async with running(settings, tmp_path) as (runtime, services, caller, _):
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
        job = await submit(services, caller, "long", "everything")
        events = await follow(services, caller, job.id)
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)
        stored = await runtime.store.get(job.id)

    assert stored is not None
    assert stored.status == JobStatus.SUCCEEDED.value
    assert stored.output_tokens == LONG_OUTPUT_TOKENS
    assert stored.output == deltas(events)
    written = [e for e in events if e.type is EventType.OUTPUT_DELTA]
    assert len(written) > 10

    def compact(sql: str) -> str:
        return " ".join(sql.split()).replace(" = ", "=").replace(" =", "=")

    sql = [(compact(s), p) for s, p in statements]
    appends = [s for s, _ in sql if "last_seq + b.n" in s]
    assert len(appends) == len(written)
    # One job streaming alone: every batch is the same statement, whatever the output's
    # length so far, and it does not touch the output column.
    assert len(set(appends)) == 1
    assert "output=" not in appends[0]
    # The output is written once, by the terminal transition (the claim only resets it).
    job_updates = [s for s, _ in sql if "UPDATE jobs SET" in s and "claimable" not in s]
    rewriting = [s for s in job_updates if "output=" in s]
    assert len(rewriting) == 1
    assert "status=" in rewriting[0]
    # Each event row carries its own delta, never the output so far.
    largest_delta = max(len(e.payload["text"]) for e in written)
    # (JobSucceeded carries the whole output by contract; it is written once.)
    inserts = [
        p
        for s, p in sql
        if s.startswith("INSERT INTO job_events") and EventType.JOB_SUCCEEDED.value not in repr(p)
    ]
    assert len(inserts) >= len(written)
    assert max(len(repr(p)) for p in inserts) < 2 * largest_delta + 2000


async def test_event_batches_and_lease_renewals_do_not_deadlock(
    settings: Settings, tmp_path: Path
) -> None:
    """Both update many job rows at once; on PostgreSQL they lock them in one order."""
    settings = settings.model_copy(update={"inline_worker": False})
    async with (
        open_runtime(settings, with_worker=False) as runtime,
        open_services(runtime) as services,
    ):
        caller, _ = await services.keys.create("locks")
        jobs = [await submit(services, caller, "echo", f"j{i}") for i in range(40)]
        claimed = await runtime.store.claim("w", len(jobs), timedelta(seconds=30))
        ids = sorted(c.job.id for c in claimed)
        assert len(ids) == len(jobs)

        async def append(order: list[str]) -> None:
            delta = (NewEvent(EventType.OUTPUT_DELTA, {"text": "x"}),)
            results = await runtime.store.append_events(
                [EventWrite(job_id, "w", delta, Usage()) for job_id in order]
            )
            assert all(r is not None for r in results)

        for _ in range(15):
            await asyncio.gather(
                append(ids[::-1]),
                runtime.store.renew_leases("w", ids, timedelta(seconds=30)),
                append(ids[::2] + ids[1::2][::-1]),
                runtime.store.renew_leases("w", ids[::-1], timedelta(seconds=30)),
            )
        assert {e.seq for e in await runtime.store.events_after(ids[0], 2)} == set(range(3, 33))
