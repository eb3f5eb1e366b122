"""Outages reach clients as typed, retryable answers: the v1 schema on the in-memory store
with a store that can be made unreachable, an API-key lookup against a database nobody
listens on, and a rate limiter whose Redis is not there. No database, no Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
import strawberry
import websockets
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from websockets.exceptions import ConnectionClosed

from jobql.errors import ConcurrencyLimitExceeded, ServiceUnavailable
from jobql.events.bus import BroadcastBus
from jobql.events.channels import job_channel
from jobql.http.graphql import GraphQLView
from jobql.models.base import utcnow
from jobql.observability.metrics import Metrics
from jobql.outages import RETRY_AFTER_SECONDS, ServiceUnavailableError
from jobql.repositories.database import create_engine, create_session_factory
from jobql.repositories.memory import MemoryJobStore
from jobql.resolvers.context import Context, Services
from jobql.schema.v1.schema import build_schema
from jobql.services.auth import Caller, KeyService
from jobql.services.jobs import JobService, SubmitRequest, Submitted
from jobql.services.ratelimit import RateLimiter
from jobql.services.streams import StreamService
from jobql.services.unavailable import ThrottledWarning
from jobql.settings import Settings, TierLimits
from jobql.tasks import load_tasks
from tests.api import CANCEL, EVENTS, GRAPHQL_TRANSPORT_WS, JOB, LEGACY_GRAPHQL_WS, SUBMIT
from tests.conftest import TEST_TASKS
from tests.faults.servers import free_port
from tests.uvicorn_server import uvicorn_serving

KEY = "jq_test-key"
CALLER = Caller("caller-1", "tests", "standard")
WAIT = 5.0  # the longest a stream may take before the test fails
SECRET_SQL = "SELECT key_hash FROM api_keys WHERE secret = 'do-not-leak'"
ECHO = {"task": "echo", "input": {"topic": "outages"}}

# Every field of V1ServiceUnavailable, on top of what tests.api's queries ask for.
ALL_FIELDS = """
    ... on V1ServiceUnavailable { code message retryable retryAfterSeconds requestId resumeAfter }
