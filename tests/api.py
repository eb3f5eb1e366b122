"""A real uvicorn server around create_app, and a small client speaking HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import update
from starlette.applications import Starlette

from jobql.app import create_app
from jobql.models import Job
from jobql.providers.simulated import SimulatedProvider
from jobql.runtime import Runtime, build_providers
from jobql.services.container import Services
from jobql.settings import Settings
from tests.uvicorn_server import uvicorn_serving

JOB_FIELDS = """
  id task tier status output result phase attempts lastSeq requestId idempotencyKey
  securityFlags { rule path score }
  metadata input
  error { __typename code message retryable requestId
          ... on V1ProviderRateLimited { retryAfterSeconds }
          ... on V1OutputSchemaMismatch { violations { path message } } }
  usage { inputTokens outputTokens totalTokens costUsd }
  contract { apiVersion promptVersion model { provider name version } }
  createdAt startedAt finishedAt deadlineAt cancelRequestedAt
"""

SUBMIT = """
mutation Submit($input: V1SubmitJobInput!, $key: String) {
  submitJob(input: $input, idempotencyKey: $key) {
    __typename
    ... on V1SubmitJobSuccess { deduplicated job { JOB_FIELDS } }
    ... on V1Error { code message retryable requestId }
    ... on V1InvalidInput { field violations { path message } }
    ... on V1IdempotencyKeyReused { jobId }
    ... on V1RateLimited { retryAfterSeconds limit windowSeconds }
    ... on V1CostLimitExceeded { capUsd spentUsd reservedUsd resetsAt }
    ... on V1ConcurrencyLimitExceeded { limit active }
    ... on V1PromptInjectionDetected { findings { rule path } }
    ... on V1ServiceUnavailable { retryAfterSeconds }
  }
}""".replace("JOB_FIELDS", JOB_FIELDS)

JOB = """
query Job($id: ID!) {
  job(id: $id) {
    __typename
    ... on V1Job { JOB_FIELDS }
    ... on V1Error { code message }
    ... on V1ServiceUnavailable { retryable retryAfterSeconds }
  }
}""".replace("JOB_FIELDS", JOB_FIELDS)

CANCEL = """
mutation Cancel($id: ID!, $reason: String) {
  cancelJob(id: $id, reason: $reason) {
    __typename
    ... on V1CancelJobSuccess { job { JOB_FIELDS } }
    ... on V1Error { code message retryable }
    ... on V1JobNotCancellable { status }
    ... on V1ServiceUnavailable { retryAfterSeconds }
  }
}""".replace("JOB_FIELDS", JOB_FIELDS)

EVENTS = """
subscription Events($id: ID!, $after: Int) {
  jobEvents(jobId: $id, after: $after) {
    __typename
    ... on V1JobEvent { jobId seq at }
    ... on V1JobStarted { attempt }
    ... on V1OutputDelta { text }
    ... on V1Progress { phase message }
    ... on V1Heartbeat { jobId at status currentPhase elapsedMs outputTokens costUsd }
    ... on V1JobFinished { costUsd durationMs usage { inputTokens outputTokens costUsd }
                           model { provider name version } }
    ... on V1JobSucceeded { output result }
    ... on V1JobFailed { error { __typename code message retryable
                                 ... on V1ProviderRateLimited { retryAfterSeconds } } }
    ... on V1JobCancelled { reason }
    ... on V1NotFound { code message }
    ... on V1ServiceUnavailable { code message retryable retryAfterSeconds resumeAfter }
  }
}"""

TERMINAL = {"V1JobSucceeded", "V1JobFailed", "V1JobCancelled"}
GRAPHQL_TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL
LEGACY_GRAPHQL_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL


@dataclass
class Server:
    app: Starlette
    port: int
    provider: SimulatedProvider
    clients: list[Api] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/graphql"

    async def new_key(self, name: str = "tester") -> str:
        _, key = await self.services.keys.create(name)
        return key

    async def client(self, name: str = "tester") -> Api:
        """A caller with a new key; closed when the server stops, even if a test failed."""
        api = Api(self, await self.new_key(name))
        self.clients.append(api)
        return api

    async def update_job(self, job_id: str, **values: Any) -> None:
        """Change a job row behind the service's back (to stage lost signals or workers)."""
        async with self.runtime.sessions() as db, db.begin():
            await db.execute(update(Job).where(Job.id == job_id).values(**values))


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Server]:
    """Run the app under a real uvicorn on a free port, in this event loop."""
    provider = SimulatedProvider()
    app = create_app(settings, providers=build_providers(settings, simulated=provider))
    async with uvicorn_serving(app, ws="websockets-sansio") as port:
        running = Server(app, port, provider)
        try:
            yield running
        finally:
            for api in running.clients:
                await api.aclose()


class Api:
    """One caller (one API key) talking to a server."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key
        self.http = httpx.AsyncClient(
            base_url=server.http_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.http.post(
            "/v1/graphql", json={"query": query, "variables": variables or {}}, **kwargs
        )

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.post(query, variables)
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def submit(
        self, task: str, input: dict[str, Any], *, key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        data = await self.execute(
            SUBMIT, {"input": {"task": task, "input": input, **fields}, "key": key}
        )
        result: dict[str, Any] = data["submitJob"]
        return result

    async def submit_ok(self, task: str, input: dict[str, Any], **fields: Any) -> dict[str, Any]:
        result = await self.submit(task, input, **fields)
        assert result["__typename"] == "V1SubmitJobSuccess", result
        job: dict[str, Any] = result["job"]
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.execute(JOB, {"id": job_id}))["job"]
        return result

    async def cancel(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = (await self.execute(CANCEL, {"id": job_id, "reason": reason}))[
            "cancelJob"
        ]
        return result

    def ws(self, protocol: str = GRAPHQL_TRANSPORT_WS, key: str | None = None) -> Client:
        transport = WebsocketsTransport(
            url=self.server.ws_url,
            init_payload={"Authorization": f"Bearer {key or self.key}"},
            subprotocols=[protocol],
        )
        return Client(transport=transport)

    async def events(
        self,
        job_id: str,
        after: int | None = None,
        *,
        protocol: str = GRAPHQL_TRANSPORT_WS,
        timeout: float = 20,
    ) -> list[dict[str, Any]]:
        """Subscribe and collect every event until the stream completes."""
        collected: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout), self.ws(protocol) as session:
            async for item in session.subscribe(events_request(job_id, after)):
                collected.append(item["jobEvents"])
        return collected

    async def wait_for_event(self, job_id: str, typename: str, timeout: float = 20) -> None:
        """Follow the job's stream until an event of this type arrives, then disconnect."""
        async with asyncio.timeout(timeout), self.ws() as session:
            async for item in session.subscribe(events_request(job_id)):
                if item["jobEvents"]["__typename"] == typename:
                    return
        raise AssertionError(f"the stream of {job_id} ended without {typename}")

    async def wait_finished(self, job_id: str, timeout: float = 20) -> dict[str, Any]:
        """Follow the job's stream to its end, then read the job."""
        await self.events(job_id, after=None, timeout=timeout)
        return await self.job(job_id)


def events_request(job_id: str, after: int | None = None) -> GraphQLRequest:
    return GraphQLRequest(EVENTS, variable_values={"id": job_id, "after": after})


def stored(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with a seq (heartbeats dropped)."""
    return [e for e in events if e.get("seq") is not None]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["__typename"] == "V1OutputDelta")
