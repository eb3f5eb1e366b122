"""GraphQL over Server-Sent Events (graphql-sse's distinct connections mode) against a real
server on every backend: `next` events with the stored event's seq as their id, `complete`
at the end, `Last-Event-ID` to resume, the GET form, and the WebSocket's auth and budgets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from jobql.app import create_app
from jobql.providers.simulated import SimulatedProvider
from jobql.runtime import build_providers
from jobql.settings import Settings, TierLimits
from tests.api import EVENTS, TERMINAL, Api, Server, events_request, serve, stored
from tests.e2e.v2.client import EVENTS as V2_EVENTS
from tests.e2e.v2.conftest import v2_client
from tests.faults.servers import wait_until
from tests.log_capture import all_logs, serve_logged
from tests.uvicorn_server import uvicorn_serving

GUARD = 20.0


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    def result(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


class Stream:
    """The events of one SSE response as a reader parses them; comments counted apart.
    One parser per response, held until the response closes (iterations share it)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self._events = self._parse()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events

    async def next(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _parse(self) -> AsyncGenerator[Event, None]:
        fields: dict[str, list[str]] = {}
        async for line in self.response.aiter_lines():
            if line == "":
                if fields:
                    ids = fields.get("id")
                    yield Event(
                        fields.get("event", ["message"])[-1],
                        "\n".join(fields.get("data", [])),
                        ids[-1] if ids else None,
                    )
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))

    async def all(self) -> list[Event]:
        return [event async for event in self]


@contextlib.asynccontextmanager
async def sse(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    *,
    path: str = "/v1/graphql",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Stream]:
    headers = {"Accept": "text/event-stream", **(headers or {})}
    if method == "POST":
        request = client.build_request(
            "POST", path, json={"query": query, "variables": variables}, headers=headers
        )
    else:
        params = {"query": query, "variables": json.dumps(variables)}
        request = client.build_request("GET", path, params=params, headers=headers)
    async with asyncio.timeout(GUARD):
        response = await client.send(request, stream=True)
        stream = Stream(response)
        try:
            assert response.status_code == 200, (await response.aread()).decode()
            yield stream
        finally:
            await stream.aclose()
            await response.aclose()


def items(events: list[Event], field: str = "jobEvents") -> list[dict[str, Any]]:
    return [e.result()["data"][field] for e in events if e.event == "next"]


async def test_a_job_streams_as_next_events_with_seq_ids_then_complete(api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "sse"})
    async with sse(api.http, EVENTS, {"id": job["id"]}) as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        events = await stream.all()
    assert events[-1] == Event("complete", "", None)
    nexts = [e for e in events if e.event == "next"]
    assert len(nexts) == len(events) - 1
    log = stored(items(events))
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["__typename"] == "V1JobSucceeded"
    # Each stored event's seq is its id; a heartbeat has none.
    for event in nexts:
        item = event.result()["data"]["jobEvents"]
        assert event.id == (str(item["seq"]) if item.get("seq") else None)
    assert log == stored(await api.events(job["id"]))


async def test_last_event_id_resumes_right_after_it_whatever_after_says(api: Api) -> None:
    job = await api.submit_ok("slow", {"topic": "resume"})
    first: list[Event] = []
    async with sse(api.http, EVENTS, {"id": job["id"]}) as stream:
        async for event in stream:
            if event.id is not None:
                first.append(event)
                if len(first) == 3:
                    break  # the connection drops
    last_id = first[-1].id
    assert last_id is not None
    # `after: 0` would replay everything: Last-Event-ID wins.
    headers = {"Last-Event-ID": last_id}
    async with sse(api.http, EVENTS, {"id": job["id"], "after": 0}, headers=headers) as stream:
        rest = await stream.all()
    ids = [int(e.id) for e in first + rest if e.id is not None]
    assert ids == list(range(1, len(ids) + 1))
    assert items(rest)[-1]["__typename"] in TERMINAL
    assert rest[-1].event == "complete"


