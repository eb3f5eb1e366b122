"""JobRunner on the in-memory store with the simulated provider: every way a run ends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from jobql.events.bus import BroadcastBus, Subscription
from jobql.events.channels import job_channel
from jobql.events.publisher import EventPublisher
from jobql.events.types import EventType, StoredEvent
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics
from jobql.providers.registry import ProviderRegistry
from jobql.providers.simulated import SimulatedProvider, StreamRecord
from jobql.repositories.memory import MemoryJobStore
from jobql.services.auth import Caller
from jobql.services.jobs import JobService, SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.tasks import TaskContract, TaskRegistry, load_tasks
from jobql.worker.pump import StopReason
from jobql.worker.runner import JobRunner
from jobql.worker.writer import EventWriter
from tests.conftest import TEST_TASKS

CALLER = Caller("caller-1", "tests", "standard")
LEASE = timedelta(seconds=30)
WAIT = 5.0  # the longest any awaited condition may take before the test fails


@dataclasses.dataclass
class Run:
    job: Job
    runner: JobRunner
    task: asyncio.Task[None]
    events: Subscription

    async def done(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.task

    async def output_words(self, n: int) -> str:
        """Wait until the published OutputDeltas hold ``n`` words; answer their text."""
        text = ""
        async with asyncio.timeout(WAIT):
            while len(text.split()) < n:
                message = await self.events.receive(None)
                if message is not None and message.get("type") == EventType.OUTPUT_DELTA:
                    text += message["payload"]["text"]
        return text


class Rig:
    def __init__(self, bus: BroadcastBus) -> None:
        self.store = MemoryJobStore()
        self.bus = bus
        self.tasks: TaskRegistry = load_tasks(TEST_TASKS)
        self.provider = SimulatedProvider()
        self.writer = EventWriter(self.store)
        self._stack = contextlib.AsyncExitStack()
        self.service = JobService(
            Settings(tasks_file=TEST_TASKS, enforce_limits=False, _env_file=None),  # type: ignore[call-arg]
            store=self.store,
            bus=bus,
            tasks=self.tasks,
        )

    def task(self, name: str, **options: Any) -> TaskContract:
        """A test task, with the simulated model's options changed for this test."""
        task = self.tasks.get("v1", name)
        assert task is not None
        return dataclasses.replace(task, provider_options={**task.provider_options, **options})

    async def start(
        self,
        task: TaskContract,
        *,
        lease: timedelta = LEASE,
        max_cost_usd: float | None = None,
        deadline_in: timedelta | None = None,
        task_input: dict[str, Any] | None = None,
    ) -> Run:
        outcome = await self.service.submit(
            CALLER,
            SubmitRequest(
                api_version="v1",
                task=task.name,
                input=task_input or {"topic": "runners"},
                max_cost_usd=max_cost_usd,
            ),
        )
        assert isinstance(outcome, Submitted)
        (claimed,) = await self.store.claim("w", 1, lease)
        job = claimed.job
        if deadline_in is not None:
            job.deadline_at = utcnow() + deadline_in  # the runner times the job by its copy
        runner = JobRunner(
            job,
            task,
            worker_id="w",
            store=self.store,
            writer=self.writer,
            publisher=EventPublisher(self.bus),
            providers=ProviderRegistry([self.provider]),
            coalesce_seconds=0,
            metrics=Metrics(),
        )
        events = await self._stack.enter_async_context(self.bus.subscribe(job_channel(job.id)))
        return Run(job, runner, asyncio.create_task(runner.run()), events)

    def record(self, job: Job) -> StreamRecord:
        return self.provider.records[f"{job.id}:{job.attempts}"]

    async def final(self, run: Run) -> tuple[Job, list[StoredEvent]]:
        job = await self.store.get(run.job.id)
        assert job is not None
        return job, await self.store.events_after(run.job.id, 0)

    async def __aenter__(self) -> Rig:
        self.writer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        await self.writer.aclose()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    async with Rig(bus) as rig:
        yield rig
    await bus.disconnect()


def deltas(events: list[StoredEvent]) -> str:
    return "".join(e.payload["text"] for e in events if e.type is EventType.OUTPUT_DELTA)


