"""The curl commands of docs/clients.md, run as written against a live jobql."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.clients.conftest import Live
from tests.clients.node import run

SUBMIT = r"""
curl -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: application/graphql-response+json' \
  -w '\nHTTP %{http_code}\n' \
  -d '{"query": "mutation($input: V1SubmitJobInput!) { submitJob(input: $input) { __typename ... on V1SubmitJobSuccess { job { id status } } ... on V1Error { code message } } }",
       "variables": {"input": {"task": "echo", "input": {"topic": "curl"}, "wait": 10}}}'
"""  # noqa: E501

JOB = r"""
curl -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: application/graphql-response+json' \
  -w '\nHTTP %{http_code}\n' \
  -d '{"query": "query($id: ID!) { job(id: $id) { __typename ... on V1Job { id status cancelRequested output } ... on V1Error { code message } } }",
       "variables": {"id": "'"$JOB"'"}}'
"""  # noqa: E501


async def curl(command: str, **env: str) -> tuple[dict[str, Any], int]:
    """Run a documented command with bash; its JSON body and HTTP status."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed to run the documented curl commands")
    finished = await run("bash", "-c", command, env=env, timeout=30)
    assert finished.code == 0, finished.output
    body, status = finished.output.strip().rsplit("\n", 1)
    assert status.startswith("HTTP "), finished.output
    answer: dict[str, Any] = json.loads(body)
    return answer, int(status.removeprefix("HTTP "))


async def test_the_documented_curl_commands(live: Live) -> None:
    url = live.server.http_url
    submitted, status = await curl(SUBMIT, JOBQL_URL=url, KEY=live.key)
    assert status == 200
    assert submitted["data"]["submitJob"]["__typename"] == "V1SubmitJobSuccess"
    job = submitted["data"]["submitJob"]["job"]
    assert job["status"] == "SUCCEEDED"  # wait: 10 held the answer until the job finished

    read, status = await curl(JOB, JOBQL_URL=url, KEY=live.key, JOB=job["id"])
    assert status == 200
    assert read["data"]["job"]["status"] == "SUCCEEDED"
    assert read["data"]["job"]["cancelRequested"] is False

    refused, status = await curl(SUBMIT, JOBQL_URL=url, KEY="jq_not-a-key")
    assert status == 401
    assert refused["data"] is None
    [error] = refused["errors"]
    assert error["message"] == "Missing or invalid API key: send `Authorization: Bearer <key>`."
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}


# Streaming without WebSockets (docs/clients.md): `-N` prints each event as it arrives.
MULTIPART = r"""
curl -N -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: multipart/mixed;subscriptionSpec="1.0",application/json' \
  -d '{"query": "subscription($id: ID!, $after: Int) { jobEvents(jobId: $id, after: $after) { __typename ... on V1JobEvent { seq } ... on V1OutputDelta { text } ... on V1JobFinished { job { status } } ... on V1Error { code message } } }",
       "variables": {"id": "'"$JOB"'", "after": 0}}'
"""  # noqa: E501

SSE = r"""
curl -N -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: text/event-stream' \
  -d '{"query": "subscription($id: ID!) { jobEvents(jobId: $id) { __typename ... on V1JobEvent { seq } ... on V1OutputDelta { text } ... on V1JobFinished { job { status } } ... on V1Error { code message } } }",
       "variables": {"id": "'"$JOB"'"}}'
"""  # noqa: E501

SSE_RESUME = r"""
curl -N -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: text/event-stream' \
  -H "Last-Event-ID: $LAST" \
  -d '{"query": "subscription($id: ID!) { jobEvents(jobId: $id) { __typename ... on V1JobEvent { seq } ... on V1OutputDelta { text } ... on V1JobFinished { job { status } } ... on V1Error { code message } } }",
       "variables": {"id": "'"$JOB"'"}}'
"""  # noqa: E501

EVENTS_ROUTE = r"""
curl -N -s "$JOBQL_URL/v1/jobs/$JOB/events" -H "Authorization: Bearer $KEY"
"""

EVENTS_URL = r"""
curl -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -d '{"query": "query($id: ID!) { job(id: $id) { ... on V1Job { eventsUrl } } }", "variables": {"id": "'"$JOB"'"}}'
"""  # noqa: E501

EVENTS_TICKET = r"""
curl -N -s "$JOBQL_URL$EVENTS_URL"
"""


async def streamed(command: str, **env: str) -> str:
    """Run a documented streaming command with bash; what it printed."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed to run the documented curl commands")
    finished = await run("bash", "-c", command, env=env, timeout=30)
    assert finished.code == 0, finished.output
    return finished.output


def sse_items(output: str) -> list[tuple[str, str | None, dict[str, Any] | None]]:
    """(event, id, jobEvents item) for each Server-Sent Event; keepalive comments skipped."""
    found: list[tuple[str, str | None, dict[str, Any] | None]] = []
    for block in output.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) if ": " in line else (line, "") for line in lines)
        data = fields.get("data")
        item = next(iter(json.loads(data)["data"].values())) if data else None
        found.append((fields["event"], fields.get("id"), item))
    return found


def multipart_items(output: str) -> list[dict[str, Any]]:
    """The jobEvents item of each multipart part (keepalive parts `{}` skipped)."""
    assert output.rstrip().endswith("--graphql--"), output[-200:]
    found: list[dict[str, Any]] = []
    for part in output.split("--graphql")[1:]:
        _, _, body = part.partition("\r\n\r\n")
        if not body.strip():
            continue
        payload = json.loads(body)
        if payload:
            found.append(payload["payload"]["data"]["jobEvents"])
    return found


def assert_whole(events: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == list(range(first, first + len(seqs))), seqs
    assert events[-1]["__typename"] == "V1JobSucceeded"
    assert events[-1]["job"]["status"] == "SUCCEEDED"


async def test_the_documented_streaming_commands(live: Live) -> None:
    url = live.server.http_url
    submitted, _ = await curl(SUBMIT, JOBQL_URL=url, KEY=live.key)
    job = submitted["data"]["submitJob"]["job"]["id"]
    env = {"JOBQL_URL": url, "KEY": live.key, "JOB": job}

    parts = multipart_items(await streamed(MULTIPART, **env))
    assert_whole(parts)

    events = sse_items(await streamed(SSE, **env))
    assert [e for e, _, _ in events] == ["next"] * (len(events) - 1) + ["complete"]
    items = [item for _, _, item in events if item is not None]
    assert items == parts  # the same events as multipart
    assert [i for _, i, item in events if item is not None] == [str(e["seq"]) for e in items]

    resumed = sse_items(await streamed(SSE_RESUME, **env, LAST="2"))
    assert [item for _, _, item in resumed if item is not None] == items[2:]

    route = sse_items(await streamed(EVENTS_ROUTE, **env))
    assert [e for e, _, _ in route][-1] == "complete"
    assert_whole([item for _, _, item in route if item is not None])
    assert [i for _, i, item in route if item is not None] == [i for _, i, _ in events[:-1]]

    events_url = json.loads(await streamed(EVENTS_URL, **env))["data"]["job"]["eventsUrl"]
    assert events_url.startswith(f"/v1/jobs/{job}/events?ticket=")
    ticketed = sse_items(await streamed(EVENTS_TICKET, JOBQL_URL=url, EVENTS_URL=events_url))
    assert [(e, i) for e, i, _ in ticketed] == [(e, i) for e, i, _ in route]