"""
SUBMIT_Q = SUBMIT.replace("__typename", "__typename" + ALL_FIELDS, 1)
CANCEL_Q = CANCEL.replace("__typename", "__typename" + ALL_FIELDS, 1)
JOB_Q = JOB.replace("__typename", "__typename" + ALL_FIELDS, 1)
EVENTS_Q = EVENTS.replace("__typename", "__typename" + ALL_FIELDS, 1)


def outage() -> OperationalError:
    """What SQLAlchemy raises when PostgreSQL refuses connections (it quotes the SQL)."""
    return OperationalError(SECRET_SQL, {}, ConnectionRefusedError(111, "Connect call failed"))


class FlakyStore:
    """The in-memory store, except that the methods named in ``failing`` raise an outage.
    ``lose_commit_ack``: an admission commits, then the outage hits before the caller hears
    of it (the connection dropped while COMMIT's answer was on its way)."""

    def __init__(self, inner: MemoryJobStore) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.lose_commit_ack = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in self.failing:
            return attribute

        async def unreachable(*args: object, **kwargs: object) -> Any:
            raise outage()

        return unreachable

    @contextlib.asynccontextmanager
    async def admission(
        self, principal_id: str, *, day: date | None, key: str | None
    ) -> AsyncIterator[Any]:
        if "admission" in self.failing:
            raise outage()
        async with self.inner.admission(principal_id, day=day, key=key) as admit:
            yield admit
        if self.lose_commit_ack:
            raise outage()


class FakeKeys:
    """Stands in for KeyService (SQL-backed): one known key, or an unreachable database."""

    def __init__(self) -> None:
        self.down = False

    async def authenticate(self, key: str | None, client: str | None = None) -> Caller | None:
        if self.down:
            raise ServiceUnavailableError("the database") from outage()
        return CALLER if key == KEY else None

    def watch(self, watcher: object) -> None:
        """No revocations here: nothing to tell the WebSocket registry."""


class FakeViewer:
    """Stands in for ViewerService (SQL-backed): its database is unreachable, or it has a
    bug."""

    def __init__(self) -> None:
        self.error: Exception = outage()

    async def usage_today(self, caller: Caller) -> Any:
        raise self.error


class App:
    def __init__(self, bus: BroadcastBus) -> None:
        self.settings = Settings(
            tasks_file=TEST_TASKS,
            enforce_limits=False,
            heartbeat_seconds=5,
            _env_file=None,  # type: ignore[call-arg]
        )
        self.bus = bus
        self.store = FlakyStore(MemoryJobStore())
        self.keys = FakeKeys()
        self.viewer = FakeViewer()
        self.metrics = Metrics()
        store: Any = self.store
        self.services = Services(
            settings=self.settings,
            tasks=load_tasks(TEST_TASKS),
            keys=self.keys,  # type: ignore[arg-type]
            jobs=JobService(
                self.settings,
                store=store,
                bus=bus,
                tasks=load_tasks(TEST_TASKS),
                metrics=self.metrics,
            ),
            streams=StreamService(store=store, bus=bus, heartbeat_seconds=5, metrics=self.metrics),
            viewer=self.viewer,  # type: ignore[arg-type]
        )
        self.schema = build_schema()

    def context(self) -> Context:
        headers = [(b"authorization", f"Bearer {KEY}".encode())]
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers})
        return Context(self.services, request, Response(), request_id="req-1")

    async def execute(
        self, query: str, variables: dict[str, Any]
    ) -> tuple[dict[str, Any], Response]:
        context = self.context()
        result = await self.schema.execute(query, variables, context_value=context)
        assert result.errors is None, result.errors
        assert result.data is not None
        assert isinstance(context.response, Response)
        return result.data, context.response

    async def events(self, job_id: str, after: int | None = None) -> AsyncIterator[dict[str, Any]]:
        stream = await self.schema.subscribe(
            EVENTS_Q, {"id": job_id, "after": after}, context_value=self.context()
        )
        assert not isinstance(stream, strawberry.types.ExecutionResult)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for result in stream:
                assert result.errors is None, result.errors
                assert result.data is not None
                yield result.data["jobEvents"]

    def unavailable_count(self, operation: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "jobql_service_unavailable_total", {"operation": operation}
        )


@pytest.fixture
async def app() -> AsyncIterator[App]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    try:
        yield App(bus)
    finally:
        await bus.disconnect()


def assert_unavailable(answer: dict[str, Any], last_seq: int | None = None) -> None:
    assert answer == {
        "__typename": "V1ServiceUnavailable",
        "code": "SERVICE_UNAVAILABLE",
        "message": answer["message"],
        "retryable": True,
        "retryAfterSeconds": RETRY_AFTER_SECONDS,
        "requestId": "req-1",
        "resumeAfter": last_seq,
    }
    assert "SELECT" not in answer["message"]
    assert "refused" not in answer["message"].lower()


# -- submit, cancel, job ---------------------------------------------------------------


async def test_a_submit_during_an_outage_answers_service_unavailable_with_retry_after(
    app: App,
) -> None:
    app.store.failing.add("admission")
    data, response = await app.execute(SUBMIT_Q, {"input": ECHO, "key": "k-1"})
    assert_unavailable(data["submitJob"])
    # The request itself was answered (as data): 200, with the hint in the header too.
    assert response.status_code == 200
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert app.unavailable_count("submit") == 1
    assert app.metrics.registry.get_sample_value(
        "jobql_submit_duration_seconds_count", {"outcome": "service_unavailable"}
    )


async def test_a_cancel_during_an_outage_answers_service_unavailable(app: App) -> None:
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO})
    job_id = data["submitJob"]["job"]["id"]
    app.store.failing.add("cancel")
    data, response = await app.execute(CANCEL_Q, {"id": job_id, "reason": "stop"})
    assert_unavailable(data["cancelJob"])
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    app.store.failing.clear()
    data, _ = await app.execute(CANCEL_Q, {"id": job_id, "reason": "stop"})
    assert data["cancelJob"]["__typename"] == "V1CancelJobSuccess"
    assert data["cancelJob"]["job"]["status"] == "CANCELLED"