async def test_a_stream_to_success_writes_a_gapless_log_and_its_output(rig: Rig) -> None:
    run = await rig.start(rig.task("echo", length=25))
    await run.done()
    job, events = await rig.final(run)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type is EventType.JOB_QUEUED
    assert events[1].type is EventType.JOB_STARTED
    assert events[-1].type is EventType.JOB_SUCCEEDED
    assert {e.type for e in events[2:-1]} == {EventType.OUTPUT_DELTA}
    assert job.status == "SUCCEEDED"
    assert job.output == deltas(events) == events[-1].payload["output"]
    assert len(job.output.split()) == 25
    assert (job.output_tokens, events[-1].payload["usage"]["outputTokens"]) == (25, 25)
    assert job.cost_micros > 0
    assert rig.record(run.job).finished


async def test_structured_output_is_checked_and_kept_as_the_result(rig: Rig) -> None:
    run = await rig.start(rig.task("classify"), task_input={"text": "I love it"})
    await run.done()
    job, events = await rig.final(run)
    assert job.status == "SUCCEEDED"
    assert job.result is not None
    assert job.result["label"] == "positive"
    assert events[-1].payload["result"] == job.result


async def test_a_cancel_mid_stream_ends_the_job_with_partial_usage(rig: Rig) -> None:
    run = await rig.start(rig.task("echo", stall_after_tokens=3))
    streamed = await run.output_words(3)
    outcome = await rig.store.cancel(CALLER.id, run.job.id, "enough", utcnow())
    assert outcome is not None
    run.runner.stop(StopReason.CANCELLED)  # what the worker does on the cancel signal
    await run.done()
    job, events = await rig.final(run)
    assert job.status == "CANCELLED"
    assert job.output == streamed
    terminal = events[-1]
    assert terminal.type is EventType.JOB_CANCELLED
    assert terminal.payload["reason"] == "enough"
    assert terminal.payload["usage"]["outputTokens"] == 3
    assert terminal.payload["costUsd"] > 0
    record = rig.record(run.job)
    assert (record.closed, record.finished, record.closed_at_tokens) == (True, False, 3)


async def test_the_deadline_stops_a_stalled_stream(rig: Rig) -> None:
    run = await rig.start(
        rig.task("stall", stall_after_tokens=2), deadline_in=timedelta(milliseconds=200)
    )
    await run.done()
    job, events = await rig.final(run)
    assert job.status == "FAILED"
    assert job.error is not None
    assert job.error["code"] == "DEADLINE_EXCEEDED"
    assert job.output == deltas(events)
    assert len(job.output.split()) == 2
    assert rig.record(run.job).closed


async def test_max_cost_stops_the_stream_over_budget(rig: Rig) -> None:
    # $0.000001 is less than the prompt alone: the first written delta goes over.
    run = await rig.start(
        rig.task("echo", tokens_per_second=100, length=200), max_cost_usd=0.000001
    )
    await run.done()
    job, events = await rig.final(run)
    assert job.status == "FAILED"
    assert job.error is not None
    assert job.error["code"] == "BUDGET_EXCEEDED"
    assert job.cost_micros > 1
    record = rig.record(run.job)
    assert record.closed
    assert not record.finished
    assert record.closed_at_tokens is not None
    assert record.closed_at_tokens < 200
    assert events[-1].type is EventType.JOB_FAILED


async def test_a_provider_failure_ends_the_job_with_its_typed_error(rig: Rig) -> None:
    run = await rig.start(rig.task("fail-unavailable"))
    await run.done()
    job, events = await rig.final(run)
    assert job.status == "FAILED"
    assert job.error is not None
    assert job.error["code"] == "PROVIDER_UNAVAILABLE"
    assert "UPSTREAM-SECRET-BODY" not in str(job.error)
    assert len(job.output.split()) == 2
    assert events[-1].type is EventType.JOB_FAILED
    assert events[-1].payload["error"]["code"] == "PROVIDER_UNAVAILABLE"


async def test_a_runner_that_lost_its_lease_writes_nothing_more(rig: Rig) -> None:
    # The lease has run out from the start: the job can be rescued while it streams.
    run = await rig.start(
        rig.task("echo", tokens_per_second=50, length=200), lease=timedelta(seconds=-1)
    )
    await run.output_words(1)
    (expired,) = await rig.store.expired_leases()
    assert (await rig.store.rescue(expired, utcnow())).requeued
    (taken,) = await rig.store.claim("w2", 1, LEASE)
    await run.done()

    job, _ = await rig.final(run)
    assert (job.status, job.lease_owner, job.attempts) == ("RUNNING", "w2", 2)
    assert await rig.store.events_after(job.id, taken.started.seq) == []
    record = rig.record(run.job)
    assert record.closed
    assert not record.finished
