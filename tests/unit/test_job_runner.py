"""JobRunner on the in-memory store with the simulated provider: every way a run ends,
and how it rides out a store that cannot be reached."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from jobql.events.bus import BroadcastBus, Subscription
from jobql.events.channels import WAKEUP, job_channel
from jobql.events.publisher import EventPublisher
from jobql.events.types import EventType, StoredEvent
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics
from jobql.providers.base import ProviderEvent, ProviderRequest, TextDelta, Usage
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


class FlakyStore:
    """The in-memory store with outages. A planned call raises as a dropped connection
    does: "before" its effect (refused), or "after" it (the commit landed, the answer was
    lost). Methods in ``down`` fail (before) on every call until taken out."""

    def __init__(self, store: MemoryJobStore) -> None:
        self.store = store
        self.plans: dict[str, list[str]] = {}
        self.down: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._failed = asyncio.Condition()

    async def wait_failures(self, name: str, count: int) -> None:
        async with asyncio.timeout(WAIT), self._failed:
            await self._failed.wait_for(lambda: self.failures[name] >= count)

    async def _count_failure(self, name: str) -> None:
        async with self._failed:
            self.failures[name] += 1
            self._failed.notify_all()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if not inspect.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            plan = self.plans.get(name)
            mode = plan.pop(0) if plan else ("before" if name in self.down else None)
            if mode == "before":
                await self._count_failure(name)
                raise ConnectionRefusedError(111, "Connect call failed")
            result = await target(*args, **kwargs)
            if mode == "after":
                await self._count_failure(name)
                raise ConnectionResetError(104, "Connection reset by peer")
            return result

        return call


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
        self.memory = MemoryJobStore()
        self.store: Any = FlakyStore(self.memory)
        self.bus = bus
        self.tasks: TaskRegistry = load_tasks(TEST_TASKS)
        self.provider = SimulatedProvider()
        self.providers = ProviderRegistry([self.provider])
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
            providers=self.providers,
            coalesce_seconds=0,
            metrics=Metrics(),
            lease_expires=time.monotonic() + lease.total_seconds(),
            lease_margin=min(0.25, lease.total_seconds() / 4),
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


# -- the store unreachable ------------------------------------------------------------------


async def test_max_cost_counts_the_output_that_arrives_with_the_end_of_the_stream(
    rig: Rig,
) -> None:
    # The whole stream, its end included, is in the runner's first batch.
    class Burst:
        name = "simulated"

        async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
            for _ in range(40):
                yield TextDelta(text="word ", tokens=1)
            yield Usage(input_tokens=5, output_tokens=40)

        async def aclose(self) -> None:
            pass

    rig.providers = ProviderRegistry([Burst()])
    task = rig.task("echo")
    budget = task.pricing.cost_micros(5, 20) / 1_000_000  # half the output is over it
    run = await rig.start(task, max_cost_usd=budget)
    await run.done()
    job, events = await rig.final(run)
    assert job.error is not None, job.status
    assert (job.status, job.error["code"]) == ("FAILED", "BUDGET_EXCEEDED")
    assert events[-1].type is EventType.JOB_FAILED


async def test_an_event_write_refused_by_an_outage_is_retried_and_the_job_succeeds(
    rig: Rig,
) -> None:
    rig.store.plans["append_events"] = ["before"] * 4
    run = await rig.start(rig.task("echo", length=25))
    await run.done()
    job, events = await rig.final(run)
    assert rig.store.failures["append_events"] == 4
    assert job.status == "SUCCEEDED"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(deltas(events).split()) == 25
    assert job.output == deltas(events)


async def test_a_write_whose_commit_landed_but_raised_is_not_written_twice(rig: Rig) -> None:
    rig.store.plans["append_events"] = ["after", "after"]
    run = await rig.start(rig.task("echo", length=25))
    published = asyncio.create_task(run.output_words(25))
    await run.done()
    job, events = await rig.final(run)
    assert rig.store.failures["append_events"] == 2
    assert job.status == "SUCCEEDED"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(deltas(events).split()) == 25  # each delta stored once
    assert job.output == deltas(events)
    # What landed is published once it is known to be stored.
    assert len((await published).split()) == 25


async def test_a_finish_whose_commit_landed_but_raised_is_published_once(rig: Rig) -> None:
    rig.store.plans["finish"] = ["after"]
    run = await rig.start(rig.task("echo", length=5))
    await run.done()
    job, events = await rig.final(run)
    assert job.status == "SUCCEEDED"
    assert [e.type for e in events].count(EventType.JOB_SUCCEEDED) == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Everything the runner published comes before a marker published after it ended.
    await rig.bus.publish(job_channel(job.id), {"marker": True})
    terminal = []
    async with asyncio.timeout(WAIT):
        while not (message := await run.events.receive(None) or {}).get("marker"):
            if message.get("type") == EventType.JOB_SUCCEEDED:
                terminal.append(message["seq"])
    assert terminal == [events[-1].seq]


async def test_a_cancel_reason_read_through_an_outage_still_cancels(rig: Rig) -> None:
    run = await rig.start(rig.task("echo", stall_after_tokens=3))
    await run.output_words(3)
    await rig.store.cancel(CALLER.id, run.job.id, "enough", utcnow())
    rig.store.plans["cancel_reason"] = ["before", "before"]
    rig.store.plans["finish"] = ["before"]
    run.runner.stop(StopReason.CANCELLED)
    await run.done()
    job, events = await rig.final(run)
    assert (job.status, events[-1].payload["reason"]) == ("CANCELLED", "enough")


async def test_a_store_down_until_the_lease_is_at_risk_hands_the_job_back(rig: Rig) -> None:
    doorbell = await rig._stack.enter_async_context(rig.bus.subscribe(WAKEUP))
    rig.store.down.add("append_events")
    started = time.monotonic()
    run = await rig.start(rig.task("echo", length=25), lease=timedelta(seconds=1))
    await run.done()
    # Released before the lease ran out (less its margin), not failed.
    assert time.monotonic() - started < 1.0
    job, events = await rig.final(run)
    assert (job.status, job.attempts, job.lease_owner) == ("QUEUED", 1, None)
    assert job.error is None
    assert [e.type for e in events] == [EventType.JOB_QUEUED, EventType.JOB_STARTED]
    assert rig.record(run.job).closed  # the inference was stopped
    async with asyncio.timeout(WAIT):
        assert await doorbell.receive(None) == {}  # other workers claim it at once
    # The next attempt runs it to the end.
    rig.store.down.clear()
    (again,) = await rig.store.claim("w", 1, LEASE)
    assert again.job.attempts == 2


async def test_a_store_down_for_good_leaves_the_job_to_be_rescued(rig: Rig) -> None:
    rig.store.down.update({"append_events", "hand_back", "finish"})
    run = await rig.start(rig.task("echo", length=25), lease=timedelta(seconds=0.6))
    await run.done()
    job, events = await rig.final(run)
    assert (job.status, job.lease_owner) == ("RUNNING", "w")
    assert all(e.type is not EventType.JOB_FAILED for e in events)
    rig.store.down.clear()
    # Once its lease has run out, it is rescued for another attempt.
    assert (await rig.store.rescue(job, utcnow() + timedelta(seconds=1))).requeued


async def test_a_bug_in_the_store_still_fails_the_job_as_internal(rig: Rig) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug, not an outage")

    rig.memory.append_events = broken  # type: ignore[method-assign]
    run = await rig.start(rig.task("echo", length=5))
    await run.done()
    job, events = await rig.final(run)
    assert job.error is not None
    assert (job.status, job.error["code"]) == ("FAILED", "INTERNAL")
    assert events[-1].type is EventType.JOB_FAILED
