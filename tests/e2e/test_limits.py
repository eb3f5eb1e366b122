"""Idempotency and rate, cost and concurrency limits under real concurrent clients, on real
SQLite and PostgreSQL (and the Redis-backed rate limiter)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from jobql.models import Job, JobStatus
from jobql.services.limits import LimitOverrides
from jobql.settings import Settings
from tests.api import SUBMIT, Api, Server, serve
from tests.backends import REDIS_URL, Backend


@pytest.fixture
def limited(settings: Settings, backend: Backend) -> Settings:
    """Limits on; on the PostgreSQL+Redis backend the rate counters live in Redis."""
    return settings.model_copy(
        update={
            "enforce_limits": True,
            "redis_url": REDIS_URL if backend.bus == "redis" else None,
        }
    )


@pytest.fixture
async def server(limited: Settings) -> AsyncIterator[Server]:
    async with serve(limited) as running:
        yield running


async def caller(server: Server, **limits: Any) -> Api:
    api = await server.client("limited")
    await server.services.keys.set_limits(api.key[:10], LimitOverrides(**limits), clear=False)
    return api


async def job_rows(server: Server) -> int:
    async with server.runtime.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(Job))).scalar_one())


async def test_50_concurrent_submits_with_one_key_make_one_job(server: Server) -> None:
    api = await caller(server)
    results = await asyncio.gather(
        *(api.submit("echo", {"topic": "same"}, key="checkout-7") for _ in range(50))
    )
    assert {r["__typename"] for r in results} == {"V1SubmitJobSuccess"}
    ids = {r["job"]["id"] for r in results}
    assert len(ids) == 1
    assert [r["deduplicated"] for r in results].count(False) == 1
    assert await job_rows(server) == 1
    await api.aclose()


async def test_50_concurrent_submits_with_one_key_and_different_inputs(server: Server) -> None:
    api = await caller(server)
    results = await asyncio.gather(
        *(api.submit("echo", {"topic": f"t{i}"}, key="k-race") for i in range(50))
    )
    kinds = Counter(r["__typename"] for r in results)
    assert kinds == {"V1SubmitJobSuccess": 1, "V1IdempotencyKeyReused": 49}
    winner = next(r["job"]["id"] for r in results if r["__typename"] == "V1SubmitJobSuccess")
    assert {r["jobId"] for r in results if "jobId" in r} == {winner}
    assert await job_rows(server) == 1
    await api.aclose()


async def test_idempotency_key_is_forgotten_after_the_window(limited: Settings) -> None:
    async with serve(limited.model_copy(update={"idempotency_window_seconds": 1})) as server:
        api = await caller(server)
        first = await api.submit_ok("echo", {"topic": "a"}, key="k-window")
        # Age the first job past the window instead of waiting for it.
        async with server.runtime.sessions() as db, db.begin():
            job = await db.get(Job, first["id"])
            assert job is not None
            job.created_at = job.created_at.replace(year=job.created_at.year - 1)
        again = await api.submit("echo", {"topic": "b"}, key="k-window")
        assert again["__typename"] == "V1SubmitJobSuccess"
        assert again["job"]["id"] != first["id"]
        assert again["deduplicated"] is False
        await api.aclose()


async def test_100_concurrent_submits_against_a_rate_of_5(server: Server) -> None:
    api = await caller(server, rate_limit=5, rate_window_seconds=3)
    variables = {"input": {"task": "cheap", "input": {"topic": "rate"}}}
    responses = await asyncio.gather(*(api.post(SUBMIT, variables) for _ in range(100)))
    answers = [r.json()["data"]["submitJob"] for r in responses]
    kinds = Counter(a["__typename"] for a in answers)
    assert kinds == {"V1SubmitJobSuccess": 5, "V1RateLimited": 95}
    for response, answer in zip(responses, answers, strict=True):
        assert response.headers["RateLimit-Policy"] == '"submit";q=5;w=3'
        if answer["__typename"] == "V1RateLimited":
            assert answer["code"] == "RATE_LIMITED"
            assert answer["retryable"] is True
            assert answer["limit"] == 5
            assert answer["windowSeconds"] == 3
            assert 1 <= answer["retryAfterSeconds"] <= 3
            assert response.headers["Retry-After"] == str(answer["retryAfterSeconds"])
    assert await job_rows(server) == 5

    # Retry-After is not too early: just before it, still refused; after it, accepted.
    refused = await api.post(SUBMIT, variables)
    retry_after = int(refused.headers["Retry-After"])
    assert refused.json()["data"]["submitJob"]["__typename"] == "V1RateLimited"
    started = time.monotonic()
    await asyncio.sleep(retry_after)  # the client's own wait, as Retry-After tells it
    accepted = (await api.post(SUBMIT, variables)).json()["data"]["submitJob"]
    assert accepted["__typename"] == "V1SubmitJobSuccess", (time.monotonic() - started, accepted)
    await api.aclose()


async def test_concurrent_submits_near_the_cost_cap(server: Server) -> None:
    # "cheap" reserves (and costs) exactly $0.01; the cap allows five.
    api = await caller(server, daily_cost_cap_micros=50_000)
    results = await asyncio.gather(*(api.submit("cheap", {"topic": f"c{i}"}) for i in range(20)))
    kinds = Counter(r["__typename"] for r in results)
    assert kinds == {"V1SubmitJobSuccess": 5, "V1CostLimitExceeded": 15}
    refusal = next(r for r in results if r["__typename"] == "V1CostLimitExceeded")
    assert refusal["retryable"] is False
    ids = [r["job"]["id"] for r in results if r["__typename"] == "V1SubmitJobSuccess"]
    costs = [(await api.wait_finished(i))["usage"]["costUsd"] for i in ids]
    viewer = (
        await api.execute(
            "{ viewer { limits { dailyCostCapUsd }"
            " usageToday { costUsd reservedUsd remainingUsd } } }"
        )
    )["viewer"]
    assert viewer["limits"]["dailyCostCapUsd"] == 0.05
    assert round(viewer["usageToday"]["costUsd"], 2) == round(sum(costs), 2) == 0.05
    assert viewer["usageToday"]["reservedUsd"] == 0
    assert viewer["usageToday"]["remainingUsd"] == 0
    # Spent up: the next submit is refused, and says so with the numbers.
    after = await api.submit("cheap", {"topic": "one more"})
    assert after["__typename"] == "V1CostLimitExceeded"
    await api.aclose()


async def test_cost_refusal_reports_cap_spent_reserved_and_reset(server: Server) -> None:
    api = await caller(server, daily_cost_cap_micros=15_000)
    await api.submit_ok("hang", {"topic": "holds a reservation"}, maxCostUsd=0.01)
    refused = await api.execute(
        """mutation { submitJob(input: {task: "cheap", input: {topic: "x"}}) {
             ... on V1CostLimitExceeded { capUsd spentUsd reservedUsd resetsAt } } }"""
    )
    answer = refused["submitJob"]
    assert answer["capUsd"] == 0.015
    assert answer["spentUsd"] == 0
    assert answer["reservedUsd"] == 0.01
    assert answer["resetsAt"].endswith("T00:00:00+00:00")
    await api.aclose()


async def test_concurrency_cap_is_never_exceeded(server: Server) -> None:
    limit = 3
    api = await caller(server, max_active_jobs=limit)
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            async with server.runtime.sessions() as db:
                active = (
                    await db.execute(
                        select(func.count()).where(
                            Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])
                        )
                    )
                ).scalar_one()
            samples.append(int(active))
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(
        *(api.submit("hang", {"topic": f"long {i}"}) for i in range(limit + 10))
    )
    done.set()
    await sampler
    kinds = Counter(r["__typename"] for r in results)
    assert kinds == {"V1SubmitJobSuccess": limit, "V1ConcurrencyLimitExceeded": 10}
    refusal = next(r for r in results if r["__typename"] == "V1ConcurrencyLimitExceeded")
    assert refusal["retryable"] is True
    assert samples
    assert max(samples) <= limit
    # A finished job frees its slot.
    first = next(r["job"]["id"] for r in results if r["__typename"] == "V1SubmitJobSuccess")
    await api.cancel(first)
    await api.wait_finished(first)
    assert (await api.submit("hang", {"topic": "next"}))["__typename"] == "V1SubmitJobSuccess"
    await api.aclose()


async def test_deduplicated_retries_cost_nothing(server: Server) -> None:
    """A retry with the same key returns the job without touching any limit."""
    api = await caller(server, rate_limit=1, rate_window_seconds=60, max_active_jobs=1)
    first = await api.submit("hang", {"topic": "once"}, key="k-free")
    assert first["__typename"] == "V1SubmitJobSuccess"
    for _ in range(3):
        retry = await api.submit("hang", {"topic": "once"}, key="k-free")
        assert retry["__typename"] == "V1SubmitJobSuccess"
        assert retry["deduplicated"] is True
    await api.cancel(first["job"]["id"])
    await api.aclose()


async def test_viewer_shows_limits(server: Server) -> None:
    api = await caller(server, rate_limit=7, rate_window_seconds=30, max_active_jobs=4)
    viewer = (
        await api.execute(
            "{ viewer { tier limits"
            " { rateLimit rateWindowSeconds dailyCostCapUsd maxActiveJobs } } }"
        )
    )["viewer"]
    assert viewer["limits"] == {
        "rateLimit": 7,
        "rateWindowSeconds": 30,
        "dailyCostCapUsd": 10.0,  # the standard tier's default
        "maxActiveJobs": 4,
    }
    await api.aclose()