async def test_a_bad_last_event_id_is_400(api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "bad id"})
    response = await api.post(
        EVENTS,
        {"id": job["id"]},
        headers={"Accept": "text/event-stream", "Last-Event-ID": "seven"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_heartbeats_arrive_on_an_idle_job_without_ids(api: Api) -> None:
    job = await api.submit_ok("hang", {"topic": "idle"})
    beats: list[Event] = []
    async with sse(api.http, EVENTS, {"id": job["id"]}) as stream:
        async for event in stream:
            if event.result()["data"]["jobEvents"]["__typename"] == "V1Heartbeat":
                beats.append(event)
                if len(beats) == 2:
                    break
    assert [b.id for b in beats] == [None, None]


async def test_another_callers_job_is_not_found(server: Server, api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "mine"})
    mallory = await server.client("mallory")
    async with sse(mallory.http, EVENTS, {"id": job["id"]}) as stream:
        events = await stream.all()
    assert [i["__typename"] for i in items(events)] == ["V1NotFound"]
    assert events[-1].event == "complete"


async def test_the_get_form_streams_when_get_queries_are_on(api: Api) -> None:
    assert api.server.services.settings.allow_get_queries
    job = await api.submit_ok("echo", {"topic": "get"})
    async with sse(api.http, EVENTS, {"id": job["id"]}, method="GET") as stream:
        events = await stream.all()
    assert items(events)[-1]["__typename"] == "V1JobSucceeded"
    assert events[-1].event == "complete"
    # Without a streaming Accept, GET is as refused as POST.
    params = {"query": EVENTS, "variables": json.dumps({"id": job["id"]})}
    response = await api.http.get("/v1/graphql", params=params)
    assert response.status_code == 406


@pytest.fixture
def get_off(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_get_queries": False})


async def test_a_subscription_over_get_with_get_off_is_405(get_off: Settings) -> None:
    async with serve(get_off) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "get off"})
        params = {"query": EVENTS, "variables": json.dumps({"id": job["id"]})}
        for accept in (
            "text/event-stream",
            "application/json",
            "application/graphql-response+json",
            "multipart/mixed;subscriptionSpec=1.0,application/json",
        ):
            response = await api.http.get("/v1/graphql", params=params, headers={"Accept": accept})
            assert response.status_code == 405, accept
            assert response.headers["allow"] == "POST"
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_a_query_over_sse_is_one_next_then_complete(api: Api) -> None:
    async with sse(api.http, "{ viewer { id } }", {}) as stream:
        events = await stream.all()
    assert [e.event for e in events] == ["next", "complete"]
    assert events[0].result()["data"]["viewer"]["id"]


