"""What a normalized client cache (Apollo, urql graphcache: keyed by __typename and id)
needs to stay right: cancelJob says a cancel is pending, and every terminal event carries
the job in its final state, live and replayed, on both WebSocket protocols."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import GraphQLRequest

from jobql.settings import Settings
from tests.api import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, Api, Server, serve

REPO = Path(__file__).resolve().parents[2]
POSSIBLE_TYPES_FILE = REPO / "jobql" / "schema" / "v1" / "possible-types.json"

CANCEL = """
mutation Cancel($id: ID!) {
  cancelJob(id: $id) {
    __typename
    ... on V1CancelJobSuccess { job { id status cancelRequested cancelRequestedAt } }
  }
}"""

JOB = "query Job($id: ID!) { job(id: $id) { ... on V1Job { id status cancelRequested } } }"

# Only what a cache reads: the terminal event's job, by id.
EVENTS = """
subscription Events($id: ID!, $after: Int) {
  jobEvents(jobId: $id, after: $after) {
    __typename
    ... on V1JobEvent { seq }
    ... on V1JobFinished {
      job { __typename id status output lastSeq cancelRequested finishedAt
            usage { outputTokens costUsd } }
    }
  }
}"""


async def follow(
    api: Api, job_id: str, *, after: int | None = None, protocol: str = GRAPHQL_TRANSPORT_WS
) -> list[dict[str, Any]]:
    request = GraphQLRequest(EVENTS, variable_values={"id": job_id, "after": after})
    async with asyncio.timeout(20), api.ws(protocol) as session:
        return [item["jobEvents"] async for item in session.subscribe(request)]


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
async def test_the_terminal_event_carries_the_final_job(api: Api, protocol: str) -> None:
    submitted = await api.submit_ok("echo", {"topic": "cache"})
    assert submitted["status"] == "QUEUED"
    events = await follow(api, submitted["id"], protocol=protocol)
    final = events[-1]
    assert final["__typename"] == "V1JobSucceeded"
    read_back = await api.job(submitted["id"])
    # The stream's job is the job as the API reads it back: status, output, usage, cursor.
    assert final["job"] == {
        "__typename": "V1Job",
        "id": submitted["id"],
        "status": "SUCCEEDED",
        "output": read_back["output"],
        "lastSeq": final["seq"],
        "cancelRequested": False,
        "finishedAt": read_back["finishedAt"],
        "usage": {
            "outputTokens": read_back["usage"]["outputTokens"],
            "costUsd": read_back["usage"]["costUsd"],
        },
    }
    assert all("job" not in e for e in events[:-1])
    # Replayed later (the job long finished), the terminal event carries the same job.
    replay = await follow(api, submitted["id"], after=final["seq"] - 1, protocol=protocol)
    assert replay == [final]


async def test_cancel_answers_cancel_requested_and_the_stream_ends_with_the_cancelled_job(
    api: Api,
) -> None:
    submitted = await api.submit_ok("slow", {"topic": "cancel me"})
    request = GraphQLRequest(EVENTS, variable_values={"id": submitted["id"], "after": None})
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(20), api.ws() as session:
        stream = session.subscribe(request)
        async for item in stream:
            events.append(item["jobEvents"])
            if item["jobEvents"]["__typename"] == "V1OutputDelta":
                break
        answer = (await api.execute(CANCEL, {"id": submitted["id"]}))["cancelJob"]
        # The worker stops it moments later; the answer says a cancel is pending.
        assert answer["__typename"] == "V1CancelJobSuccess"
        assert answer["job"]["id"] == submitted["id"]
        assert answer["job"]["status"] in {"RUNNING", "CANCELLED"}
        assert answer["job"]["cancelRequested"] is True
        assert answer["job"]["cancelRequestedAt"] is not None
        events += [item["jobEvents"] async for item in stream]
    final = events[-1]
    assert final["__typename"] == "V1JobCancelled"
    assert final["job"]["status"] == "CANCELLED"
    assert final["job"]["cancelRequested"] is True
    assert final["job"]["lastSeq"] == final["seq"]
    assert (await api.execute(JOB, {"id": submitted["id"]}))["job"] == {
        "id": submitted["id"],
        "status": "CANCELLED",
        "cancelRequested": True,
    }


async def test_a_queued_job_cancelled_at_once_says_a_cancel_was_asked_for(
    settings: Settings,
) -> None:
    async with serve(settings.model_copy(update={"inline_worker": False})) as server:
        api = await server.client()
        submitted = await api.submit_ok("echo", {"topic": "never runs"})
        answer = (await api.execute(CANCEL, {"id": submitted["id"]}))["cancelJob"]
        await api.aclose()
    assert answer["job"]["status"] == "CANCELLED"
    assert answer["job"]["cancelRequested"] is True


async def test_a_job_nobody_cancelled_says_so(api: Api) -> None:
    submitted = await api.submit_ok("classify", {"text": "fine"}, wait=10)
    assert submitted["status"] == "SUCCEEDED"
    assert (await api.execute(JOB, {"id": submitted["id"]}))["job"]["cancelRequested"] is False


async def test_possible_types_are_served_as_checked_in(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/v1/possible-types.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    served = response.json()
    assert served == json.loads(POSSIBLE_TYPES_FILE.read_text("utf-8"))
    types = served["possibleTypes"]
    # What Apollo needs to match `... on V1JobEvent { seq }` and `... on V1Error { code }`.
    assert "V1OutputDelta" in types["V1JobEvent"]
    assert "V1Heartbeat" not in types["V1JobEvent"]
    assert set(types["V1JobFinished"]) == {"V1JobSucceeded", "V1JobFailed", "V1JobCancelled"}
    assert "V1NotFound" in types["V1Error"]
    assert "V1Heartbeat" in types["V1JobEventResult"]


@pytest.mark.parametrize(
    ("command", "checked_in"),
    [
        ("possible-types", POSSIBLE_TYPES_FILE),
        ("print", POSSIBLE_TYPES_FILE.parent / "schema.graphql"),
    ],
)
def test_the_schema_commands_print_the_checked_in_files(command: str, checked_in: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "jobql.cli", "schema", command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert printed.stdout == checked_in.read_text("utf-8")