async def test_reading_a_job_during_an_outage_answers_service_unavailable(app: App) -> None:
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO})
    app.store.failing.add("get_owned")
    data, response = await app.execute(JOB_Q, {"id": data["submitJob"]["job"]["id"]})
    assert_unavailable(data["job"])
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


async def test_listing_jobs_during_an_outage_is_a_top_level_503_never_internal(
    app: App,
) -> None:
    app.store.failing.add("list_owned")
    context = app.context()
    result = await app.schema.execute("{ jobs { edges { cursor } } }", context_value=context)
    assert result.data is None
    assert result.errors is not None
    [error] = result.errors
    assert error.extensions == {
        "code": "SERVICE_UNAVAILABLE",
        "retryAfterSeconds": RETRY_AFTER_SECONDS,
    }
    assert "SELECT" not in error.message
    assert isinstance(context.response, Response)
    assert context.response.status_code == 503
    assert context.response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert app.unavailable_count("request") == 1


async def test_the_viewer_during_an_outage_is_a_503_and_a_bug_is_still_internal(
    app: App,
) -> None:
    for error, code, status in [
        (app.viewer.error, "SERVICE_UNAVAILABLE", 503),
        (KeyError("a bug, not an outage"), "INTERNAL", 200),
    ]:
        app.viewer.error = error
        context = app.context()
        result = await app.schema.execute("{ viewer { id } }", context_value=context)
        assert result.errors is not None
        assert result.errors[0].extensions is not None
        assert result.errors[0].extensions["code"] == code
        assert isinstance(context.response, Response)
        assert context.response.status_code == status
        assert ("Retry-After" in context.response.headers) is (status == 503)


async def test_a_job_committed_while_the_bus_is_down_is_answered_as_submitted(
    app: App,
) -> None:
    await app.bus.disconnect()  # publishing now fails; the database has the job
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO})
    assert data["submitJob"]["__typename"] == "V1SubmitJobSuccess"
    assert data["submitJob"]["job"]["status"] == "QUEUED"
    await app.bus.connect()


# -- idempotency across an outage ------------------------------------------------------


async def test_a_retry_after_an_outage_before_the_commit_creates_the_job_once(app: App) -> None:
    app.store.failing.add("admission")
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO, "key": "before-commit"})
    assert data["submitJob"]["__typename"] == "V1ServiceUnavailable"
    assert await app.store.inner.by_idempotency_key(CALLER.id, "before-commit") is None

    app.store.failing.clear()
    first, _ = await app.execute(SUBMIT_Q, {"input": ECHO, "key": "before-commit"})
    again, _ = await app.execute(SUBMIT_Q, {"input": ECHO, "key": "before-commit"})
    assert first["submitJob"]["deduplicated"] is False
    assert again["submitJob"]["deduplicated"] is True
    assert again["submitJob"]["job"]["id"] == first["submitJob"]["job"]["id"]
    assert await app.store.inner.count_by_status() == {"QUEUED": 1}


async def test_a_retry_after_an_outage_that_hid_a_commit_gets_that_same_job(app: App) -> None:
    app.store.lose_commit_ack = True
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO, "key": "hidden-commit"})
    assert data["submitJob"]["__typename"] == "V1ServiceUnavailable"
    committed = await app.store.inner.by_idempotency_key(CALLER.id, "hidden-commit")
    assert committed is not None  # the client did not learn it, but the job exists

    app.store.lose_commit_ack = False
    # Retries race each other, as impatient clients do: still one job.
    retries = await asyncio.gather(
        *(app.execute(SUBMIT_Q, {"input": ECHO, "key": "hidden-commit"}) for _ in range(5))
    )
    answers = [data["submitJob"] for data, _ in retries]
    assert {a["__typename"] for a in answers} == {"V1SubmitJobSuccess"}
    assert {a["job"]["id"] for a in answers} == {committed.id}
    assert all(a["deduplicated"] for a in answers)
    assert await app.store.inner.count_by_status() == {"QUEUED": 1}


