"""RunService on the in-memory store and bus: a run that is left before its end cancels the
job it owns, also while its task is being cancelled (again), within a bounded time, without
leaving a task behind. No worker runs here, so a job stays QUEUED until it is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import date, datetime

import pytest

from jobql.errors import InvalidInput, ServiceUnavailable
from jobql.events.bus import BroadcastBus
from jobql.events.types import EventType, StoredEvent
from jobql.models import JobStatus
from jobql.repositories.memory import MemoryJobStore
from jobql.repositories.store import CancelOutcome
from jobql.services.auth import Caller
from jobql.services.jobs import JobService, SubmitRequest
from jobql.services.run import CLIENT_DISCONNECTED, RunAccepted, RunItem, RunService
from jobql.services.streams import StreamService
from jobql.settings import Settings
from jobql.tasks import load_tasks
from tests.conftest import TEST_TASKS

CALLER = Caller("caller-1", "tests", "standard")
GUARD_SECONDS = 5.0


class GatedStore(MemoryJobStore):
    """The in-memory store, whose cancels and admissions can be held at a gate: the state a
    slow database is in while a client goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.cancel_gate = asyncio.Event()
        self.cancel_gate.set()
        self.cancelling = asyncio.Event()
        self.admission_gate = asyncio.Event()
        self.admission_gate.set()
        self.admitting = asyncio.Event()
        self.cancel_reasons: list[str | None] = []
        # How many of the next cancels, and of the next log reads, fail as in an outage.
        self.failing_cancels = 0
        self.failing_reads = 0

    async def cancel(
        self, principal_id: str, job_id: str, reason: str | None, at: datetime
    ) -> CancelOutcome | None:
        self.cancel_reasons.append(reason)
        self.cancelling.set()
        await self.cancel_gate.wait()
        if self.failing_cancels:
            self.failing_cancels -= 1
            raise ConnectionRefusedError("the database is down")
        return await super().cancel(principal_id, job_id, reason, at)

    async def events_after(self, job_id: str, after: int, limit: int = 500) -> list[StoredEvent]:
        if self.failing_reads:
            self.failing_reads -= 1
            raise ConnectionRefusedError("the database is down")
        return await super().events_after(job_id, after, limit)

    @contextlib.asynccontextmanager
    async def admission(  # type: ignore[override]
        self, principal_id: str, *, day: date | None, key: str | None
    ) -> AsyncIterator[object]:
        self.admitting.set()
        await self.admission_gate.wait()
        async with super().admission(principal_id, day=day, key=key) as admit:
            yield admit


@pytest.fixture
async def bus() -> AsyncIterator[BroadcastBus]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    yield bus
    await bus.disconnect()


@pytest.fixture
def store() -> GatedStore:
    return GatedStore()


@pytest.fixture
async def service(store: GatedStore, bus: BroadcastBus) -> AsyncIterator[RunService]:
    config = Settings(tasks_file=TEST_TASKS, enforce_limits=False, _env_file=None)  # type: ignore[call-arg]
    jobs = JobService(config, store=store, bus=bus, tasks=load_tasks(TEST_TASKS))
    streams = StreamService(store=store, bus=bus, heartbeat_seconds=3600)
    run = RunService(jobs=jobs, streams=streams, release_timeout_seconds=GUARD_SECONDS)
    yield run
    await run.aclose()
    assert not run._releases


def echo(topic: str = "tests", key: str | None = None) -> SubmitRequest:
    return SubmitRequest(api_version="v1", task="echo", input={"topic": topic}, idempotency_key=key)


class Consumer:
    """A run consumed by a task of its own, as a subscription's operation is: the test
    cancels the task the way the server does when the client leaves."""

    def __init__(self, run: AsyncGenerator[RunItem, None]) -> None:
        self.run = run
        self.items: list[RunItem] = []
        self.received = asyncio.Condition()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async with contextlib.aclosing(self.run):
            async for item in self.run:
                async with self.received:
                    self.items.append(item)
                    self.received.notify_all()

    async def until(self, count: int) -> list[RunItem]:
        async with asyncio.timeout(GUARD_SECONDS), self.received:
            await self.received.wait_for(lambda: len(self.items) >= count)
        return self.items

    async def left(self) -> None:
        """Cancel the task and wait for it to end."""
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(GUARD_SECONDS):
                await self.task


