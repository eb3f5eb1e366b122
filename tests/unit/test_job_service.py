"""JobService on the in-memory store and bus: submit, dedupe, limits, cancel. No database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from jobql.errors import (
    ConcurrencyLimitExceeded,
    CostLimitExceeded,
    InvalidInput,
    JobNotCancellable,
    NotFound,
)
from jobql.events.bus import BroadcastBus
from jobql.events.channels import CONTROL, WAKEUP, job_channel
from jobql.events.types import EventType
from jobql.models import Job
from jobql.models.base import utcnow
from jobql.repositories.memory import MemoryJobStore
from jobql.services.auth import Caller
from jobql.services.jobs import (
    IdempotencyKeyReused,
    JobService,
    SubmitOutcomeType,
    SubmitRequest,
    Submitted,
)
from jobql.settings import Settings, TierLimits
from jobql.states import Guard, Usage, succeed
from jobql.tasks import load_tasks
from tests.conftest import TEST_TASKS

CALLER = Caller("caller-1", "tests", "standard")
OTHER = Caller("caller-2", "others", "standard")
LEASE = timedelta(seconds=30)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"tasks_file": TEST_TASKS, "enforce_limits": False}
    return Settings(**(values | overrides), _env_file=None)  # type: ignore[arg-type, call-arg]


@pytest.fixture
async def bus() -> AsyncIterator[BroadcastBus]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    yield bus
    await bus.disconnect()


@pytest.fixture
def store() -> MemoryJobStore:
    return MemoryJobStore()


def service_for(store: MemoryJobStore, bus: BroadcastBus, config: Settings) -> JobService:
    return JobService(config, store=store, bus=bus, tasks=load_tasks(config.tasks_file))


@pytest.fixture
def service(store: MemoryJobStore, bus: BroadcastBus) -> JobService:
    return service_for(store, bus, settings())


def echo(topic: str = "tests", **fields: object) -> SubmitRequest:
    return SubmitRequest(api_version="v1", task="echo", input={"topic": topic}, **fields)  # type: ignore[arg-type]


def submitted(outcome: SubmitOutcomeType) -> Job:
    assert isinstance(outcome, Submitted), outcome
    return outcome.job


# -- submit ----------------------------------------------------------------------------


async def test_submit_stores_a_queued_job_and_rings_the_doorbell(
    service: JobService, store: MemoryJobStore, bus: BroadcastBus
) -> None:
    async with bus.subscribe(WAKEUP) as doorbell:
        outcome = await service.submit(CALLER, echo(request_id="req-1"))
        assert await doorbell.receive(5) == {}
    assert isinstance(outcome, Submitted)
    assert not outcome.deduplicated
    job = outcome.job
    assert (job.status, job.task, job.principal_id, job.request_id) == (
        "QUEUED",
        "echo",
        CALLER.id,
        "req-1",
    )
    assert job.reserved_micros > 0
    assert job.deadline_at is not None
    assert job.deadline_at > utcnow()
    assert [(e.seq, e.type) for e in await store.events_after(job.id, 0)] == [
        (1, EventType.JOB_QUEUED)
    ]
    stored = await service.get(CALLER, job.id)
    assert isinstance(stored, Job)
    assert stored.input == {"topic": "tests"}
    assert isinstance(await service.get(OTHER, job.id), NotFound)


async def test_a_retry_with_the_same_key_and_input_returns_the_same_job(
    service: JobService, store: MemoryJobStore
) -> None:
    first = submitted(await service.submit(CALLER, echo(idempotency_key="k-1")))
    again = await service.submit(CALLER, echo(idempotency_key="k-1"))
    assert isinstance(again, Submitted)
    assert again.deduplicated
    assert again.job.id == first.id
    assert len(await store.list_owned(CALLER.id, limit=10, after=None, statuses=None)) == 1
    # The key is the caller's own: another caller gets a job of its own.
    theirs = submitted(await service.submit(OTHER, echo(idempotency_key="k-1")))
    assert theirs.id != first.id


async def test_the_same_key_with_another_input_is_refused(
    service: JobService, store: MemoryJobStore
) -> None:
    first = submitted(await service.submit(CALLER, echo("one", idempotency_key="k-2")))
    outcome = await service.submit(CALLER, echo("two", idempotency_key="k-2"))
    assert isinstance(outcome, IdempotencyKeyReused)
    assert outcome.job_id == first.id
    assert len(await store.list_owned(CALLER.id, limit=10, after=None, statuses=None)) == 1


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (SubmitRequest(api_version="v1", task="nope", input={}), "task"),
        (SubmitRequest(api_version="v1", task="echo", input=[1]), "input"),
        (SubmitRequest(api_version="v1", task="echo", input={"topic": ""}), "topic"),
        (echo(max_cost_usd=0), "maxCostUsd"),
        (echo(deadline_seconds=10_000), "deadlineSeconds"),
        (echo(idempotency_key=""), "idempotencyKey"),
    ],
    ids=["unknown-task", "not-an-object", "schema", "max-cost", "deadline", "key"],
)
async def test_invalid_submits_store_nothing(
    service: JobService, store: MemoryJobStore, request_: SubmitRequest, field: str
) -> None:
    outcome = await service.submit(CALLER, request_)
    assert isinstance(outcome, InvalidInput), outcome
    assert field in outcome.field
    assert await store.count_by_status() == {}


async def test_the_concurrency_limit_refuses_a_submit_beyond_it(
    store: MemoryJobStore, bus: BroadcastBus
) -> None:
    config = settings(enforce_limits=True, tier_limits={"standard": TierLimits(max_active_jobs=2)})
    service = service_for(store, bus, config)
    first = submitted(await service.submit(CALLER, echo("1")))
    submitted(await service.submit(CALLER, echo("2")))
    refused = await service.submit(CALLER, echo("3"))
    assert refused == ConcurrencyLimitExceeded(limit=2, active=2)
    submitted(await service.submit(OTHER, echo("theirs")))  # a limit per caller

    assert isinstance(await service.cancel(CALLER, first.id, None), Job)
    submitted(await service.submit(CALLER, echo("3")))


async def test_the_cost_limit_counts_reservations_and_todays_spending(
    store: MemoryJobStore, bus: BroadcastBus
) -> None:
    # A cheap job reserves (and costs) $0.01: two fit under $0.025 a day, a third does not.
    config = settings(
        enforce_limits=True, tier_limits={"standard": TierLimits(daily_cost_cap_usd=0.025)}
    )
    service = service_for(store, bus, config)
    cheap = SubmitRequest(api_version="v1", task="cheap", input={"topic": "x"})
    first = submitted(await service.submit(CALLER, cheap))
    assert first.reserved_micros == 10_000
    (claimed,) = await store.claim("w", 1, LEASE)
    finish = succeed(claimed.job, output="", result=None, usage=Usage(0, 10, 10_000), at=utcnow())
    assert await store.finish(first.id, finish, Guard.lease("w")) is not None

    submitted(await service.submit(CALLER, cheap))
    refused = await service.submit(CALLER, cheap)
    assert isinstance(refused, CostLimitExceeded)
    assert (refused.cap_micros, refused.spent_micros, refused.reserved_micros) == (
        25_000,
        10_000,
        10_000,
    )


# -- cancel ----------------------------------------------------------------------------


async def test_cancel_a_queued_job_ends_it_and_publishes_job_cancelled(
    service: JobService, bus: BroadcastBus
) -> None:
    job = submitted(await service.submit(CALLER, echo()))
    async with bus.subscribe(job_channel(job.id)) as events:
        cancelled = await service.cancel(CALLER, job.id, "not needed")
        # The bus may still deliver the JobQueued published before the subscription.
        message = await events.receive(5)
        if message is not None and message["type"] == "JobQueued":
            message = await events.receive(5)
    assert isinstance(cancelled, Job)
    assert (cancelled.status, cancelled.cancel_reason) == ("CANCELLED", "not needed")
    assert message is not None
    assert (message["seq"], message["type"], message["payload"]["reason"]) == (
        2,
        "JobCancelled",
        "not needed",
    )


async def test_cancel_a_running_job_signals_its_worker(
    service: JobService, store: MemoryJobStore, bus: BroadcastBus
) -> None:
    job = submitted(await service.submit(CALLER, echo()))
    await store.claim("w", 1, LEASE)
    async with bus.subscribe(CONTROL) as control:
        requested = await service.cancel(CALLER, job.id, "stop")
        assert await control.receive(5) == {"cancel": job.id}
    assert isinstance(requested, Job)
    assert requested.status == "RUNNING"
    assert requested.cancel_requested_at is not None
    assert await store.cancel_reason(job.id) == "stop"


async def test_cancel_a_finished_or_unknown_job_is_refused(
    service: JobService, store: MemoryJobStore
) -> None:
    job = submitted(await service.submit(CALLER, echo()))
    assert isinstance(await service.cancel(CALLER, job.id, None), Job)
    assert await service.cancel(CALLER, job.id, None) == JobNotCancellable(status="CANCELLED")
    assert isinstance(await service.cancel(OTHER, job.id, None), NotFound)
    assert isinstance(await service.cancel(CALLER, "not-an-id", None), NotFound)
    assert len(await store.events_after(job.id, 0)) == 2