async def test_a_query_with_json_in_the_accept_too_stays_json(api: Api) -> None:
    accept = "application/graphql-response+json, application/json, text/event-stream"
    response = await api.post("{ viewer { id } }", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/graphql-response+json")


@pytest.mark.parametrize("key", [None, "jq_not-a-real-key"])
async def test_no_key_or_a_bad_key_is_401_and_logs_no_error(
    settings: Settings, key: str | None
) -> None:
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            api = await server.client()
            job = await api.submit_ok("echo", {"topic": "no key"})
            headers = {"Accept": "text/event-stream"}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            async with httpx.AsyncClient(base_url=server.http_url) as anonymous:
                response = await anonymous.post(
                    "/v1/graphql",
                    json={"query": EVENTS, "variables": {"id": job["id"]}},
                    headers=headers,
                )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert logs.at_least(logging.WARNING) == []


async def test_v2_job_events_over_sse_with_last_event_id(server: Server) -> None:
    v2 = await v2_client(server)
    try:
        job = await v2.submit_ok("echo", {"topic": "v2"})
        async with sse(v2.http, V2_EVENTS, {"id": job["id"]}, path="/v2/graphql") as stream:
            events = await stream.all()
        log = stored(items(events))
        assert log[-1]["__typename"] == "V2JobSucceeded"
        assert [e.id for e in events if e.id] == [str(e["seq"]) for e in log]
        headers = {"Last-Event-ID": str(log[1]["seq"])}
        async with sse(
            v2.http, V2_EVENTS, {"id": job["id"]}, path="/v2/graphql", headers=headers
        ) as stream:
            rest = stored(items(await stream.all()))
        assert rest == log[2:]
    finally:
        await v2.aclose()


RUN = """subscription($input: V2SubmitJobInput!, $detach: Boolean) {
  runJob(input: $input, detach: $detach) {
    __typename
    ... on V2RunJobAccepted { owned job { id } }
    ... on V2JobEvent { seq }
  }
}"""


async def test_run_job_over_sse_streams_to_the_end(server: Server) -> None:
    v2 = await v2_client(server)
    try:
        variables = {"input": {"task": "echo", "params": {"topic": "run"}}}
        async with sse(v2.http, RUN, variables, path="/v2/graphql") as stream:
            events = await stream.all()
        run = items(events, "runJob")
        assert run[0]["__typename"] == "V2RunJobAccepted"
        assert run[-1]["__typename"] == "V2JobSucceeded"
        assert [e.id for e in events if e.id] == [str(i["seq"]) for i in run if i.get("seq")]
    finally:
        await v2.aclose()


async def test_closing_a_run_job_stream_cancels_its_job_unless_detached(server: Server) -> None:
    v2 = await v2_client(server)
    try:
        ids: dict[bool, str] = {}
        for detach in (False, True):
            variables = {"input": {"task": "hang", "params": {"topic": "leave"}}, "detach": detach}
            async with sse(v2.http, RUN, variables, path="/v2/graphql") as stream:
                async for event in stream:
                    accepted = event.result()["data"]["runJob"]
                    break
            assert accepted["owned"] is not detach
            ids[detach] = accepted["job"]["id"]

        async def cancelled() -> bool:
            return (await v2.job(ids[False]))["status"] == "CANCELLED"

        await wait_until(cancelled, "the owned job cancelled", 10.0)
        assert (await v2.job(ids[True]))["status"] in ("QUEUED", "RUNNING")
        await v2.cancel(ids[True])
    finally:
        await v2.aclose()


CAPS = TierLimits(max_ws_connections=3, max_ws_subscriptions=2)


@pytest.fixture
def capped(settings: Settings) -> Settings:
    return settings.model_copy(update={"tier_limits": {"standard": CAPS}})


async def test_sse_streams_and_websocket_subscriptions_share_the_caps(capped: Settings) -> None:
    async with serve(capped) as server:
        api = await server.client()
        job = await api.submit_ok("hang", {"topic": "budget"})
        variables = {"id": job["id"]}
        async with contextlib.AsyncExitStack() as open_streams:
            for _ in range(CAPS.max_ws_subscriptions):
                stream = await open_streams.enter_async_context(sse(api.http, EVENTS, variables))
                await stream.next()
            over = await api.post(EVENTS, variables, headers={"Accept": "text/event-stream"})
            assert over.status_code == 429
            assert int(over.headers["retry-after"]) > 0
            [error] = over.json()["errors"]
            assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            # The WebSocket counts the HTTP streams too.
            async with api.ws() as session:
                with pytest.raises(Exception, match="Too many subscriptions"):
                    await _first_item(session, job["id"])
        # Closed: admitted again.

        async def admitted() -> bool:
            response = await api.http.send(
                api.http.build_request(
                    "POST",
                    "/v1/graphql",
                    json={"query": EVENTS, "variables": variables},
                    headers={"Accept": "text/event-stream"},
                ),
                stream=True,
            )
            await response.aclose()
            return response.status_code == 200

        await wait_until(admitted, "the released budget", 5.0)


async def _first_item(session: Any, job_id: str) -> dict[str, Any]:
    async for item in session.subscribe(events_request(job_id)):
        result: dict[str, Any] = item
        return result
    raise AssertionError("the subscription ended without an item")


async def test_a_revoked_key_ends_its_sse_stream(server: Server, api: Api) -> None:
    job = await api.submit_ok("hang", {"topic": "revoked"})
    async with sse(api.http, EVENTS, {"id": job["id"]}) as stream:
        await stream.next()
        assert await server.services.keys.revoke(api.key[:10]) == 1
        rest = await stream.all()
    assert rest[-1] == Event("complete", "", None)
    error = rest[-2].result()["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_shutdown_ends_an_open_stream_with_a_resumable_error(settings: Settings) -> None:
    """Past the server's graceful timeout an open stream ends cleanly: a retryable
    SERVICE_UNAVAILABLE naming the seq to resume after, then `complete`."""
    provider = SimulatedProvider()
    app = create_app(settings, providers=build_providers(settings, simulated=provider))
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def run() -> None:
        async with uvicorn_serving(
            app, ws="websockets-sansio", timeout_graceful_shutdown=0.5
        ) as port:
            ready.set_result(port)
            await stop.wait()

    running = asyncio.create_task(run())
    server = Server(app, await ready, provider)
    api = await server.client()
    try:
        job = await api.submit_ok("stall", {"topic": "shutdown"})
        async with sse(api.http, EVENTS, {"id": job["id"]}) as stream:
            seen: list[Event] = []
            async for event in stream:
                seen.append(event)
                if event.id is not None:
                    break
            stop.set()
            rest = await stream.all()
        await running
    finally:
        await api.aclose()
    ids = [int(e.id) for e in seen + rest if e.id is not None]
    assert rest[-1] == Event("complete", "", None)
    [error] = rest[-2].result()["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["retryable"] is True
    assert error["extensions"]["resumeAfter"] == ids[-1]
