"""gql, the Python GraphQL client, against a live jobql: mutations over HTTP (httpx and
aiohttp transports), jobEvents over WebSocket on both protocols (graphql-transport-ws and
the legacy graphql-ws), resuming with `after`, cancelling, and what a bad key looks like.
docs/clients.md quotes this file."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import (
    TransportConnectionFailed,
    TransportQueryError,
    TransportServerError,
)
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosedError

from tests.api import TERMINAL, Server

SUBMIT = """
mutation Submit($input: V1SubmitJobInput!) {
  submitJob(input: $input) {
    __typename
    ... on V1SubmitJobSuccess { job { id status cancelRequested } }
    ... on V1Error { code message retryable }
  }
}"""

CANCEL = """
mutation Cancel($id: ID!, $reason: String) {
  cancelJob(id: $id, reason: $reason) {
    __typename
    ... on V1CancelJobSuccess { job { id status cancelRequested } }
    ... on V1Error { code message }
  }
}"""

EVENTS = """
subscription Events($jobId: ID!, $after: Int) {
  jobEvents(jobId: $jobId, after: $after) {
    __typename
    ... on V1JobEvent { seq }
    ... on V1OutputDelta { text }
    ... on V1JobFinished { costUsd job { id status cancelRequested } }
    ... on V1JobCancelled { reason }
    ... on V1Error { code message }
  }
}"""

PROTOCOLS = [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL]
HTTP_TRANSPORTS = [HTTPXAsyncTransport, AIOHTTPTransport]
BAD_KEY_MESSAGE = "Missing or invalid API key: send `Authorization: Bearer <key>`."


def http_client(server: Server, key: str, transport: type[Any] = HTTPXAsyncTransport) -> Client:
    return Client(
        transport=transport(
            url=f"{server.http_url}/v1/graphql", headers={"Authorization": f"Bearer {key}"}
        )
    )


def ws_client(server: Server, key: str, protocol: str) -> Client:
    # graphql-transport-ws: WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL;
    # legacy graphql-ws (subscriptions only): WebsocketsTransport.APOLLO_SUBPROTOCOL.
    return Client(
        transport=WebsocketsTransport(
            url=server.ws_url,
            init_payload={"Authorization": f"Bearer {key}"},
            subprotocols=[protocol],
        )
    )


def events(job_id: str, after: int | None = None) -> GraphQLRequest:
    return GraphQLRequest(EVENTS, variable_values={"jobId": job_id, "after": after})


def submit_request(task: str, input: dict[str, Any]) -> GraphQLRequest:
    return GraphQLRequest(SUBMIT, variable_values={"input": {"task": task, "input": input}})


def cancel_request(job_id: str, reason: str) -> GraphQLRequest:
    return GraphQLRequest(CANCEL, variable_values={"id": job_id, "reason": reason})


async def submit(server: Server, key: str, task: str, input: dict[str, Any]) -> dict[str, Any]:
    async with http_client(server, key) as session:
        result = await session.execute(submit_request(task, input))
    answer: dict[str, Any] = result["submitJob"]
    assert answer["__typename"] == "V1SubmitJobSuccess", answer
    job: dict[str, Any] = answer["job"]
    return job


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if "seq" in e]


@pytest.fixture
async def key(server: Server) -> str:
    return await server.new_key("python")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_to_the_terminal_event(server: Server, key: str, protocol: str) -> None:
    job = await submit(server, key, "echo", {"topic": "gql"})
    assert job["status"] == "QUEUED"
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20), ws_client(server, key, protocol) as session:
        async for item in session.subscribe(events(job["id"])):
            seen.append(item["jobEvents"])
    assert seqs(seen) == list(range(1, len(seqs(seen)) + 1))
    assert [e["__typename"] in TERMINAL for e in seen].count(True) == 1
    assert seen[-1]["__typename"] == "V1JobSucceeded"
    assert seen[-1]["job"] == {"id": job["id"], "status": "SUCCEEDED", "cancelRequested": False}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_resume_after_the_last_seq(server: Server, key: str, protocol: str) -> None:
    job = await submit(server, key, "slow", {"topic": "resuming"})
    first: list[dict[str, Any]] = []
    async with asyncio.timeout(20), ws_client(server, key, protocol) as session:
        async for item in session.subscribe(events(job["id"])):
            first.append(item["jobEvents"])
            if sum(e["__typename"] == "V1OutputDelta" for e in first) == 3:
                break  # as if the connection dropped
    last_seq = seqs(first)[-1]
    rest: list[dict[str, Any]] = []
    async with asyncio.timeout(20), ws_client(server, key, protocol) as session:
        async for item in session.subscribe(events(job["id"], after=last_seq)):
            rest.append(item["jobEvents"])
    assert seqs(rest)[0] == last_seq + 1
    assert seqs(first) + seqs(rest) == list(range(1, seqs(rest)[-1] + 1))
    assert rest[-1]["__typename"] == "V1JobSucceeded"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cancel_a_running_job(server: Server, key: str, protocol: str) -> None:
    job = await submit(server, key, "hang", {"topic": "cancelling"})
    seen: list[dict[str, Any]] = []
    cancelled: dict[str, Any] = {}
    async with (
        asyncio.timeout(20),
        ws_client(server, key, protocol) as stream,
        http_client(server, key) as http,
    ):
        async for item in stream.subscribe(events(job["id"])):
            seen.append(item["jobEvents"])
            if seen[-1]["__typename"] == "V1Progress" and not cancelled:  # the model is working
                result = await http.execute(cancel_request(job["id"], "user"))
                cancelled = result["cancelJob"]
    assert cancelled == {
        "__typename": "V1CancelJobSuccess",
        "job": {"id": job["id"], "status": "RUNNING", "cancelRequested": True},
    }
    assert seen[-1]["__typename"] == "V1JobCancelled"
    assert seen[-1]["reason"] == "user"
    assert seen[-1]["job"] == {"id": job["id"], "status": "CANCELLED", "cancelRequested": True}


@pytest.mark.parametrize("transport", HTTP_TRANSPORTS, ids=lambda t: t.__name__)
async def test_http_transports_submit(server: Server, key: str, transport: type[Any]) -> None:
    async with http_client(server, key, transport) as session:
        result = await session.execute(submit_request("echo", {"topic": "http"}))
    assert result["submitJob"]["__typename"] == "V1SubmitJobSuccess"
    assert result["submitJob"]["job"]["status"] == "QUEUED"


@pytest.mark.parametrize("transport", HTTP_TRANSPORTS, ids=lambda t: t.__name__)
async def test_bad_key_over_http(server: Server, transport: type[Any]) -> None:
    with pytest.raises(TransportQueryError) as refused:
        async with http_client(server, "jq_not-a-key", transport) as session:
            await session.execute(submit_request("echo", {"topic": "x"}))
    assert refused.value.errors is not None
    assert refused.value.errors[0]["message"] == BAD_KEY_MESSAGE
    assert refused.value.errors[0]["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_bad_key_over_graphql_transport_ws(server: Server) -> None:
    with pytest.raises(TransportConnectionFailed) as refused:
        async with ws_client(
            server, "jq_not-a-key", WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL
        ) as session:
            await anext(aiter(session.subscribe(events("any"))))
    closed = refused.value.__cause__
    assert isinstance(closed, ConnectionClosedError)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4403, "invalid or missing API key")


async def test_bad_key_over_legacy_graphql_ws(server: Server) -> None:
    with pytest.raises(TransportServerError) as refused:
        async with ws_client(
            server, "jq_not-a-key", WebsocketsTransport.APOLLO_SUBPROTOCOL
        ) as session:
            await anext(aiter(session.subscribe(events("any"))))
    assert str(refused.value) == "Server error: '{'message': 'Missing or invalid API key.'}'"
