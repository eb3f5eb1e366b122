"""v2's limit refusals as data (rate, cost, concurrency) and exact money: the costs of a
caller's jobs add up to the viewer's usage to the micro-dollar."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from jobql.services.limits import LimitOverrides
from jobql.settings import Settings
from tests.api import Server, serve
from tests.backends import REDIS_URL, Backend
from tests.e2e.v2.client import SUBMIT, V2Api


@pytest.fixture
async def server(settings: Settings, backend: Backend) -> AsyncIterator[Server]:
    """Limits on; on the PostgreSQL+Redis backend the rate counters live in Redis."""
    limited = settings.model_copy(
        update={
            "enforce_limits": True,
            "redis_url": REDIS_URL if backend.bus == "redis" else None,
        }
    )
    async with serve(limited) as running:
        yield running


async def caller(server: Server, **limits: Any) -> V2Api:
    api = V2Api(server, await server.new_key("limited"))
    await server.services.keys.set_limits(api.key[:10], LimitOverrides(**limits), clear=False)
    return api


def amount(money: dict[str, str]) -> Decimal:
    assert money["currency"] == "USD"
    whole, _, places = money["amount"].partition(".")
    assert whole.isdigit()
    assert len(places) == 6
    assert places.isdigit()
    return Decimal(money["amount"])


async def test_rate_limited_as_data_with_retry_after(server: Server) -> None:
    api = await caller(server, rate_limit=2, rate_window_seconds=30)
    try:
        for _ in range(2):
            await api.submit_ok("echo", {"topic": "rate"})
        response = await api.post(SUBMIT, {"input": {"task": "echo", "params": {"topic": "rate"}}})
        refused = response.json()["data"]["submitJob"]
        assert refused["__typename"] == "V2RateLimited"
        assert (refused["code"], refused["retryable"]) == ("RATE_LIMITED", True)
        assert (refused["limit"], refused["windowSeconds"]) == (2, 30)
        assert 1 <= refused["retryAfterSeconds"] <= 30
        assert response.headers["Retry-After"] == str(refused["retryAfterSeconds"])
        assert response.headers["RateLimit-Policy"] == '"submit";q=2;w=30'
        assert refused["requestId"] == response.headers["X-Request-ID"]
    finally:
        await api.aclose()


async def test_cost_limit_reports_exact_money(server: Server) -> None:
    api = await caller(server, daily_cost_cap_micros=15_000)
    try:
        held = await api.submit_ok("hang", {"topic": "holds a reservation"}, maxCost="0.01")
        refused = await api.submit("echo", {"topic": "too dear"})
        assert refused["__typename"] == "V2CostLimitExceeded"
        assert (refused["code"], refused["retryable"]) == ("COST_LIMIT_EXCEEDED", False)
        assert refused["cap"] == {"amount": "0.015000", "currency": "USD"}
        assert refused["spent"] == {"amount": "0.000000", "currency": "USD"}
        assert refused["reserved"] == {"amount": "0.010000", "currency": "USD"}
        assert refused["resetsAt"].endswith("T00:00:00+00:00")
        assert (await api.cancel(held["id"]))["__typename"] == "V2CancelJobSuccess"
    finally:
        await api.aclose()


async def test_concurrency_limit_as_data(server: Server) -> None:
    api = await caller(server, max_active_jobs=1)
    try:
        first = await api.submit_ok("hang", {"topic": "one"})
        refused = await api.submit("hang", {"topic": "two"})
        assert refused["__typename"] == "V2ConcurrencyLimitExceeded"
        assert (refused["limit"], refused["active"], refused["retryable"]) == (1, 1, True)
        await api.cancel(first["id"])
        await api.wait_finished(first["id"])
        assert (await api.submit("hang", {"topic": "three"}))["__typename"] == (
            "V2SubmitJobSuccess"
        )
    finally:
        await api.aclose()


async def test_job_costs_add_up_to_the_viewers_usage_exactly(server: Server) -> None:
    api = await caller(server)
    try:
        ids = [
            (await api.submit_ok("priced", {"topic": f"topic number {i} " * (i + 1)}))["id"]
            for i in range(7)
        ]
        costs: list[Decimal] = []
        for job_id in ids:
            events = await api.events(job_id)
            finished = events[-1]
            assert finished["__typename"] == "V2JobSucceeded"
            costs.append(amount(finished["usage"]["cost"]))
            assert finished["job"]["usage"]["cost"] == finished["usage"]["cost"]
        # Fractions of a micro-dollar per token: each job's cost is rounded to the micro.
        assert any(cost * 1_000_000 % 1000 for cost in costs)
        jobs = [await api.job(job_id) for job_id in ids]
        assert [amount(j["usage"]["cost"]) for j in jobs] == costs
        viewer = (
            await api.execute(
                "{ viewer { usageToday { jobs cost { amount currency } reserved { amount "
                "currency } remaining { amount currency } } "
                "limits { dailyCostCap { amount currency } } } }"
            )
        )["viewer"]
        usage = viewer["usageToday"]
        assert usage["jobs"] == len(ids)
        assert amount(usage["cost"]) == sum(costs)
        assert amount(usage["reserved"]) == 0
        assert amount(usage["remaining"]) == amount(viewer["limits"]["dailyCostCap"]) - sum(costs)
    finally:
        await api.aclose()
