"""What operators and clients can observe: metrics, structured logs, request ids, cost and
model in responses, and nothing leaking that should not."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobql.observability.logging import configure_logging
from tests.api import SUBMIT, Api, Server

SECRET = "UPSTREAM-SECRET-BODY-7f3a"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Route every log record through jobql's JSON formatter into a buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


# The test's own clients run in this process too; their debug logs echo what they receive.
CLIENT_LOGGERS = ("gql", "websockets.client", "httpx", "httpcore")


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """The server's log lines (every one must be valid JSON)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if not line["logger"].startswith(CLIENT_LOGGERS)]


async def test_metrics_endpoint(server: Server, api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "counted"})
    await api.wait_finished(job["id"])
    failed = await api.submit_ok("fail-timeout", {"topic": "x"})
    await api.wait_finished(failed["id"])
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no {sample}{labels}")

    assert value("jobql_jobs_submitted", "jobql_jobs_submitted_total", task="echo") == 1
    assert (
        value("jobql_jobs_finished", "jobql_jobs_finished_total", task="echo", status="SUCCEEDED")
        == 1
    )
    assert (
        value(
            "jobql_provider_errors",
            "jobql_provider_errors_total",
            provider="simulated",
            code="PROVIDER_TIMEOUT",
        )
        == 1
    )
    assert value("jobql_submit_duration_seconds", "jobql_submit_duration_seconds_count") >= 2
    assert (
        value(
            "jobql_time_to_first_token_seconds",
            "jobql_time_to_first_token_seconds_count",
            task="echo",
        )
        == 1
    )
    assert value("jobql_queue_depth", "jobql_queue_depth", status="QUEUED") == 0
    assert value("jobql_active_subscriptions", "jobql_active_subscriptions") == 0
    assert value("jobql_event_bus_connected", "jobql_event_bus_connected") == 1
    assert value("jobql_event_bus_reconnects", "jobql_event_bus_reconnects_total") == 0


async def test_json_logs_carry_request_and_job_ids(api: Api, json_logs: io.StringIO) -> None:
    response = await api.post(
        SUBMIT,
        {"input": {"task": "echo", "input": {"topic": "logged"}}},
        headers={"X-Request-ID": "req-logs-1"},
    )
    job_id = response.json()["data"]["submitJob"]["job"]["id"]
    await api.wait_finished(job_id)
    lines = log_lines(json_logs)
    submitted = [line for line in lines if line["message"] == "job submitted"]
    assert submitted
    assert submitted[0]["request_id"] == "req-logs-1"
    assert submitted[0]["job_id"] == job_id
    finished = [line for line in lines if line["message"] == "job finished"]
    assert finished[0]["job_id"] == job_id
    assert finished[0]["status"] == "SUCCEEDED"
    # No prompt and no output in any line.
    final = (await api.job(job_id))["output"]
    assert all(final not in json.dumps(line) for line in lines)
    assert all("Write about logged" not in json.dumps(line) for line in lines)


async def test_provider_error_body_never_reaches_responses_events_or_logs(
    api: Api, json_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job = await api.submit_ok("fail-unavailable", {"topic": "leak?"})
    events = await api.events(job["id"])
    response = await api.post(
        "query($id: ID!) { job(id: $id) { ... on V1Job { error { message } output } } }",
        {"id": job["id"]},
    )
    assert events[-1]["error"]["code"] == "PROVIDER_UNAVAILABLE"
    assert SECRET not in response.text
    assert SECRET not in json.dumps(events)
    assert all(SECRET not in json.dumps(line) for line in log_lines(json_logs))
    for record in caplog.records:
        if record.name.startswith(CLIENT_LOGGERS):
            continue
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.exc_text or "")


async def test_client_errors_are_not_logged_as_errors_nor_with_their_document(
    server: Server, api: Api, json_logs: io.StringIO
) -> None:
    inline = "INLINE-PROMPT-5c1e"
    submit = f'submitJob(input: {{task: "echo", input: {{topic: "{inline}"}}}})'
    async with httpx.AsyncClient(base_url=server.http_url) as anonymous:
        unauthenticated = await anonymous.post(
            "/v1/graphql", json={"query": f"mutation {{ {submit} {{ __typename }} }}"}
        )
    invalid = await api.post(f"mutation {{ {submit} {{ nope }} }}")
    echoed = await api.post(f'{{ jobs(first: "{inline}") {{ __typename }} }}')
    negative = await api.post("{ jobs(first: -1) { __typename } }")
    assert unauthenticated.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert invalid.json()["errors"]
    assert inline in echoed.text  # graphql-core quotes the bad literal back to the client
    assert negative.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    lines = log_lines(json_logs)
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    assert all(inline not in json.dumps(line) for line in lines)
    logged = [line for line in lines if line["message"] == "GraphQL client error"]
    assert {line["code"] for line in logged} == {
        "UNAUTHENTICATED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_USER_INPUT",
    }
    assert all(line["level"] == "DEBUG" for line in logged)


async def test_unexpected_errors_are_masked_with_the_request_id(
    server: Server, api: Api, monkeypatch: pytest.MonkeyPatch, json_logs: io.StringIO
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("SELECT secret FROM jobs -- internal detail")

    monkeypatch.setattr(server.services.jobs, "get", broken)
    response = await api.post(
        '{ job(id: "x") { __typename } }', headers={"X-Request-ID": "req-masked"}
    )
    body = response.json()
    assert "SELECT" not in response.text
    assert "RuntimeError" not in response.text
    assert body["errors"][0]["message"] == "Internal error; quote the request id when reporting it."
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL"
    assert body["extensions"]["requestId"] == "req-masked"
    assert response.headers["x-request-id"] == "req-masked"
    # The operator's side: one ERROR line with the traceback, found by the request id.
    (logged,) = [line for line in log_lines(json_logs) if line["level"] == "ERROR"]
    assert logged["request_id"] == "req-masked"
    assert logged["message"] == "unexpected error resolving job"
    assert logged["exc"]["type"] == "RuntimeError"
    assert "internal detail" in logged["exc"]["traceback"]


async def test_submit_answer_carries_cost_and_model(api: Api) -> None:
    response = await api.post(
        SUBMIT, {"input": {"task": "classify", "input": {"text": "ok"}, "wait": 10}}
    )
    body = response.json()
    job = body["data"]["submitJob"]["job"]
    extension = body["extensions"]["job"]
    assert extension["id"] == job["id"]
    assert extension["status"] == "SUCCEEDED"
    assert extension["costUsd"] == job["usage"]["costUsd"] > 0
    assert extension["model"] == {
        "provider": "simulated",
        "name": "sim-small",
        "version": "sim-small-1",
    }
