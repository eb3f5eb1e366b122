"""The worker around its runners, on the in-memory store: leases kept through shutdown,
doorbells on hand-back and rescue, cancels resynced after a bus gap, loops that ride out
an unreachable database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import Any

import pytest

from jobql.events.bus import BoundedSubscription, Subscription
from jobql.events.channels import WAKEUP
from jobql.events.types import EventType
from jobql.models.base import utcnow
from jobql.providers.registry import ProviderRegistry
from jobql.providers.simulated import SimulatedProvider
from jobql.repositories.memory import MemoryJobStore
from jobql.repositories.store import EventWrite, NewEvent
from jobql.services.jobs import JobService, SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.states import Usage
from jobql.tasks import load_tasks
from jobql.worker import Worker
from jobql.worker.worker import RESCUE_EVERY_SECONDS
from tests.conftest import TEST_TASKS
from tests.unit.test_job_runner import CALLER, FlakyStore

WAIT = 5.0  # the longest any awaited condition may take before the test fails


class LocalBus:
    """An EventBus in this process that records what is published and can lose messages
    as a reconnecting backend does (``gap()``)."""

    def __init__(self) -> None:
        self.published: Counter[str] = Counter()
        self.changed = asyncio.Condition()
        self._buffers: dict[str, set[BoundedSubscription]] = {}

    @property
    def healthy(self) -> bool:
        return True

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for buffer in self._buffers.get(channel, ()):
            buffer.put(message)
        async with self.changed:
            self.published[channel] += 1
            self.changed.notify_all()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        buffer = BoundedSubscription(100)
        self._buffers.setdefault(channel, set()).add(buffer)
        try:
            yield buffer
        finally:
            self._buffers[channel].discard(buffer)

    def gap(self) -> None:
        for buffers in self._buffers.values():
            for buffer in buffers:
                buffer.mark_lost()

    async def wait_published(self, channel: str, count: int) -> None:
        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(lambda: self.published[channel] >= count)


class Rig:
    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(
            **{
                "tasks_file": TEST_TASKS,
                "enforce_limits": False,
                "worker_poll_seconds": 0.1,
                "_env_file": None,
                **settings,
            }
        )
        self.store: Any = FlakyStore(MemoryJobStore())
        self.bus = LocalBus()
        self.tasks = load_tasks(TEST_TASKS)
        self.service = JobService(self.settings, store=self.store, bus=self.bus, tasks=self.tasks)
        self.workers: list[Worker] = []

    def worker(self, name: str) -> Worker:
        worker = Worker(
            self.settings,
            store=self.store,
            bus=self.bus,
            tasks=self.tasks,
            providers=ProviderRegistry([SimulatedProvider()]),
            worker_id=name,
        )
        self.workers.append(worker)
        return worker

    async def submit(self, task: str) -> str:
        outcome = await self.service.submit(
            CALLER, SubmitRequest(api_version="v1", task=task, input={"topic": "leases"})
        )
        assert isinstance(outcome, Submitted)
        return outcome.job.id

    async def until(self, job_id: str, statuses: Iterable[str], owner: str | None = None) -> Any:
        """Wait for the job to reach one of ``statuses`` (held by ``owner``, if given)."""
        async with asyncio.timeout(WAIT):
            while True:
                job = await self.store.get(job_id)
                if job.status in statuses and (owner is None or job.lease_owner == owner):
                    return job
                await asyncio.sleep(0.01)  # the in-memory store has nothing to await

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.close()


async def test_shutdown_keeps_renewing_leases_through_the_grace(rigs: list[Rig]) -> None:
    # The grace is far longer than the lease: without renewals the other worker would
    # rescue the job while it still runs.
    rig = Rig(lease_seconds=0.4, lease_renew_seconds=0.1, shutdown_grace_seconds=10)
    rigs.append(rig)
    stopping = rig.worker("stopping")
    await stopping.start()
    job_id = await rig.submit("slow")  # two seconds of output
    await rig.until(job_id, {"RUNNING"}, owner="stopping")
    await rig.worker("other").start()
    await stopping.stop()
    job = await rig.store.get(job_id)
    assert (job.status, job.attempts) == ("SUCCEEDED", 1)
    events = await rig.store.events_after(job_id, 0)
    assert [e.payload["attempt"] for e in events if e.type == "JobStarted"] == [1]


async def test_a_job_handed_back_on_shutdown_rings_the_doorbell(rigs: list[Rig]) -> None:
    rig = Rig(shutdown_grace_seconds=0)
    rigs.append(rig)
    worker = rig.worker("stopping")
    await worker.start()
    job_id = await rig.submit("hang")
    await rig.until(job_id, {"RUNNING"})
    rung = rig.bus.published[WAKEUP]
    await worker.stop()
    job = await rig.store.get(job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("QUEUED", 1, None)
    await rig.bus.wait_published(WAKEUP, rung + 1)


async def test_a_rescue_rings_the_doorbell(rigs: list[Rig]) -> None:
    rig = Rig()
    rigs.append(rig)
    job_id = await rig.submit("echo")
    await rig.store.claim("vanished", 1, timedelta(seconds=-1))
    rung = rig.bus.published[WAKEUP]
    await rig.worker("rescuer").rescue_expired()
    assert (await rig.store.get(job_id)).status == "QUEUED"
    await rig.bus.wait_published(WAKEUP, rung + 1)


async def test_expired_leases_are_rescued_every_second_whatever_the_renewal_interval(
    rigs: list[Rig],
) -> None:
    rig = Rig(lease_seconds=120, lease_renew_seconds=60)
    rigs.append(rig)
    job_id = await rig.submit("echo")
    await rig.store.claim("vanished", 1, timedelta(seconds=-1))
    await rig.worker("w").start()
    job = await rig.until(job_id, {"SUCCEEDED"})
    assert job.attempts == 2


async def test_a_cancel_lost_in_a_bus_gap_lands_at_once(rigs: list[Rig]) -> None:
    # Renewals (which also report cancel requests) are a minute apart.
    rig = Rig(lease_seconds=120, lease_renew_seconds=60)
    rigs.append(rig)
    worker = rig.worker("w")
    await worker.start()
    job_id = await rig.submit("hang")
    await rig.until(job_id, {"RUNNING"})
    # The cancel is recorded, but its signal is lost with the bus.
    await rig.store.cancel(CALLER.id, job_id, "lost signal", utcnow())
    rig.bus.gap()
    job = await rig.until(job_id, {"CANCELLED"})
    assert job.cancel_reason == "lost signal"


async def test_the_loops_ride_out_an_unreachable_database_and_say_so_once(
    rigs: list[Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(
        lease_seconds=2,
        lease_renew_seconds=0.05,
        worker_poll_seconds=0.05,
        shutdown_grace_seconds=0,
    )
    rigs.append(rig)
    running_id = await rig.submit("hang")
    worker = rig.worker("w")
    await worker.start()
    await rig.until(running_id, {"RUNNING"})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rig.store.down.update({"claim", "renew_leases"})
        await rig.store.wait_failures("claim", 5)
        await rig.store.wait_failures("renew_leases", 5)
        rig.store.down.clear()
        job_id = await rig.submit("echo")
        assert (await rig.until(job_id, {"SUCCEEDED"})).attempts == 1
    # The held job kept its lease.
    assert (await rig.store.get(running_id)).status == "RUNNING"
    outage_warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage_warnings) == 1
    assert outage_warnings[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_a_worker_loop_that_fails_is_logged_and_restarted(
    rigs: list[Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig()
    rigs.append(rig)
    worker = rig.worker("w")
    checks = 0

    def overloaded_once_broken() -> bool:
        nonlocal checks
        checks += 1
        if checks == 1:
            raise AssertionError("a bug in the claim loop")
        return False

    worker.overloaded = overloaded_once_broken  # type: ignore[method-assign]
    await worker.start()
    job_id = await rig.submit("echo")
    assert (await rig.until(job_id, {"SUCCEEDED"})).attempts == 1
    (failure,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "jobql-worker-claim failed; restarting it" in failure.getMessage()


async def test_a_bug_in_a_loop_is_told_once_with_its_traceback_and_the_loop_goes_on(
    rigs: list[Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(worker_poll_seconds=0.05)
    rigs.append(rig)
    claim = rig.store.store.claim
    broken = 0

    async def buggy_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal broken
        if broken < 5:
            broken += 1
            raise KeyError("a bug, not an outage")
        return await claim(*args, **kwargs)

    rig.store.store.claim = buggy_claim
    await rig.worker("w").start()
    job_id = await rig.submit("echo")
    assert (await rig.until(job_id, {"SUCCEEDED"})).attempts == 1
    assert broken == 5
    told = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in told] == ["failed while claiming jobs; retrying"]
    assert told[0].exc_info is not None


async def test_jobs_of_a_claim_whose_answer_was_lost_run_on_attempt_one(rigs: list[Rig]) -> None:
    rig = Rig()  # a 15 s lease: no rescue within the test
    rigs.append(rig)
    rig.store.plans["claim"] = ["after"]  # committed, then the connection dropped
    job_id = await rig.submit("echo")
    await rig.worker("w").start()
    job = await rig.until(job_id, {"SUCCEEDED"})
    assert job.attempts == 1
    assert rig.store.failures["claim"] == 1


async def test_a_released_job_with_output_is_left_to_its_lease(rigs: list[Rig]) -> None:
    rig = Rig()
    rigs.append(rig)
    job_id = await rig.submit("echo")
    await rig.store.claim("w", 1, timedelta(seconds=15))
    write = EventWrite(
        job_id, "w", (NewEvent(EventType.OUTPUT_DELTA, {"text": "partial"}),), Usage()
    )
    await rig.store.append_events([write])
    worker = rig.worker("w")  # the same worker id: the job is held here, by nothing
    worker._claim_uncertain = True
    await worker._adopt()
    assert worker.runners == {}
    assert not worker._claim_uncertain


def test_the_default_lease_rescues_a_vanished_workers_jobs_within_sixteen_seconds() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.lease_seconds, settings.lease_renew_seconds) == (15, 5)
    assert settings.lease_seconds + RESCUE_EVERY_SECONDS <= 16
    worker = Rig().worker("w")
    # Outages shorter than this never cost a running job its attempt.
    assert settings.lease_seconds - settings.lease_renew_seconds - worker.lease_margin > 5
