"""Every way a job can fail ends in one JobFailed with a typed, safe error."""

from __future__ import annotations

import pytest

from tests.api import Api, stored, text_of

SECRET = "UPSTREAM-SECRET-BODY-7f3a"


@pytest.mark.parametrize(
    ("task", "typename", "code", "retryable"),
    [
        ("fail-unavailable", "V1ProviderUnavailable", "PROVIDER_UNAVAILABLE", True),
        ("fail-timeout", "V1ProviderTimeout", "PROVIDER_TIMEOUT", True),
        ("fail-rate-limited", "V1ProviderRateLimited", "PROVIDER_RATE_LIMITED", True),
        ("fail-content-filter", "V1ContentFiltered", "CONTENT_FILTERED", False),
    ],
)
async def test_provider_failures(
    api: Api, task: str, typename: str, code: str, retryable: bool
) -> None:
    job = await api.submit_ok(task, {"topic": "doomed"})
    events = await api.events(job["id"])
    final = events[-1]
    assert final["__typename"] == "V1JobFailed"
    assert final["error"]["__typename"] == typename
    assert final["error"]["code"] == code
    assert final["error"]["retryable"] is retryable
    if code == "PROVIDER_RATE_LIMITED":
        assert final["error"]["retryAfterSeconds"] == 7
    failed = await api.job(job["id"])
    assert failed["status"] == "FAILED"
    assert failed["error"]["__typename"] == typename
    assert failed["error"]["requestId"] == failed["requestId"]
    # What streamed before the failure is kept, and billed.
    assert failed["output"] == text_of(events)
    assert failed["usage"]["outputTokens"] == len(failed["output"].split())


async def test_provider_error_body_never_reaches_a_client(api: Api) -> None:
    job = await api.submit_ok("fail-unavailable", {"topic": "leak?"})
    events = await api.events(job["id"])
    response = await api.post(
        "query($id: ID!) { job(id: $id) { ... on V1Job { error { message } output } } }",
        {"id": job["id"]},
    )
    assert SECRET not in response.text
    assert SECRET not in str(events)


async def test_output_schema_mismatch(api: Api) -> None:
    job = await api.submit_ok("bad-output", {"text": "x"})
    final = (await api.events(job["id"]))[-1]
    assert final["__typename"] == "V1JobFailed"
    assert final["error"]["code"] == "OUTPUT_SCHEMA_MISMATCH"
    assert final["error"]["retryable"] is True
    failed = await api.job(job["id"])
    assert failed["error"]["violations"][0]["path"] == "result"
    assert failed["result"] is None


async def test_deadline_exceeded_keeps_partial_output(api: Api) -> None:
    job = await api.submit_ok("stall", {"topic": "forever"})
    events = await api.events(job["id"])
    final = events[-1]
    assert final["__typename"] == "V1JobFailed"
    assert final["error"]["__typename"] == "V1DeadlineExceeded"
    assert final["error"]["retryable"] is False
    assert final["usage"]["outputTokens"] == 3
    assert final["durationMs"] >= 900
    failed = await api.job(job["id"])
    assert failed["status"] == "FAILED"
    assert len(failed["output"].split()) == 3


async def test_client_deadline_shorter_than_the_tier(api: Api) -> None:
    job = await api.submit_ok("slow", {"topic": "hurry"}, deadlineSeconds=1)
    final = (await api.events(job["id"]))[-1]
    assert final["error"]["code"] == "DEADLINE_EXCEEDED"
    assert 0 < final["usage"]["outputTokens"] < 120


async def test_max_cost_stops_the_job_with_budget_exceeded(api: Api) -> None:
    # slow costs $0.002 per output token; allow about five.
    job = await api.submit_ok("slow", {"topic": "budget"}, maxCostUsd=0.011)
    events = await api.events(job["id"])
    final = events[-1]
    assert final["error"]["__typename"] == "V1BudgetExceeded"
    assert final["error"]["retryable"] is False
    assert 0 < final["usage"]["outputTokens"] < 120
    assert final["costUsd"] > 0.011  # stopped at the first batch that crossed the budget
    assert [e["seq"] for e in stored(events)] == list(range(1, len(stored(events)) + 1))
