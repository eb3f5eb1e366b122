"""API v2 over real HTTP and WebSocket: submit, read, stream, resume, cancel; on every
backend (SQLite + memory bus, PostgreSQL, PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

from tests.e2e.v2.client import V2Api, events_request, stored, text_of


def decoded(global_id: str) -> str:
    return base64.b64decode(global_id).decode()


async def test_submit_answers_a_queued_v2_job_with_a_global_id(v2: V2Api) -> None:
    job = await v2.submit_ok("echo", {"topic": "otters"}, metadata={"ref": 7})
    kind, _, job_id = decoded(job["id"]).partition(":")
    assert kind == "V2Job"
    assert str(uuid.UUID(job_id)) == job_id
    assert job["status"] in {"QUEUED", "RUNNING", "SUCCEEDED"}
    assert job["params"] == {"topic": "otters"}
    assert job["metadata"] == {"ref": 7}
    assert job["tier"] == "GENERATIVE"
    assert job["contract"] == {
        "apiVersion": "v2",
        "promptVersion": "t2",
        "model": {"provider": "simulated", "name": "sim-fast", "version": "sim-fast-2"},
    }
    assert job["maxCost"] is None

    done = await v2.wait_finished(job["id"])
    assert done["__typename"] == "V2Job"
    assert done["id"] == job["id"]
    assert done["status"] == "SUCCEEDED"
    assert done["output"]
    assert done["error"] is None
    assert done["usage"]["totalTokens"] == (
        done["usage"]["inputTokens"] + done["usage"]["outputTokens"]
    )
    assert done["usage"]["cost"]["currency"] == "USD"
    assert done["usage"]["cost"]["amount"] != "0.000000"


async def test_the_v2_classify_contract_answers_scores(v2: V2Api) -> None:
    job = await v2.submit_ok("classify", {"text": "I love this, it is great"}, waitSeconds=10)
    assert job["status"] == "SUCCEEDED", job
    assert job["result"]["label"] == "positive"
    assert set(job["result"]["scores"]) == {"positive", "negative", "neutral"}
    assert job["contract"]["promptVersion"] == "t2"
    assert job["contract"]["model"]["version"] == "sim-small-2"


async def test_max_cost_is_an_exact_decimal_string(v2: V2Api) -> None:
    job = await v2.submit_ok("echo", {"topic": "budgets"}, maxCost="12.345678")
    assert job["maxCost"] == {"amount": "12.345678", "currency": "USD"}
    for bad in ("0.0000001", "-1", "1e3", "abc", "0", "0.000000", "1000000.000001"):
        refused = await v2.submit("echo", {"topic": "budgets"}, maxCost=bad)
        assert refused["__typename"] == "V2InvalidInput", (bad, refused)
        assert refused["field"] == "maxCost"
        assert refused["code"] == "INVALID_INPUT"
        assert refused["retryable"] is False
        assert "maxCostUsd" not in refused["message"]


async def test_invalid_params_are_named_params(v2: V2Api) -> None:
    refused = await v2.submit("echo", {"topic": ""})
    assert refused["__typename"] == "V2InvalidInput"
    assert refused["field"] == "params.topic"
    assert [v["path"] for v in refused["violations"]] == ["params.topic"]
    assert refused["message"] == (
        "The params do not match the task's params schema (params.topic)."
    )
    not_an_object = await v2.submit("echo", [1, 2])
    assert (not_an_object["field"], not_an_object["message"]) == (
        "params",
        "The params must be a JSON object.",
    )
    waiting = await v2.submit("echo", {"topic": "x"}, waitSeconds=-1)
    assert (waiting["field"], waiting["message"]) == (
        "waitSeconds",
        "waitSeconds must not be negative.",
    )
    unknown = await v2.submit("stall", {"topic": "a v1-only task"})
    assert unknown["__typename"] == "V2InvalidInput"
    assert unknown["field"] == "task"


async def test_idempotency_key_in_the_input(v2: V2Api) -> None:
    first = await v2.submit("echo", {"topic": "once"}, idempotencyKey="order-1")
    again = await v2.submit("echo", {"topic": "once"}, idempotencyKey="order-1")
    assert first["__typename"] == again["__typename"] == "V2SubmitJobSuccess"
    assert again["job"]["id"] == first["job"]["id"]
    assert (first["deduplicated"], again["deduplicated"]) == (False, True)
    reused = await v2.submit("echo", {"topic": "other"}, idempotencyKey="order-1")
    assert reused["__typename"] == "V2IdempotencyKeyReused"
    assert reused["jobId"] == first["job"]["id"]


async def test_job_events_resume_after_a_seq(v2: V2Api) -> None:
    job = await v2.submit_ok("slow", {"topic": "resuming"})
    events = await v2.events(job["id"])
    finished = events[-1]
    assert finished["__typename"] == "V2JobSucceeded"
    assert finished["job"]["id"] == job["id"]
    assert finished["job"]["status"] == "SUCCEEDED"
    assert finished["job"]["usage"]["cost"] == finished["usage"]["cost"]
    seqs = [e["seq"] for e in stored(events)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert {e["jobId"] for e in events} == {job["id"]}
    assert text_of(events) == finished["output"]

    middle = seqs[len(seqs) // 2]
    resumed = await v2.events(job["id"], after_seq=middle)
    assert [e["seq"] for e in resumed] == [s for s in seqs if s > middle]
    assert resumed[-1] == {**finished, "job": resumed[-1]["job"]}
    assert await v2.events(job["id"], after_seq=seqs[-1]) == []


async def test_progress_and_heartbeats_say_phase(v2: V2Api) -> None:
    job = await v2.submit_ok("hang", {"topic": "heartbeats"})
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20), v2.ws() as session:
        async for item in session.subscribe(events_request(job["id"])):
            seen.append(item["jobEvents"])
            if seen[-1]["__typename"] == "V2Heartbeat":
                break
    (progress,) = [e for e in seen if e["__typename"] == "V2Progress"]
    assert progress["phase"] == "thinking"
    beat = seen[-1]
    assert beat["jobId"] == job["id"]
    assert (beat["status"], beat["phase"]) == ("RUNNING", "thinking")
    assert beat["cost"]["currency"] == "USD"
    assert (await v2.cancel(job["id"]))["__typename"] == "V2CancelJobSuccess"


async def test_cancel_by_global_id(v2: V2Api) -> None:
    job = await v2.submit_ok("slow", {"topic": "stopping"})
    cancelled = await v2.cancel(job["id"], reason="changed my mind")
    assert cancelled["__typename"] == "V2CancelJobSuccess"
    assert cancelled["job"]["id"] == job["id"]
    assert cancelled["job"]["cancelRequested"] is True
    events = await v2.events(job["id"])
    assert events[-1]["__typename"] == "V2JobCancelled"
    assert events[-1]["reason"] == "changed my mind"
    assert events[-1]["job"]["status"] == "CANCELLED"
    again = await v2.cancel(job["id"])
    assert again["__typename"] == "V2JobNotCancellable"
    assert again["status"] == "CANCELLED"
    assert again["code"] == "JOB_NOT_CANCELLABLE"


async def test_job_failures_are_one_type_with_typed_details(v2: V2Api) -> None:
    limited = await v2.submit_ok("fail-rate-limited", {"topic": "x"})
    mismatch = await v2.submit_ok("bad-output", {"text": "x"})
    filtered = await v2.submit_ok("fail-content-filter", {"topic": "x"})
    failed = {
        name: await v2.wait_finished(job["id"])
        for name, job in (("limited", limited), ("mismatch", mismatch), ("filtered", filtered))
    }
    errors = {name: job["error"] for name, job in failed.items()}
    assert {e["__typename"] for e in errors.values()} == {"V2JobError"}
    assert {name: job["status"] for name, job in failed.items()} == dict.fromkeys(failed, "FAILED")
    assert errors["limited"]["code"] == "PROVIDER_RATE_LIMITED"
    assert errors["limited"]["retryable"] is True
    assert errors["limited"]["retryAfterSeconds"] == 7
    assert errors["limited"]["violations"] == []
    assert errors["mismatch"]["code"] == "OUTPUT_SCHEMA_MISMATCH"
    assert errors["mismatch"]["violations"]
    assert errors["mismatch"]["retryAfterSeconds"] is None
    assert errors["filtered"]["code"] == "CONTENT_FILTERED"
    assert errors["filtered"]["retryable"] is False
    assert (errors["filtered"]["violations"], errors["filtered"]["retryAfterSeconds"]) == ([], None)
    # The terminal event carries the same error.
    events = await v2.events(limited["id"])
    assert events[-1]["__typename"] == "V2JobFailed"
    assert events[-1]["error"]["code"] == "PROVIDER_RATE_LIMITED"
    assert events[-1]["error"]["retryAfterSeconds"] == 7


async def test_tasks_lists_the_v2_contracts_only(v2: V2Api) -> None:
    data = await v2.execute(
        "{ tasks { id name tier promptVersion model { version } paramsSchema outputSchema "
        "pricing { inputPerMillionTokens { amount currency } "
        "outputPerMillionTokens { amount } } } }"
    )
    tasks = {t["name"]: t for t in data["tasks"]}
    assert set(tasks) == {
        "echo",
        "slow",
        "classify",
        "bad-output",
        "fail-rate-limited",
        "fail-content-filter",
        "hang",
        "priced",
    }
    assert {t["promptVersion"] for t in tasks.values()} == {"t2"}
    classify = tasks["classify"]
    assert "scores" in classify["outputSchema"]["required"]
    assert classify["pricing"]["inputPerMillionTokens"] == {
        "amount": "500.000000",
        "currency": "USD",
    }
    assert classify["pricing"]["outputPerMillionTokens"]["amount"] == "1500.000000"
    assert decoded(classify["id"]) == "V2Task:classify"


async def test_viewer_says_plan_not_tier(v2: V2Api) -> None:
    data = await v2.execute(
        "{ viewer { id name plan activeJobs limits { rateLimit dailyCostCap { amount } } "
        "usageToday { day jobs cost { amount currency } reserved { amount } "
        "remaining { amount } } } }"
    )
    viewer = data["viewer"]
    assert viewer["name"] == "alice"
    assert viewer["plan"] == "standard"
    assert decoded(viewer["id"]).startswith("V2Viewer:")
    assert viewer["usageToday"]["cost"] == {"amount": "0.000000", "currency": "USD"}


async def test_max_cost_stops_the_job_with_budget_exceeded(v2: V2Api) -> None:
    job = await v2.submit_ok("slow", {"topic": "spending"}, maxCost="0.005")
    done = await v2.wait_finished(job["id"])
    assert done["error"]["code"] == "BUDGET_EXCEEDED"
    assert done["error"]["retryable"] is False
    assert done["maxCost"] == {"amount": "0.005000", "currency": "USD"}
    assert done["output"]  # the partial output is kept
