"""The JobStore contract: every implementation (memory, SQLite, PostgreSQL) behaves alike."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from datetime import datetime, timedelta

import pytest

from jobql.errors import ErrorCode, JobError
from jobql.events.types import EventType
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.repositories.store import (
    EventWrite,
    IdempotencyKeyTaken,
    JobStore,
    NewEvent,
    PageCursor,
)
from jobql.states import CancelAction, Guard, JobStatus, Usage, fail, succeed
from tests.contract.conftest import NewCaller

LEASE = timedelta(seconds=30)
EXPIRED = timedelta(seconds=-1)  # a lease that has run out already


def new_job(
    principal_id: str,
    *,
    key: str | None = None,
    created_at: datetime | None = None,
    reserved_micros: int = 0,
    max_attempts: int = 3,
) -> Job:
    """A job as JobService builds it at submit."""
    now = created_at or utcnow()
    return Job(
        id=str(uuid.uuid4()),
        principal_id=principal_id,
        status=JobStatus.QUEUED.value,
        task="echo",
        api_version="v1",
        tier="generative",
        prompt_version="t1",
        provider="simulated",
        model_name="sim-fast",
        model_version="sim-fast-1",
        input={"topic": "contracts"},
        input_fingerprint="f" * 64,
        idempotency_key=key,
        max_attempts=max_attempts,
        reserved_micros=reserved_micros,
        created_at=now,
        deadline_at=now + timedelta(seconds=60),
        output="",
    )


async def add(store: JobStore, job: Job) -> Job:
    async with store.admission(job.principal_id, day=None, key=job.idempotency_key) as admit:
        await admit.insert(job)
    return job


async def add_many(store: JobStore, principal_id: str, n: int) -> list[str]:
    """``n`` jobs with distinct, increasing creation times (the queue's order)."""
    base = utcnow() - timedelta(minutes=1)
    jobs = [new_job(principal_id, created_at=base + timedelta(milliseconds=i)) for i in range(n)]
    for job in jobs:
        await add(store, job)
    return [job.id for job in jobs]


async def running(store: JobStore, principal_id: str, worker: str = "w") -> Job:
    (job_id,) = await add_many(store, principal_id, 1)
    (claimed,) = await store.claim(worker, 1, LEASE)
    assert claimed.job.id == job_id
    return claimed.job


def write(job_id: str, worker: str, *texts: str, usage: Usage | None = None) -> EventWrite:
    events = tuple(NewEvent(EventType.OUTPUT_DELTA, {"text": t}) for t in texts)
    return EventWrite(job_id, worker, events, usage or Usage())


async def types(store: JobStore, job_id: str) -> list[EventType]:
    return [e.type for e in await store.events_after(job_id, 0)]


async def spent_today(store: JobStore, principal_id: str) -> int:
    async with store.admission(principal_id, day=utcnow().date(), key=None) as admit:
        assert admit.load is not None
        return admit.load.spent_micros


# -- admission -------------------------------------------------------------------------


async def test_admission_stores_the_job_with_job_queued_as_seq_1(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = new_job(caller)
    async with store.admission(caller, day=utcnow().date(), key=None) as admit:
        assert admit.keyed_job is None
        event = await admit.insert(job)
    assert (event.job_id, event.seq, event.type) == (job.id, 1, EventType.JOB_QUEUED)
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.last_seq, stored.attempts) == ("QUEUED", 1, 0)
    assert [(e.seq, e.type) for e in await store.events_after(job.id, 0)] == [
        (1, EventType.JOB_QUEUED)
    ]


async def test_an_admission_left_by_an_exception_stores_nothing(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = new_job(caller)

    async def refuse_after_insert() -> None:
        async with store.admission(caller, day=None, key=None) as admit:
            await admit.insert(job)
            raise RuntimeError("refused after the insert")

    with pytest.raises(RuntimeError):
        await refuse_after_insert()
    assert await store.get(job.id) is None


@pytest.mark.parametrize("limits", [True, False], ids=["limits", "no-limits"])
async def test_a_second_admission_finds_the_job_holding_the_key(
    store: JobStore, new_caller: NewCaller, limits: bool
) -> None:
    caller, other = await new_caller(), await new_caller()
    first = await add(store, new_job(caller, key="k1"))
    day = utcnow().date() if limits else None
    async with store.admission(caller, day=day, key="k1") as admit:
        assert admit.keyed_job is not None
        assert admit.keyed_job.id == first.id
        if limits:
            assert admit.load is not None
            assert admit.load.keyed_job_id == first.id
        else:
            assert admit.load is None
    # Keys belong to their caller: another caller's admission sees no job for it.
    async with store.admission(other, day=day, key="k1") as admit:
        assert admit.keyed_job is None
        await admit.insert(new_job(other, key="k1"))


async def test_concurrent_admissions_with_one_key_store_exactly_one_job(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    jobs = [new_job(caller, key="same") for _ in range(5)]

    async def admit(job: Job) -> str:
        try:
            async with store.admission(caller, day=None, key="same") as admission:
                await admission.insert(job)
        except IdempotencyKeyTaken:
            return "taken"
        return job.id

    outcomes = await asyncio.gather(*(admit(job) for job in jobs))
    stored = [o for o in outcomes if o != "taken"]
    assert len(stored) == 1
    assert outcomes.count("taken") == 4
    keyed = await store.by_idempotency_key(caller, "same")
    assert keyed is not None
    assert keyed.id == stored[0]
    assert [await store.get(job.id) is not None for job in jobs].count(True) == 1


async def test_forget_key_lets_a_new_job_take_an_expired_key(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    old = await add(store, new_job(caller, key="k"))
    new = new_job(caller, key="k")
    async with store.admission(caller, day=None, key="k") as admit:
        assert admit.keyed_job is not None
        await admit.forget_key(admit.keyed_job.id)
        await admit.insert(new)
    keyed = await store.by_idempotency_key(caller, "k")
    assert keyed is not None
    assert keyed.id == new.id
    old_now = await store.get(old.id)
    assert old_now is not None
    assert old_now.idempotency_key is None


async def test_load_counts_the_callers_active_jobs_reservations_and_spending_today(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller, other = await new_caller(), await new_caller()
    base = utcnow() - timedelta(minutes=1)
    done = await add(store, new_job(caller, created_at=base, reserved_micros=1_000))
    (claimed,) = await store.claim("w", 1, LEASE)
    assert claimed.job.id == done.id
    finish = succeed(claimed.job, output="", result=None, usage=Usage(10, 20, 5_000), at=utcnow())
    assert await store.finish(done.id, finish, Guard.lease("w")) is not None

    await add(store, new_job(caller, created_at=base + timedelta(seconds=1), reserved_micros=300))
    await store.claim("w", 1, LEASE)  # running now, still held against the caller
    await add(store, new_job(caller, reserved_micros=100))
    await add(store, new_job(caller, reserved_micros=200))
    cancelled = await add(store, new_job(caller, reserved_micros=10_000))
    await store.cancel(caller, cancelled.id, None, utcnow())
    await add(store, new_job(other, reserved_micros=50_000))

    async with store.admission(caller, day=utcnow().date(), key=None) as admit:
        assert admit.load is not None
        assert (admit.load.active, admit.load.reserved_micros, admit.load.spent_micros) == (
            3,
            600,
            5_000,
        )
        assert admit.load.keyed_job_id is None
    yesterday = utcnow().date() - timedelta(days=1)
    async with store.admission(caller, day=yesterday, key=None) as admit:
        assert admit.load is not None
        assert admit.load.spent_micros == 0


# -- the queue -------------------------------------------------------------------------


async def test_claim_takes_the_oldest_first_within_the_limit(
    store: JobStore, new_caller: NewCaller
) -> None:
    ids = await add_many(store, await new_caller(), 5)
    claimed = await store.claim("w", 2, LEASE)
    assert [c.job.id for c in claimed] == ids[:2]
    assert [(c.started.seq, c.started.type, c.started.payload) for c in claimed] == [
        (2, EventType.JOB_STARTED, {"attempt": 1})
    ] * 2
    for c in claimed:
        assert (c.job.status, c.job.lease_owner, c.job.attempts, c.job.last_seq) == (
            "RUNNING",
            "w",
            1,
            2,
        )
        assert c.job.lease_expires_at is not None
        assert c.job.lease_expires_at > utcnow()
    assert await types(store, ids[0]) == [EventType.JOB_QUEUED, EventType.JOB_STARTED]
    assert [c.job.id for c in await store.claim("w2", 10, LEASE)] == ids[2:]
    assert await store.claim("w3", 10, LEASE) == []


async def test_concurrent_workers_claim_each_job_exactly_once(
    store: JobStore, new_caller: NewCaller
) -> None:
    ids = await add_many(store, await new_caller(), 60)
    claims: Counter[str] = Counter()

    async def worker(name: str) -> None:
        while claimed := await store.claim(name, 4, LEASE):
            assert len(claimed) <= 4
            for job in (c.job for c in claimed):
                assert (job.status, job.lease_owner) == ("RUNNING", name)
                claims[job.id] += 1

    await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    assert set(claims) == set(ids)
    assert set(claims.values()) == {1}


async def test_renew_leases_answers_cancel_requests_and_omits_jobs_not_held(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    a, b, theirs, queued = await add_many(store, caller, 4)
    await store.claim("w", 2, LEASE)
    await store.claim("other", 1, LEASE)
    at = utcnow()
    outcome = await store.cancel(caller, a, "stop", at)
    assert outcome is not None
    before = await store.get(b)
    assert before is not None
    assert before.lease_expires_at is not None

    renewed = await store.renew_leases("w", [a, b, theirs, queued], timedelta(seconds=120))
    assert renewed == {a: at, b: None}
    after = await store.get(b)
    assert after is not None
    assert after.lease_expires_at is not None
    assert after.lease_expires_at > before.lease_expires_at
    assert await store.renew_leases("w", [], LEASE) == {}


async def test_held_answers_the_running_jobs_of_one_worker(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    first, second, other, queued = await add_many(store, caller, 4)
    await store.claim("w", 2, LEASE)
    await store.claim("other", 1, LEASE)
    assert [job.id for job in await store.held("w")] == [first, second]
    assert [job.id for job in await store.held("other")] == [other]
    (held,) = [job for job in await store.held("w") if job.id == first]
    assert (held.status, held.lease_owner, held.last_seq) == ("RUNNING", "w", 2)
    assert held.lease_expires_at is not None
    assert await store.held("nobody") == []
    assert (await store.get(queued)) is not None


async def test_concurrent_appends_get_gapless_seqs(store: JobStore, new_caller: NewCaller) -> None:
    job = await running(store, await new_caller())  # seq 2: JobStarted

    async def append(i: int) -> list[int]:
        progress = NewEvent(EventType.PROGRESS, {"phase": f"p{i}", "message": ""})
        (events,) = await store.append_events([EventWrite(job.id, "w", (progress,), Usage())])
        assert events is not None
        return [e.seq for e in events]

    seqs = [s for batch in await asyncio.gather(*(append(i) for i in range(40))) for s in batch]
    assert sorted(seqs) == list(range(3, 43))
    assert [e.seq for e in await store.events_after(job.id, 0)] == list(range(1, 43))
    stored = await store.get(job.id)
    assert stored is not None
    assert stored.last_seq == 42


async def test_a_batch_appends_to_several_jobs_and_skips_one_not_held(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    first, second, lost = await add_many(store, caller, 3)
    await store.claim("w", 2, LEASE)
    await store.claim("other", 1, LEASE)
    phase = NewEvent(EventType.PROGRESS, {"phase": "writing", "message": ""})
    results = await store.append_events(
        [
            write(first, "w", "a", "b", usage=Usage(5, 2, 900)),
            EventWrite(second, "w", (phase,), Usage(5, 0, 100), phase="writing"),
            write(lost, "w", "never"),
        ]
    )
    assert [[(e.seq, e.type) for e in r] if r is not None else None for r in results] == [
        [(3, EventType.OUTPUT_DELTA), (4, EventType.OUTPUT_DELTA)],
        [(3, EventType.PROGRESS)],
        None,
    ]
    assert await types(store, lost) == [EventType.JOB_QUEUED, EventType.JOB_STARTED]
    one = await store.get(first)
    assert one is not None
    assert (one.input_tokens, one.output_tokens, one.cost_micros, one.last_seq) == (5, 2, 900, 4)
    assert one.output == "ab"

    # A write without a phase keeps the one the job has.
    (events,) = await store.append_events([write(second, "w", "c", usage=Usage(5, 1, 300))])
    assert events is not None
    assert [e.seq for e in events] == [4]
    two = await store.get(second)
    assert two is not None
    assert (two.phase, two.output_tokens, two.cost_micros) == ("writing", 1, 300)


async def test_a_write_after_a_seq_appends_once_and_its_retry_answers_what_is_stored(
    store: JobStore, new_caller: NewCaller
) -> None:
    job = await running(store, await new_caller())  # seq 2: JobStarted
    first = dataclasses.replace(write(job.id, "w", "a", "b", usage=Usage(1, 2, 3)), after_seq=2)
    (stored,) = await store.append_events([first])
    assert stored is not None
    assert [e.seq for e in stored] == [3, 4]
    # The same write again, as after a commit whose answer was lost: nothing is added.
    (again,) = await store.append_events([first])
    assert again is not None
    assert [(e.seq, e.type, e.payload) for e in again] == [
        (e.seq, e.type, e.payload) for e in stored
    ]
    assert [e.seq for e in await store.events_after(job.id, 0)] == [1, 2, 3, 4]
    # A write after a seq the job has moved past otherwise is refused, not appended.
    stale = dataclasses.replace(write(job.id, "w", "x"), after_seq=2)
    assert await store.append_events([stale]) == [None]
    # Only the lease holder gets its events back.
    assert await store.append_events([dataclasses.replace(first, worker_id="other")]) == [None]
    following = dataclasses.replace(write(job.id, "w", "c"), after_seq=4)
    (next_events,) = await store.append_events([following])
    assert next_events is not None
    assert [e.seq for e in next_events] == [5]
    current = await store.get(job.id)
    assert current is not None
    assert (current.last_seq, current.output) == (5, "abc")


async def test_concurrent_retries_of_one_write_store_its_events_once(
    store: JobStore, new_caller: NewCaller
) -> None:
    job = await running(store, await new_caller())
    retried = dataclasses.replace(write(job.id, "w", "once", "only"), after_seq=2)
    answers = await asyncio.gather(*(store.append_events([retried]) for _ in range(8)))
    assert {tuple(e.seq for e in answer[0] or []) for answer in answers} == {(3, 4)}
    events = await store.events_after(job.id, 0)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.payload.get("text") for e in events[2:]] == ["once", "only"]


async def test_a_batch_takes_one_write_per_job(store: JobStore, new_caller: NewCaller) -> None:
    job = await running(store, await new_caller())
    with pytest.raises(ValueError, match="one write per job"):
        await store.append_events([write(job.id, "w", "a"), write(job.id, "w", "b")])
    assert await store.append_events([]) == []


# -- reads -----------------------------------------------------------------------------


async def test_a_running_jobs_output_is_its_log_and_a_finished_ones_its_column(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await running(store, caller)
    await store.append_events([write(job.id, "w", "Hello", ", ")])
    await store.append_events([write(job.id, "w", "world")])

    async def outputs() -> list[str]:
        got = await store.get(job.id)
        owned = await store.get_owned(caller, job.id)
        (listed,) = await store.list_owned(caller, limit=10, after=None, statuses=None)
        assert got is not None
        assert owned is not None
        return [got.output, owned.output, listed.output]

    assert await outputs() == ["Hello, world"] * 3
    bare = await store.get(job.id, with_output=False)
    assert bare is not None
    assert bare.output == ""

    finish = succeed(job, output="final text", result={"n": 1}, usage=Usage(), at=utcnow())
    assert await store.finish(job.id, finish, Guard.lease("w")) is not None
    assert await outputs() == ["final text"] * 3
    done = await store.get(job.id)
    assert done is not None
    assert (done.status, done.result, done.lease_owner) == ("SUCCEEDED", {"n": 1}, None)


async def test_a_running_job_found_by_its_key_shows_its_log_output(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await add(store, new_job(caller, key="k"))
    await store.claim("w", 1, LEASE)
    await store.append_events([write(job.id, "w", "so far")])
    keyed = await store.by_idempotency_key(caller, "k")
    assert keyed is not None
    assert keyed.output == "so far"
    async with store.admission(caller, day=None, key="k") as admit:
        assert admit.keyed_job is not None
        assert admit.keyed_job.output == "so far"


async def test_a_new_attempt_starts_its_output_from_nothing(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    await store.claim("lost", 1, EXPIRED)
    await store.append_events([write(job_id, "lost", "first attempt")])
    (expired,) = await store.expired_leases()
    assert (await store.rescue(expired, utcnow())).requeued
    (claimed,) = await store.claim("w", 1, LEASE)
    assert (claimed.started.seq, claimed.started.payload) == (4, {"attempt": 2})
    assert claimed.job.attempts == 2
    await store.append_events([write(job_id, "w", "second")])
    job = await store.get_owned(caller, job_id)
    assert job is not None
    assert job.output == "second"


async def test_reads_hand_out_copies(store: JobStore, new_caller: NewCaller) -> None:
    caller = await new_caller()
    job = await add(store, new_job(caller))
    got = await store.get(job.id)
    assert got is not None
    got.status = "SUCCEEDED"
    got.input["topic"] = "changed"
    again = await store.get(job.id)
    assert again is not None
    assert (again.status, again.input) == ("QUEUED", {"topic": "contracts"})


async def test_get_owned_answers_only_the_owner(store: JobStore, new_caller: NewCaller) -> None:
    caller, other = await new_caller(), await new_caller()
    job = await add(store, new_job(caller))
    assert await store.get_owned(other, job.id) is None
    assert await store.get_owned(caller, "not-a-job-id") is None
    assert await store.get_owned(caller, str(uuid.uuid4())) is None
    assert await store.get(str(uuid.uuid4())) is None


async def test_list_owned_pages_newest_first(store: JobStore, new_caller: NewCaller) -> None:
    caller, other = await new_caller(), await new_caller()
    oldest, middle, newest = await add_many(store, caller, 3)
    await add_many(store, other, 2)
    page = await store.list_owned(caller, limit=2, after=None, statuses=None)
    assert [j.id for j in page] == [newest, middle]
    cursor = PageCursor(page[-1].created_at, page[-1].id)
    rest = await store.list_owned(caller, limit=2, after=cursor, statuses=None)
    assert [j.id for j in rest] == [oldest]
    await store.claim("w", 1, LEASE)  # the oldest job in the queue is this caller's
    running_jobs = await store.list_owned(
        caller, limit=10, after=None, statuses=[JobStatus.RUNNING]
    )
    assert [j.id for j in running_jobs] == [oldest]
    queued = await store.list_owned(caller, limit=10, after=None, statuses=[JobStatus.QUEUED])
    assert [j.id for j in queued] == [newest, middle]


def at(job: Job) -> PageCursor:
    return PageCursor(job.created_at, job.id)


async def test_list_owned_pages_backwards_oldest_first(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller, other = await new_caller(), await new_caller()
    ids = await add_many(store, caller, 5)  # oldest first
    await add_many(store, other, 2)
    everything = await store.list_owned(caller, limit=10, after=None, statuses=None)
    assert [j.id for j in everything] == ids[::-1]
    # The last page of the list (the oldest jobs), oldest first: the limit keeps the oldest.
    tail = await store.list_owned(caller, limit=2, after=None, statuses=None, oldest_first=True)
    assert [j.id for j in tail] == ids[:2]
    # Above a cursor: the jobs newer than it, nearest first.
    newer = await store.list_owned(
        caller, limit=2, after=None, statuses=None, before=at(tail[-1]), oldest_first=True
    )
    assert [j.id for j in newer] == ids[2:4]
    newest = await store.list_owned(
        caller, limit=10, after=None, statuses=None, before=at(newer[-1]), oldest_first=True
    )
    assert [j.id for j in newest] == ids[4:]
    assert (
        await store.list_owned(
            caller, limit=10, after=None, statuses=None, before=at(newest[-1]), oldest_first=True
        )
        == []
    )


async def test_list_owned_between_two_cursors_in_either_order(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    ids = await add_many(store, caller, 6)
    jobs = {j.id: j for j in await store.list_owned(caller, limit=10, after=None, statuses=None)}
    upper, lower = at(jobs[ids[4]]), at(jobs[ids[1]])  # exclusive bounds
    newest_first = await store.list_owned(
        caller, limit=10, after=upper, before=lower, statuses=None
    )
    assert [j.id for j in newest_first] == [ids[3], ids[2]]
    oldest_first = await store.list_owned(
        caller, limit=10, after=upper, before=lower, statuses=None, oldest_first=True
    )
    assert [j.id for j in oldest_first] == [ids[2], ids[3]]


async def test_list_owned_keeps_to_the_status_and_api_version_asked_for(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    base = utcnow() - timedelta(minutes=1)
    jobs = [new_job(caller, created_at=base + timedelta(milliseconds=i)) for i in range(6)]
    for i, job in enumerate(jobs):
        job.api_version = "v2" if i % 2 else "v1"
        await add(store, job)
    v2 = [j.id for j in jobs if j.api_version == "v2"]
    listed = await store.list_owned(caller, limit=10, after=None, statuses=None, api_version="v2")
    assert [j.id for j in listed] == v2[::-1]
    backwards = await store.list_owned(
        caller, limit=2, after=None, statuses=None, api_version="v2", oldest_first=True
    )
    assert [j.id for j in backwards] == v2[:2]
    await store.claim("w", 1, LEASE)  # the oldest job: a v1 one
    queued_v1 = await store.list_owned(
        caller, limit=10, after=None, statuses=[JobStatus.QUEUED], api_version="v1"
    )
    assert [j.id for j in queued_v1] == [jobs[4].id, jobs[2].id]


async def test_events_after_a_cursor_up_to_a_limit(store: JobStore, new_caller: NewCaller) -> None:
    job = await running(store, await new_caller())
    await store.append_events([write(job.id, "w", "a", "b", "c")])
    assert [e.seq for e in await store.events_after(job.id, 1, limit=2)] == [2, 3]
    tail = await store.events_after(job.id, 3)
    assert [(e.seq, e.payload) for e in tail] == [(4, {"text": "b"}), (5, {"text": "c"})]
    assert await store.events_after(job.id, 5) == []


async def test_count_by_status_counts_active_jobs(store: JobStore, new_caller: NewCaller) -> None:
    caller = await new_caller()
    assert await store.count_by_status() == {}
    ids = await add_many(store, caller, 4)
    await store.claim("w", 1, LEASE)
    await store.cancel(caller, ids[-1], None, utcnow())
    assert await store.count_by_status() == {"QUEUED": 2, "RUNNING": 1}


async def test_purge_forgets_old_idempotency_keys_only(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    old = await add(store, new_job(caller, key="old", created_at=utcnow() - timedelta(hours=2)))
    await add(store, new_job(caller, key="new"))
    await add(store, new_job(caller))
    assert await store.purge_idempotency_keys(utcnow() - timedelta(hours=1)) == 1
    assert await store.by_idempotency_key(caller, "old") is None
    assert await store.by_idempotency_key(caller, "new") is not None
    kept = await store.get(old.id)
    assert kept is not None
    assert kept.status == "QUEUED"


# -- terminal transitions --------------------------------------------------------------


async def test_finish_applies_once_under_the_lease_and_bills_the_day(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await running(store, caller)
    await store.append_events([write(job.id, "w", "partial")])
    at = utcnow()
    finish = fail(
        job, JobError(ErrorCode.PROVIDER_UNAVAILABLE), output=None, usage=Usage(3, 4, 700), at=at
    )
    assert await store.finish(job.id, finish, Guard.lease("intruder")) is None
    event = await store.finish(job.id, finish, Guard.lease("w"))
    assert event is not None
    assert (event.seq, event.type, event.at) == (4, EventType.JOB_FAILED, at)
    assert event.payload["error"]["code"] == "PROVIDER_UNAVAILABLE"
    assert await store.finish(job.id, finish, Guard.lease("w")) is None

    done = await store.get(job.id)
    assert done is not None
    assert (done.status, done.output, done.finished_at, done.last_seq) == (
        "FAILED",
        "partial",
        at,
        4,
    )
    assert done.error is not None
    assert done.error["code"] == "PROVIDER_UNAVAILABLE"
    assert (done.input_tokens, done.output_tokens, done.cost_micros) == (3, 4, 700)
    assert await spent_today(store, caller) == 700
    assert (await store.events_after(job.id, 3))[0] == event


async def test_a_terminal_event_reads_back_exactly_as_written(
    store: JobStore, new_caller: NewCaller
) -> None:
    # A worker whose finish raised after its commit landed recognises its terminal event
    # in the log by comparing it with what it wrote.
    job = await running(store, await new_caller())
    finish = succeed(
        job,
        output='ünïcode ✓ and "quotes"',
        result={"label": "positive", "confidence": 0.8731, "tags": ["a", "b"], "n": None},
        usage=Usage(7, 395, 797_000),
        at=utcnow(),
    )
    event = await store.finish(job.id, finish, Guard.lease("w"))
    assert event is not None
    (read,) = await store.events_after(job.id, event.seq - 1, limit=1)
    assert (read.type, read.payload) == (finish.event_type, finish.payload)


async def test_cancel_a_queued_job_ends_it_now_without_billing(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    at = utcnow()
    outcome = await store.cancel(caller, job_id, "changed my mind", at)
    assert outcome is not None
    assert outcome.action is CancelAction.NOW
    assert outcome.event is not None
    assert (outcome.event.seq, outcome.event.type) == (2, EventType.JOB_CANCELLED)
    assert outcome.event.payload["reason"] == "changed my mind"
    job = outcome.job
    assert (job.status, job.cancel_requested_at, job.cancel_reason, job.finished_at) == (
        "CANCELLED",
        at,
        "changed my mind",
        at,
    )
    assert await store.claim("w", 1, LEASE) == []
    assert await spent_today(store, caller) == 0


async def test_cancel_a_running_job_records_the_request(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await running(store, caller)
    at = utcnow()
    outcome = await store.cancel(caller, job.id, "too slow", at)
    assert outcome is not None
    assert outcome.action is CancelAction.REQUEST
    assert outcome.event is None
    assert (outcome.job.status, outcome.job.cancel_requested_at) == ("RUNNING", at)
    assert await store.cancel_reason(job.id) == "too slow"
    assert await types(store, job.id) == [EventType.JOB_QUEUED, EventType.JOB_STARTED]


async def test_cancel_refuses_a_finished_job_and_ignores_other_callers(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller, other = await new_caller(), await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    assert await store.cancel(other, job_id, None, utcnow()) is None
    assert await store.cancel(caller, "nope", None, utcnow()) is None
    await store.cancel(caller, job_id, None, utcnow())
    again = await store.cancel(caller, job_id, None, utcnow())
    assert again is not None
    assert (again.action, again.event, again.job.status) == (CancelAction.REFUSE, None, "CANCELLED")
    assert len(await store.events_after(job_id, 0)) == 2


# -- rescue and hand-back --------------------------------------------------------------


async def test_rescue_requeues_a_job_with_attempts_left(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    await store.claim("gone", 1, EXPIRED)
    (expired,) = await store.expired_leases()
    assert expired.id == job_id
    rescued = await store.rescue(expired, utcnow())
    assert (rescued.requeued, rescued.event, rescued.status) == (True, None, None)
    job = await store.get(job_id)
    assert job is not None
    assert (job.status, job.lease_owner, job.lease_expires_at) == ("QUEUED", None, None)
    assert await store.expired_leases() == []
    # The same (stale) decision a second time finds nothing to do.
    assert not (await store.rescue(expired, utcnow())).requeued


async def test_rescue_after_the_last_attempt_fails_the_job_as_worker_lost(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    job = await add(store, new_job(caller, max_attempts=1))
    await store.claim("gone", 1, EXPIRED)
    await store.append_events([write(job.id, "gone", "half", usage=Usage(1, 1, 250))])
    (expired,) = await store.expired_leases()
    rescued = await store.rescue(expired, utcnow())
    assert (rescued.requeued, rescued.status) == (False, JobStatus.FAILED)
    assert rescued.event is not None
    assert (rescued.event.seq, rescued.event.type) == (4, EventType.JOB_FAILED)
    assert rescued.event.payload["error"]["code"] == "WORKER_LOST"
    lost = await store.get(job.id)
    assert lost is not None
    assert (lost.status, lost.output, lost.cost_micros) == ("FAILED", "half", 250)
    assert await spent_today(store, caller) == 250


async def test_rescue_of_a_job_with_a_cancel_request_cancels_it(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    await store.claim("gone", 1, EXPIRED)
    await store.cancel(caller, job_id, "stop", utcnow())
    (expired,) = await store.expired_leases()
    rescued = await store.rescue(expired, utcnow())
    assert (rescued.requeued, rescued.status) == (False, JobStatus.CANCELLED)
    assert rescued.event is not None
    assert (rescued.event.type, rescued.event.payload["reason"]) == (
        EventType.JOB_CANCELLED,
        "stop",
    )


async def test_rescue_leaves_a_job_whose_lease_was_renewed_meanwhile(
    store: JobStore, new_caller: NewCaller
) -> None:
    caller = await new_caller()
    (job_id,) = await add_many(store, caller, 1)
    await store.claim("slow", 1, EXPIRED)
    (expired,) = await store.expired_leases()
    assert await store.renew_leases("slow", [job_id], LEASE) == {job_id: None}
    assert not (await store.rescue(expired, utcnow())).requeued
    job = await store.get(job_id)
    assert job is not None
    assert (job.status, job.lease_owner) == ("RUNNING", "slow")

    lost = new_job(caller, max_attempts=1)
    await add(store, lost)
    await store.claim("slow", 1, EXPIRED)
    stale = [j for j in await store.expired_leases() if j.id == lost.id]
    await store.renew_leases("slow", [lost.id], LEASE)
    rescued = await store.rescue(stale[0], utcnow())
    assert (rescued.requeued, rescued.event) == (False, None)
    assert await types(store, lost.id) == [EventType.JOB_QUEUED, EventType.JOB_STARTED]


async def test_hand_back_is_for_the_lease_owner_only(
    store: JobStore, new_caller: NewCaller
) -> None:
    job = await running(store, await new_caller(), worker="owner")
    assert not await store.hand_back(job.id, "someone-else")
    still = await store.get(job.id)
    assert still is not None
    assert (still.status, still.lease_owner) == ("RUNNING", "owner")
    assert await store.hand_back(job.id, "owner")
    back = await store.get(job.id)
    assert back is not None
    assert (back.status, back.lease_owner) == ("QUEUED", None)
    assert not await store.hand_back(job.id, "owner")
    (again,) = await store.claim("next", 1, LEASE)
    assert (again.job.id, again.job.attempts, again.started.payload) == (job.id, 2, {"attempt": 2})