# -- streams ---------------------------------------------------------------------------


async def test_a_stream_cut_by_an_outage_ends_with_service_unavailable_and_its_last_seq(
    app: App,
) -> None:
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO})
    job_id = data["submitJob"]["job"]["id"]
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        async for event in app.events(job_id):
            seen.append(event)
            if event["__typename"] == "V1JobQueued":
                # The log becomes unreachable; a reference on the bus makes the stream read it.
                app.store.failing.update({"events_after", "get"})
                await app.bus.publish(job_channel(job_id), {"seq": 2})
    assert [e["__typename"] for e in seen] == ["V1JobQueued", "V1ServiceUnavailable"]
    assert_unavailable(seen[-1], last_seq=1)
    assert "after: resumeAfter" in seen[-1]["message"]
    assert app.unavailable_count("stream") == 1

    # Resubscribing from resumeAfter once the database is back loses nothing.
    app.store.failing.clear()
    await app.store.inner.cancel(CALLER.id, job_id, "done", utcnow())
    async with asyncio.timeout(WAIT):
        resumed = [event async for event in app.events(job_id, after=seen[-1]["resumeAfter"])]
    assert [(e["__typename"], e["seq"]) for e in resumed] == [("V1JobCancelled", 2)]


async def test_a_stream_that_cannot_start_answers_service_unavailable_and_completes(
    app: App,
) -> None:
    data, _ = await app.execute(SUBMIT_Q, {"input": ECHO})
    app.store.failing.add("get_owned")
    async with asyncio.timeout(WAIT):
        items = [e async for e in app.events(data["submitJob"]["job"]["id"], after=3)]
    assert len(items) == 1
    assert_unavailable(items[0], last_seq=3)


# -- the whole request failed: HTTP 503 ------------------------------------------------


def http_app(app: App) -> Starlette:
    view = GraphQLView(app.schema, app.services)
    return Starlette(
        routes=[Route("/v1/graphql", view, methods=["POST"]), WebSocketRoute("/v1/graphql", view)]
    )


