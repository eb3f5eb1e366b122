"""The JobStore retention contract: prune compacts and deletes finished jobs past their
windows, exactly once, and nothing else (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from jobql.events.types import EventType
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.repositories.store import JobStore
from jobql.services.retention import PruneCounts, RetentionPolicy, RetentionWindow, prune_pass
from jobql.states import Guard, Usage, succeed
from tests.contract.conftest import NewCaller
from tests.contract.test_job_store import add, add_many, new_job, running, spent_today, write

POLICY = RetentionPolicy(RetentionWindow(event_log_seconds=60, job_seconds=600))
USAGE = Usage(3, 4, 500)


async def finished(store: JobStore, caller: str, *texts: str, worker: str = "w") -> Job:
    """A job that streamed ``texts`` and succeeded with them as its output."""
    job = await running(store, caller, worker)
    (stored,) = await store.append_events([write(job.id, worker, *texts, usage=USAGE)])
    assert stored is not None
    finish = succeed(job, output="".join(texts), result=None, usage=USAGE, at=utcnow())
    assert await store.finish(job.id, finish, Guard.lease(worker)) is not None
    done = await store.get(job.id)
    assert done is not None
    assert done.finished_at is not None
    return done


def since_finish(job: Job, seconds: float) -> datetime:
    assert job.finished_at is not None
    return job.finished_at + timedelta(seconds=seconds)


def after_log_window(job: Job) -> datetime:
    return since_finish(job, 61)


def after_job_window(job: Job) -> datetime:
    return since_finish(job, 601)


async def test_a_log_past_its_window_is_compacted_to_the_output_and_the_terminal_event(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await finished(store, caller, "hello ", "wide ", "world")
    before = await store.events_after(job.id, 0)
    spent = await spent_today(store, caller)

    assert await store.prune(POLICY, since_finish(job, 59)) == PruneCounts()
    counts = await store.prune(POLICY, after_log_window(job))

    assert counts == PruneCounts(jobs_compacted=1, events_deleted=len(before) - 2)
    events = await store.events_after(job.id, 0)
    assert [(e.seq, e.type) for e in events] == [
        (job.last_seq - 1, EventType.OUTPUT_DELTA),
        (job.last_seq, EventType.JOB_SUCCEEDED),
    ]
    assert events[0].payload == {"text": "hello wide world"}
    assert events[1].payload == before[-1].payload
    after = await store.get(job.id)
    assert after is not None
    assert after.log_compacted_at is not None
    assert (after.output, after.status, after.last_seq) == (
        "hello wide world",
        "SUCCEEDED",
        job.last_seq,
    )
    assert (after.input_tokens, after.output_tokens, after.cost_micros) == (3, 4, 500)
    assert await spent_today(store, caller) == spent == 500
    # Resuming inside the compacted range gets the rest of the compacted form.
    assert [e.seq for e in await store.events_after(job.id, job.last_seq - 1)] == [job.last_seq]
    assert await store.prune(POLICY, after_log_window(job)) == PruneCounts()


async def test_a_job_without_output_keeps_only_its_terminal_event(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    queued = await store.get(job_id)
    assert queued is not None
    outcome = await store.cancel(caller, job_id, "changed my mind", utcnow())
    assert outcome is not None
    assert outcome.event is not None

    counts = await store.prune(POLICY, after_log_window(outcome.job))

    assert counts == PruneCounts(jobs_compacted=1, events_deleted=1)
    assert [(e.seq, e.type) for e in await store.events_after(job_id, 0)] == [
        (2, EventType.JOB_CANCELLED)
    ]


async def test_a_job_past_its_window_is_deleted_and_its_usage_stays(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await finished(store, caller, "a", "b")
    events = len(await store.events_after(job.id, 0))

    counts = await store.prune(POLICY, after_job_window(job))

    assert counts == PruneCounts(events_deleted=events, jobs_deleted=1)
    assert await store.get(job.id) is None
    assert await store.get_owned(caller, job.id) is None
    assert await store.events_after(job.id, 0) == []
    assert await store.cancel(caller, job.id, None, utcnow()) is None
    assert await store.list_owned(caller, limit=10, after=None, statuses=None) == []
    assert await spent_today(store, caller) == USAGE.cost_micros


async def test_active_jobs_and_jobs_inside_their_windows_are_never_touched(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    done = await finished(store, caller, "kept")
    live = await running(store, caller, "w2")
    await store.append_events([write(live.id, "w2", "still ", "going")])
    (queued_id,) = await add_many(store, caller, 1)
    logs = {j: await store.events_after(j, 0) for j in (done.id, live.id, queued_id)}

    # Inside the log window: nothing. Far in the future: only the finished job goes.
    assert await store.prune(POLICY, since_finish(done, 59)) == PruneCounts()
    assert await store.prune_preview(POLICY, after_job_window(done)) == PruneCounts(
        events_deleted=len(logs[done.id]), jobs_deleted=1
    )
    await store.prune(POLICY, after_job_window(done) + timedelta(days=365))

    for job_id in (live.id, queued_id):
        assert await store.events_after(job_id, 0) == logs[job_id]
    still = await store.get(live.id)
    assert still is not None
    assert (still.status, still.output) == ("RUNNING", "still going")
    assert await store.get(done.id) is None


async def test_tiers_follow_their_own_windows(store: JobStore, new_caller: NewCaller) -> None:
    caller = await new_caller()
    policy = RetentionPolicy(RetentionWindow(60, 600), {"agent": RetentionWindow(3600, 7200)})
    agent = new_job(caller)
    agent.tier = "agent"
    await add(store, agent)
    outcome = await store.cancel(caller, agent.id, None, utcnow())
    assert outcome is not None
    generative = await finished(store, caller, "g")
    streamed = len(await store.events_after(generative.id, 0))

    assert await store.prune(policy, since_finish(generative, 61)) == PruneCounts(
        jobs_compacted=1, events_deleted=streamed - 2
    )
    assert len(await store.events_after(agent.id, 0)) == 2  # its log window is an hour
    # An hour on, the generative job is past its job window, the agent one past its log
    # window only.
    assert await store.prune(policy, since_finish(outcome.job, 3601)) == PruneCounts(
        jobs_compacted=1, events_deleted=1 + 2, jobs_deleted=1
    )
    assert await store.get(generative.id) is None
    assert await store.prune(policy, since_finish(outcome.job, 7201)) == PruneCounts(
        events_deleted=1, jobs_deleted=1
    )


async def test_a_preview_counts_what_prune_then_removes(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    old = [await finished(store, caller, "x" * i, "y") for i in range(1, 4)]
    cancelled = (await add_many(store, caller, 1))[0]
    assert await store.cancel(caller, cancelled, None, utcnow()) is not None
    # Compact the first one now, so the preview sees compacted, whole and expired logs.
    first = await store.prune(POLICY, after_log_window(old[0]), limit=1)
    assert first.jobs_compacted == 1
    jobs = await store.list_owned(caller, limit=10, after=None, statuses=None)
    past_logs = max(after_log_window(job) for job in jobs)
    past_jobs = max(after_job_window(job) for job in jobs)

    for at, expected in ((past_logs, (0, 3)), (past_jobs, (4, 0))):
        preview = await store.prune_preview(POLICY, at)
        assert await store.prune_preview(POLICY, at) == preview  # a preview changes nothing
        removed = await prune_pass(store, POLICY, at, batch_size=2)

        assert removed == preview
        assert (preview.jobs_deleted, preview.jobs_compacted) == expected
        assert await store.prune_preview(POLICY, at) == PruneCounts()


async def test_concurrent_prunes_take_each_job_once(store: JobStore, new_caller: NewCaller) -> None:
    caller = await new_caller()
    jobs = [await finished(store, caller, f"job {i} ", "done") for i in range(24)]
    events = {j.id: len(await store.events_after(j.id, 0)) for j in jobs}
    at = max(after_log_window(j) for j in jobs)

    compacting = await asyncio.gather(
        *(prune_pass(store, POLICY, at, batch_size=5) for _ in range(3))
    )

    assert sum(c.jobs_compacted for c in compacting) == len(jobs)
    assert sum(c.events_deleted for c in compacting) == sum(n - 2 for n in events.values())
    for job in jobs:
        kept = await store.events_after(job.id, 0)
        assert [e.type for e in kept] == [EventType.OUTPUT_DELTA, EventType.JOB_SUCCEEDED]
        assert kept[0].payload["text"] == job.output

    deleting = await asyncio.gather(
        *(
            prune_pass(store, POLICY, max(after_job_window(j) for j in jobs), batch_size=5)
            for _ in range(3)
        )
    )
    assert sum(c.jobs_deleted for c in deleting) == len(jobs)
    assert sum(c.events_deleted for c in deleting) == 2 * len(jobs)
    assert sum(c.jobs_compacted for c in deleting) == 0
    assert await store.list_owned(caller, limit=100, after=None, statuses=None) == []
    assert await spent_today(store, caller) == len(jobs) * USAGE.cost_micros