def accepted(items: list[RunItem]) -> RunAccepted:
    first = items[0]
    assert isinstance(first, RunAccepted), first
    return first


async def test_a_cancelled_run_cancels_its_job_before_its_task_ends(
    service: RunService, store: GatedStore
) -> None:
    consumer = Consumer(service.run(CALLER, echo()))
    items = await consumer.until(2)
    run = accepted(items)
    assert run.owned
    assert not run.deduplicated
    assert isinstance(items[1], StoredEvent)
    assert items[1].type is EventType.JOB_QUEUED

    await consumer.left()

    job = await store.get(run.job.id)
    assert job is not None
    assert job.status == JobStatus.CANCELLED.value
    assert job.cancel_reason == CLIENT_DISCONNECTED
    assert not service._releases


async def test_a_closed_run_cancels_its_job(service: RunService, store: GatedStore) -> None:
    run = service.run(CALLER, echo())
    first = await anext(run)
    assert isinstance(first, RunAccepted)
    await run.aclose()  # left right after learning the job's id, before any event
    job = await store.get(first.job.id)
    assert job is not None
    assert (job.status, job.cancel_reason) == (JobStatus.CANCELLED.value, CLIENT_DISCONNECTED)


async def test_the_cancel_survives_a_second_cancellation_of_the_leaving_task(
    service: RunService, store: GatedStore
) -> None:
    store.cancel_gate.clear()  # the database is slow to answer the cancel
    consumer = Consumer(service.run(CALLER, echo()))
    run = accepted(await consumer.until(2))
    consumer.task.cancel()
    async with asyncio.timeout(GUARD_SECONDS):
        await store.cancelling.wait()
    # The server gives up on the operation while its cleanup waits: cancelled again.
    await consumer.left()
    assert len(service._releases) == 1  # the cancel goes on, tracked

    store.cancel_gate.set()
    async with asyncio.timeout(GUARD_SECONDS):
        await service.aclose()
    job = await store.get(run.job.id)
    assert job is not None
    assert (job.status, job.cancel_reason) == (JobStatus.CANCELLED.value, CLIENT_DISCONNECTED)
    assert not service._releases


async def test_a_cancel_that_hangs_is_given_up_after_the_timeout(
    service: RunService, store: GatedStore, caplog: pytest.LogCaptureFixture
) -> None:
    service.release_timeout_seconds = 0.2
    store.cancel_gate.clear()  # and never opened
    consumer = Consumer(service.run(CALLER, echo("a secret topic")))
    run = accepted(await consumer.until(2))

    with caplog.at_level(logging.INFO, logger="jobql.services.run"):
        async with asyncio.timeout(GUARD_SECONDS):
            await consumer.left()
    # Given up, with nothing left running.
    assert not service._releases
    job = await store.get(run.job.id)
    assert job is not None
    assert job.status == JobStatus.QUEUED.value
    [record] = [r for r in caplog.records if r.name == "jobql.services.run"]
    assert record.levelno == logging.WARNING
    assert record.__dict__["job_id"] == run.job.id
    assert "secret" not in record.getMessage()
    assert all("secret" not in str(v) for v in record.__dict__.values())


async def test_a_cancel_cut_by_an_outage_is_retried(service: RunService, store: GatedStore) -> None:
    store.failing_cancels = 2
    consumer = Consumer(service.run(CALLER, echo()))
    run = accepted(await consumer.until(2))
    await consumer.left()
    job = await store.get(run.job.id)
    assert job is not None
    assert (job.status, job.cancel_reason) == (JobStatus.CANCELLED.value, CLIENT_DISCONNECTED)
    assert store.cancel_reasons == [CLIENT_DISCONNECTED] * 3


