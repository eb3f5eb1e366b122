"""A small client for /v2/graphql over HTTP and WebSocket, one API key per instance."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

from tests.api import Server

PATH = "/v2/graphql"

MONEY = "{ amount currency }"

JOB_FIELDS = """
  id task tier status output result phase attempts lastSeq requestId idempotencyKey
  params metadata
  securityFlags { rule path score }
  error { __typename code message retryable requestId retryAfterSeconds
          violations { path message } }
  usage { inputTokens outputTokens totalTokens cost MONEY }
  maxCost MONEY
  contract { apiVersion promptVersion model { provider name version } }
  createdAt startedAt finishedAt deadlineAt cancelRequestedAt cancelRequested
""".replace("MONEY", MONEY)

ERROR_FIELDS = """
    ... on V2Error { code message retryable requestId }
    ... on V2ServiceUnavailable { retryAfterSeconds resumeAfterSeq }
"""

SUBMIT_ERROR_FIELDS = """
    ... on V2InvalidInput { field violations { path message } }
    ... on V2IdempotencyKeyReused { jobId }
    ... on V2RateLimited { retryAfterSeconds limit windowSeconds }
    ... on V2CostLimitExceeded { cap MONEY spent MONEY reserved MONEY resetsAt }
    ... on V2ConcurrencyLimitExceeded { limit active }
    ... on V2PromptInjectionDetected { findings { rule path } }
""".replace("MONEY", MONEY)

SUBMIT = (
    """
mutation Submit($input: V2SubmitJobInput!) {
  submitJob(input: $input) {
    __typename
    ... on V2SubmitJobSuccess { deduplicated job { JOB_FIELDS } }
    ERROR_FIELDS
    SUBMIT_ERROR_FIELDS
  }
}""".replace("JOB_FIELDS", JOB_FIELDS)
    .replace("SUBMIT_ERROR_FIELDS", SUBMIT_ERROR_FIELDS)
    .replace("ERROR_FIELDS", ERROR_FIELDS)
)

JOB = """
query Job($id: ID!) {
  job(id: $id) {
    __typename
    ... on V2Job { JOB_FIELDS }
    ERROR_FIELDS
  }
}""".replace("JOB_FIELDS", JOB_FIELDS).replace("ERROR_FIELDS", ERROR_FIELDS)

JOBS = """
query Jobs($first: Int, $after: String, $last: Int, $before: String, $status: [V2JobStatus!]) {
  jobs(first: $first, after: $after, last: $last, before: $before, status: $status) {
    edges { cursor node { id status task createdAt } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

NODE = """
query Node($id: ID!) {
  node(id: $id) {
    __typename id
    ... on V2Job { status task contract { apiVersion } }
    ... on V2Task { name promptVersion outputSchema }
    ... on V2Viewer { name plan }
  }
}"""

CANCEL = """
mutation Cancel($id: ID!, $reason: String) {
  cancelJob(id: $id, reason: $reason) {
    __typename
    ... on V2CancelJobSuccess { job { JOB_FIELDS } }
    ERROR_FIELDS
    ... on V2JobNotCancellable { status }
  }
}""".replace("JOB_FIELDS", JOB_FIELDS).replace("ERROR_FIELDS", ERROR_FIELDS)

EVENTS = """
subscription Events($id: ID!, $afterSeq: Int) {
  jobEvents(id: $id, afterSeq: $afterSeq) {
    __typename
    ... on V2JobEvent { jobId seq at }
    ... on V2JobStarted { attempt }
    ... on V2OutputDelta { text }
    ... on V2Progress { phase message }
    ... on V2Heartbeat { jobId at status phase elapsedMs outputTokens cost MONEY }
    ... on V2JobFinished { durationMs usage { inputTokens outputTokens cost MONEY }
                           model { provider name version }
                           job { id status lastSeq usage { cost MONEY } } }
    ... on V2JobSucceeded { output result }
    ... on V2JobFailed { error { code message retryable retryAfterSeconds
                                 violations { path message } } }
    ... on V2JobCancelled { reason }
    ... on V2Error { code message retryable }
    ... on V2ServiceUnavailable { retryAfterSeconds resumeAfterSeq }
  }
}""".replace("MONEY", MONEY)

TERMINAL = {"V2JobSucceeded", "V2JobFailed", "V2JobCancelled"}
GRAPHQL_TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL
LEGACY_GRAPHQL_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL


class V2Api:
    """One caller (one API key) talking to a server's /v2/graphql."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key
        self.http = httpx.AsyncClient(
            base_url=server.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.http.post(
            PATH, json={"query": query, "variables": variables or {}}, **kwargs
        )

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.post(query, variables)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def submit(self, task: str, params: Any, **fields: Any) -> dict[str, Any]:
        data = await self.execute(SUBMIT, {"input": {"task": task, "params": params, **fields}})
        result: dict[str, Any] = data["submitJob"]
        return result

    async def submit_ok(self, task: str, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
        result = await self.submit(task, params, **fields)
        assert result["__typename"] == "V2SubmitJobSuccess", result
        job: dict[str, Any] = result["job"]
        return job

    async def job(self, global_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.execute(JOB, {"id": global_id}))["job"]
        return result

    async def jobs(self, **arguments: Any) -> dict[str, Any]:
        result: dict[str, Any] = (await self.execute(JOBS, arguments))["jobs"]
        return result

    async def node(self, global_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = (await self.execute(NODE, {"id": global_id}))["node"]
        return result

    async def cancel(self, global_id: str, reason: str | None = None) -> dict[str, Any]:
        data = await self.execute(CANCEL, {"id": global_id, "reason": reason})
        result: dict[str, Any] = data["cancelJob"]
        return result

    def ws(self, protocol: str = GRAPHQL_TRANSPORT_WS) -> Client:
        transport = WebsocketsTransport(
            url=f"ws://127.0.0.1:{self.server.port}{PATH}",
            init_payload={"Authorization": f"Bearer {self.key}"},
            subprotocols=[protocol],
        )
        return Client(transport=transport)

    async def events(
        self,
        global_id: str,
        after_seq: int | None = None,
        *,
        protocol: str = GRAPHQL_TRANSPORT_WS,
        timeout: float = 20,
    ) -> list[dict[str, Any]]:
        """Subscribe and collect every event until the stream completes."""
        collected: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout), self.ws(protocol) as session:
            async for item in session.subscribe(events_request(global_id, after_seq)):
                collected.append(item["jobEvents"])
        return collected

    async def wait_finished(self, global_id: str, timeout: float = 20) -> dict[str, Any]:
        """Follow the job's stream to its end, then read the job."""
        events = await self.events(global_id, timeout=timeout)
        assert events[-1]["__typename"] in TERMINAL, events[-1]
        return await self.job(global_id)


def events_request(global_id: str, after_seq: int | None = None) -> GraphQLRequest:
    return GraphQLRequest(EVENTS, variable_values={"id": global_id, "afterSeq": after_seq})


def stored(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with a seq (heartbeats dropped)."""
    return [e for e in events if e.get("seq") is not None]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["__typename"] == "V2OutputDelta")
