"""The v1 schema executed in process on the in-memory store, bus and worker: no database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import strawberry
from starlette.requests import Request
from starlette.responses import Response

from jobql.events.bus import BroadcastBus
from jobql.providers.registry import ProviderRegistry
from jobql.providers.simulated import SimulatedProvider
from jobql.repositories.memory import MemoryJobStore
from jobql.resolvers.context import Context, Services
from jobql.schema.v1.schema import build_schema
from jobql.services.auth import Caller
from jobql.services.jobs import JobService
from jobql.services.streams import StreamService
from jobql.settings import Settings
from jobql.tasks import load_tasks
from jobql.worker.worker import Worker
from tests.api import CANCEL, EVENTS, JOB, SUBMIT, TERMINAL
from tests.conftest import TEST_TASKS

KEY = "jq_test-key"
CALLER = Caller("caller-1", "tests", "standard")
WAIT = 5.0  # the longest a stream may take before the test fails


class FakeKeys:
    """Stands in for KeyService (SQL-backed): one known key."""

    async def authenticate(self, key: str | None, client: str | None = None) -> Caller | None:
        return CALLER if key == KEY else None


class App:
    """What the API process holds, on memory: services, a worker, a schema."""

    def __init__(self, bus: BroadcastBus) -> None:
        self.settings = Settings(
            tasks_file=TEST_TASKS,
            enforce_limits=False,
            heartbeat_seconds=5,
            coalesce_ms=5,
            lease_renew_seconds=0.5,
            shutdown_grace_seconds=0,
            _env_file=None,  # type: ignore[call-arg]
        )
        tasks = load_tasks(TEST_TASKS)
        self.store = MemoryJobStore()
        self.services = Services(
            settings=self.settings,
            tasks=tasks,
            keys=FakeKeys(),  # type: ignore[arg-type]
            jobs=JobService(self.settings, store=self.store, bus=bus, tasks=tasks),
            streams=StreamService(store=self.store, bus=bus, heartbeat_seconds=5),
            viewer=None,  # type: ignore[arg-type]
        )
        self.worker = Worker(
            self.settings,
            store=self.store,
            bus=bus,
            tasks=tasks,
            providers=ProviderRegistry([SimulatedProvider()]),
        )
        self.schema = build_schema()

    def context(self, key: str = KEY) -> Context:
        headers = [(b"authorization", f"Bearer {key}".encode())]
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers})
        return Context(self.services, request, Response(), request_id="req-1")

    async def execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        result = await self.schema.execute(query, variables, context_value=self.context())
        assert result.errors is None, result.errors
        assert result.data is not None
        return result.data

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        stream = await self.schema.subscribe(EVENTS, {"id": job_id}, context_value=self.context())
        assert not isinstance(stream, strawberry.types.ExecutionResult)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for result in stream:
                assert result.errors is None, result.errors
                assert result.data is not None
                yield result.data["jobEvents"]


@pytest.fixture
async def app() -> AsyncIterator[App]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    app = App(bus)
    try:
        yield app
    finally:
        await app.worker.stop()
        await bus.disconnect()


async def test_submit_then_read_then_follow_the_job_to_its_end(app: App) -> None:
    submitted = await app.execute(SUBMIT, {"input": {"task": "echo", "input": {"topic": "x"}}})
    assert submitted["submitJob"]["__typename"] == "V1SubmitJobSuccess"
    job_id = submitted["submitJob"]["job"]["id"]
    queued = (await app.execute(JOB, {"id": job_id}))["job"]
    assert (queued["status"], queued["lastSeq"], queued["requestId"]) == ("QUEUED", 1, "req-1")

    await app.worker.start()
    async with asyncio.timeout(WAIT):
        events = [event async for event in app.events(job_id)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["__typename"] for e in events[:2]] == ["V1JobQueued", "V1JobStarted"]
    assert events[-1]["__typename"] == "V1JobSucceeded"
    text = "".join(e["text"] for e in events if e["__typename"] == "V1OutputDelta")
    assert text == events[-1]["output"]
    assert events[-1]["usage"]["outputTokens"] == 40

    done = (await app.execute(JOB, {"id": job_id}))["job"]
    assert (done["status"], done["output"], done["attempts"]) == ("SUCCEEDED", text, 1)


async def test_cancel_through_the_schema_ends_the_subscription_with_job_cancelled(
    app: App,
) -> None:
    await app.worker.start()
    submitted = await app.execute(SUBMIT, {"input": {"task": "hang", "input": {"topic": "x"}}})
    job_id = submitted["submitJob"]["job"]["id"]
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        async for event in app.events(job_id):
            seen.append(event)
            if event["__typename"] == "V1Progress":  # running: the worker holds it now
                cancelled = await app.execute(CANCEL, {"id": job_id, "reason": "enough"})
                assert cancelled["cancelJob"]["job"]["cancelRequestedAt"] is not None
    assert [e["__typename"] for e in seen if e["__typename"] in TERMINAL] == ["V1JobCancelled"]
    assert seen[-1]["reason"] == "enough"
    job = (await app.execute(JOB, {"id": job_id}))["job"]
    assert job["status"] == "CANCELLED"


async def test_an_unknown_key_is_unauthenticated(app: App) -> None:
    result = await app.schema.execute(JOB, {"id": "x"}, context_value=app.context("jq_wrong"))
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "UNAUTHENTICATED"}