async def test_when_the_key_cannot_be_checked_the_http_answer_is_503_with_retry_after(
    app: App,
) -> None:
    app.keys.down = True
    transport = httpx.ASGITransport(app=http_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/v1/graphql",
            json={"query": SUBMIT_Q, "variables": {"input": ECHO}},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {
        "code": "SERVICE_UNAVAILABLE",
        "retryAfterSeconds": RETRY_AFTER_SECONDS,
    }
    assert "SELECT" not in response.text
    assert "do-not-leak" not in response.text


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
async def test_a_websocket_whose_key_cannot_be_checked_is_closed_with_try_again_later(
    app: App, protocol: str
) -> None:
    app.keys.down = True
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {KEY}"}}
    async with (
        uvicorn_serving(http_app(app)) as port,
        websockets.connect(
            f"ws://127.0.0.1:{port}/v1/graphql",
            subprotocols=[protocol],  # type: ignore[list-item]
        ) as ws,
    ):
        await ws.send(json.dumps(init))
        with pytest.raises(ConnectionClosed) as closed:
            await drain(ws)
    assert closed.value.rcvd is not None
    # 1013 Try Again Later: graphql-ws clients reconnect; 4403 would tell them to give up.
    assert closed.value.rcvd.code == 1013


async def drain(ws: websockets.ClientConnection) -> None:
    """Read until the server closes the connection (legacy graphql-ws sends an error first)."""
    while True:
        await ws.recv()


@pytest.fixture
async def unreachable_database() -> AsyncIterator[AsyncEngine]:
    """An engine for a PostgreSQL port nobody listens on."""
    engine = create_engine(f"postgresql+asyncpg://jobql@127.0.0.1:{free_port()}/jobql")
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_the_key_service_says_unavailable_not_unknown_key_when_the_database_is_down(
    unreachable_database: AsyncEngine,
) -> None:
    keys = KeyService(create_session_factory(unreachable_database))
    with pytest.raises(ServiceUnavailableError) as raised:
        await keys.authenticate("jq_" + "x" * 40)
    assert raised.value.retry_after_seconds == RETRY_AFTER_SECONDS
    assert "SELECT" not in str(raised.value)
    # A malformed key needs no database: it is simply not a key.
    assert await keys.authenticate("not-a-key") is None


# -- the rate limiter's Redis ----------------------------------------------------------


@pytest.fixture
def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_the_rate_limiter_fails_open_by_default_with_a_throttled_warning(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    limiter = RateLimiter(dead_redis_url, metrics=metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="jobql.services.ratelimit"):
            states = [await limiter.hit("submit", "caller-1", 1, 60) for _ in range(3)]
    finally:
        await limiter.aclose()
    assert states == [None, None, None]  # allowed, uncounted: no RateLimit headers
    assert (
        metrics.registry.get_sample_value(
            "jobql_rate_limiter_unavailable_total", {"action": "allowed"}
        )
        == 3
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis is unreachable" in warnings[0].getMessage()


async def test_the_rate_limiter_fails_closed_when_configured(dead_redis_url: str) -> None:
    metrics = Metrics()
    limiter = RateLimiter(dead_redis_url, on_redis_error="closed", metrics=metrics)
    try:
        with pytest.raises(ServiceUnavailableError):
            await limiter.acquire("submit", "caller-1", 10, 60)
    finally:
        await limiter.aclose()
    assert (
        metrics.registry.get_sample_value(
            "jobql_rate_limiter_unavailable_total", {"action": "refused"}
        )
        == 1
    )


def limited_service(redis_url: str, policy: str, bus: BroadcastBus) -> JobService:
    settings = Settings(
        tasks_file=TEST_TASKS,
        enforce_limits=True,
        tier_limits={"standard": TierLimits(rate_limit=100, max_active_jobs=1)},
        rate_limit_on_redis_error=policy,
        _env_file=None,  # type: ignore[call-arg]
    )
    return JobService(
        settings,
        store=MemoryJobStore(),
        bus=bus,
        tasks=load_tasks(TEST_TASKS),
        rate_limiter=RateLimiter(redis_url, on_redis_error=policy),  # type: ignore[arg-type]
    )


@pytest.fixture
async def bus() -> AsyncIterator[BroadcastBus]:
    bus = BroadcastBus("memory://")
    await bus.connect()
    yield bus
    await bus.disconnect()


async def test_with_redis_down_submits_pass_and_the_database_limits_still_hold(
    dead_redis_url: str, bus: BroadcastBus
) -> None:
    service = limited_service(dead_redis_url, "open", bus)
    assert service.rate_limiter is not None
    try:
        request = SubmitRequest(api_version="v1", task="echo", input={"topic": "x"})
        first = await service.submit(CALLER, request)
        second = await service.submit(CALLER, request)
    finally:
        await service.rate_limiter.aclose()
    assert isinstance(first, Submitted)
    assert isinstance(second, ConcurrencyLimitExceeded)  # max_active_jobs=1, from the store


async def test_with_redis_down_and_the_closed_policy_submits_are_service_unavailable(
    dead_redis_url: str, bus: BroadcastBus
) -> None:
    service = limited_service(dead_redis_url, "closed", bus)
    assert service.rate_limiter is not None
    try:
        request = SubmitRequest(api_version="v1", task="echo", input={"topic": "x"})
        outcome = await service.submit(CALLER, request)
    finally:
        await service.rate_limiter.aclose()
    assert outcome == ServiceUnavailable(RETRY_AFTER_SECONDS)
    assert await service.store.count_by_status() == {}


# -- the throttled warning -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_throttled_warning_logs_once_per_interval_and_counts_the_rest(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    warn = ThrottledWarning(logging.getLogger("tests.throttled"), "down", interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="tests.throttled"):
        logged = [warn(outage()) for _ in range(4)]
        clock.now = 10.0
        logged.append(warn(outage()))
    assert logged == [True, False, False, False, True]
    assert [r.getMessage() for r in caplog.records] == [
        "down (ConnectionRefusedError; 0 more since the last warning)",
        "down (ConnectionRefusedError; 3 more since the last warning)",
    ]