async def test_an_outage_that_cuts_the_stream_cancels_nothing(
    service: RunService, store: GatedStore
) -> None:
    """The server ended the stream, not the client: the job goes on, to be followed again."""
    store.failing_reads = 1
    items = [item async for item in service.run(CALLER, echo())]
    run = accepted(items)
    assert len(items) == 2
    cut = items[1]
    assert isinstance(cut, ServiceUnavailable)
    assert cut.last_seq == 0
    assert store.cancel_reasons == []
    job = await store.get(run.job.id)
    assert job is not None
    assert job.status == JobStatus.QUEUED.value


async def test_a_client_that_leaves_during_the_submit_still_gets_its_job_cancelled(
    service: RunService, store: GatedStore
) -> None:
    store.admission_gate.clear()
    consumer = Consumer(service.run(CALLER, echo(key="k-1")))
    async with asyncio.timeout(GUARD_SECONDS):
        await store.admitting.wait()
    consumer.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer.task
    assert consumer.items == []

    store.admission_gate.set()  # the submit commits after its client left
    async with asyncio.timeout(GUARD_SECONDS):
        await service.aclose()
    job = await store.by_idempotency_key(CALLER.id, "k-1")
    assert job is not None
    assert (job.status, job.cancel_reason) == (JobStatus.CANCELLED.value, CLIENT_DISCONNECTED)


async def test_a_run_that_reached_the_terminal_event_cancels_nothing(
    service: RunService, store: GatedStore
) -> None:
    run = service.run(CALLER, echo())
    first = await anext(run)
    assert isinstance(first, RunAccepted)
    await service.jobs.cancel(CALLER, first.job.id, "pressed stop")
    rest = [item async for item in run]
    assert isinstance(rest[-1], StoredEvent)
    assert rest[-1].type is EventType.JOB_CANCELLED
    await run.aclose()
    assert store.cancel_reasons == ["pressed stop"]


async def test_a_run_left_just_after_its_terminal_event_cancels_nothing(
    service: RunService, store: GatedStore
) -> None:
    run = service.run(CALLER, echo())
    first = await anext(run)
    assert isinstance(first, RunAccepted)
    await service.jobs.cancel(CALLER, first.job.id, "pressed stop")
    while not (isinstance(item := await anext(run), StoredEvent) and item.is_terminal):
        pass
    await run.aclose()  # before the stream itself completed
    assert store.cancel_reasons == ["pressed stop"]


async def test_a_detached_run_leaves_its_job_running(
    service: RunService, store: GatedStore
) -> None:
    consumer = Consumer(service.run(CALLER, echo(), detach=True))
    run = accepted(await consumer.until(2))
    assert not run.owned
    await consumer.left()
    job = await store.get(run.job.id)
    assert job is not None
    assert (job.status, job.cancel_reason) == (JobStatus.QUEUED.value, None)


async def test_only_the_run_that_created_the_job_owns_it(
    service: RunService, store: GatedStore
) -> None:
    creator = Consumer(service.run(CALLER, echo(key="shared")))
    created = accepted(await creator.until(2))
    follower = Consumer(service.run(CALLER, echo(key="shared")))
    followed = accepted(await follower.until(2))
    assert followed.job.id == created.job.id
    assert followed.deduplicated
    assert not followed.owned

    await follower.left()
    job = await store.get(created.job.id)
    assert job is not None
    assert job.status == JobStatus.QUEUED.value

    await creator.left()
    job = await store.get(created.job.id)
    assert job is not None
    assert (job.status, job.cancel_reason) == (JobStatus.CANCELLED.value, CLIENT_DISCONNECTED)


async def test_a_refused_submit_is_the_only_item(service: RunService, store: GatedStore) -> None:
    items = [
        item
        async for item in service.run(
            CALLER, SubmitRequest(api_version="v1", task="echo", input={"topic": ""})
        )
    ]
    assert len(items) == 1
    assert isinstance(items[0], InvalidInput)
    assert items[0].field.startswith("input")
    assert store.cancel_reasons == []
