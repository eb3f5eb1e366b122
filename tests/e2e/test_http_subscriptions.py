"""Subscriptions over plain HTTP with Apollo's multipart protocol (`Accept: multipart/mixed;
subscriptionSpec=1.0`), against a real server on every backend: the same events, auth,
budgets and refusals as over the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import pytest

from jobql.settings import Settings, TierLimits
from tests.api import EVENTS, TERMINAL, Api, Server, stored, text_of
from tests.e2e.v2.client import EVENTS as V2_EVENTS
from tests.e2e.v2.conftest import v2_client
from tests.faults.servers import wait_until
from tests.log_capture import all_logs, serve_logged

MULTIPART = "multipart/mixed;subscriptionSpec=1.0,application/json"
DELIMITER = b"\r\n--graphql"
GUARD = 20.0


class Parts:
    """The JSON parts of one multipart subscription response, as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.ended = False  # the closing delimiter arrived
        self._buffer = b""
        self._parts = self._parse()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._parts

    async def aclose(self) -> None:
        await self._parts.aclose()

    async def _parse(self) -> AsyncGenerator[dict[str, Any], None]:
        async for chunk in self.response.aiter_bytes():
            self._buffer += chunk
            while (at := self._buffer.find(DELIMITER)) >= 0:
                part, self._buffer = self._buffer[:at], self._buffer[at + len(DELIMITER) :]
                if part.strip():
                    _, _, body = part.partition(b"\r\n\r\n")
                    yield json.loads(body)
        self.ended = self._buffer == b"--\r\n"

    async def payloads(self, field: str = "jobEvents") -> list[dict[str, Any]]:
        """Every result until the response ends (keepalive parts skipped)."""
        return [p["payload"]["data"][field] async for p in self if "payload" in p]


@contextlib.asynccontextmanager
async def subscribe(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    *,
    path: str = "/v1/graphql",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Parts]:
    async with (
        asyncio.timeout(GUARD),
        client.stream(
            "POST",
            path,
            json={"query": query, "variables": variables},
            headers={"Accept": MULTIPART, **(headers or {})},
        ) as response,
    ):
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("multipart/mixed")
        assert 'boundary="graphql"' in response.headers["content-type"]
        parts = Parts(response)
        try:
            yield parts
        finally:
            await parts.aclose()


async def test_a_job_streams_every_event_once_in_order_then_the_response_ends(api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "multipart"})
    async with subscribe(api.http, EVENTS, {"id": job["id"]}) as parts:
        events = await parts.payloads()
        assert parts.ended
    log = stored(events)
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    assert log[-1]["__typename"] == "V1JobSucceeded"
    assert events[-1] == log[-1]
    # The same log as over the WebSocket.
    assert stored(await api.events(job["id"])) == log


async def test_a_dropped_response_resumes_with_after(api: Api) -> None:
    job = await api.submit_ok("slow", {"topic": "resume"})
    first: list[dict[str, Any]] = []
    async with subscribe(api.http, EVENTS, {"id": job["id"]}) as parts:
        async for part in parts:
            if "payload" in part and part["payload"]["data"]["jobEvents"].get("seq"):
                first.append(part["payload"]["data"]["jobEvents"])
                if len(first) == 3:
                    break  # the client drops the response mid-stream
    after = first[-1]["seq"]
    async with subscribe(api.http, EVENTS, {"id": job["id"], "after": after}) as parts:
        rest = stored(await parts.payloads())
    assert [e["seq"] for e in first + rest] == list(range(1, len(first) + len(rest) + 1))
    assert rest[-1]["__typename"] in TERMINAL


async def test_heartbeats_keep_an_idle_job_open(api: Api) -> None:
    job = await api.submit_ok("hang", {"topic": "idle"})
    beats: list[dict[str, Any]] = []
    async with subscribe(api.http, EVENTS, {"id": job["id"]}) as parts:
        async for part in parts:
            item = part.get("payload", {}).get("data", {}).get("jobEvents", {})
            if item.get("__typename") == "V1Heartbeat":
                beats.append(item)
                if len(beats) == 2:
                    break
    assert {b["jobId"] for b in beats} == {job["id"]}
    assert beats[1]["elapsedMs"] >= beats[0]["elapsedMs"]


async def test_another_callers_job_is_not_found(server: Server, api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "mine"})
    mallory = await server.client("mallory")
    async with subscribe(mallory.http, EVENTS, {"id": job["id"]}) as parts:
        events = await parts.payloads()
        assert parts.ended
    assert [e["__typename"] for e in events] == ["V1NotFound"]


async def test_v2_job_events_and_run_job_stream_over_multipart(server: Server) -> None:
    v2 = await v2_client(server)
    try:
        job = await v2.submit_ok("echo", {"topic": "v2"})
        async with subscribe(v2.http, V2_EVENTS, {"id": job["id"]}, path="/v2/graphql") as p:
            events = await p.payloads()
        log = stored(events)
        assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
        assert log[-1]["__typename"] == "V2JobSucceeded"
        assert log == stored(await v2.events(job["id"]))

        run = "subscription($input: V2SubmitJobInput!) { runJob(input: $input) { __typename } }"
        variables = {"input": {"task": "echo", "params": {"topic": "run"}}}
        async with subscribe(v2.http, run, variables, path="/v2/graphql") as parts:
            kinds = [e["__typename"] for e in await parts.payloads("runJob")]
        assert kinds[0] == "V2RunJobAccepted"
        assert kinds[-1] == "V2JobSucceeded"
    finally:
        await v2.aclose()


@pytest.mark.parametrize("key", [None, "jq_not-a-real-key"])
async def test_no_key_or_a_bad_key_is_401_before_anything_runs(
    settings: Settings, key: str | None
) -> None:
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            api = await server.client()
            job = await api.submit_ok("echo", {"topic": "no key"})
            headers = {"Accept": MULTIPART}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            async with httpx.AsyncClient(base_url=server.http_url) as anonymous:
                response = await anonymous.post(
                    "/v1/graphql",
                    json={"query": EVENTS, "variables": {"id": job["id"]}},
                    headers=headers,
                )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"].startswith("Missing or invalid API key")
    assert logs.at_least(logging.WARNING) == []


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json", None])
async def test_a_subscription_that_cannot_stream_is_406_with_the_accept_values(
    api: Api, accept: str | None
) -> None:
    job = await api.submit_ok("echo", {"topic": "406"})
    headers = {} if accept is None else {"Accept": accept}
    response = await api.post(EVENTS, {"id": job["id"]}, headers=headers)
    assert response.status_code == 406
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "NOT_ACCEPTABLE"
    assert "text/event-stream" in error["message"]
    assert "subscriptionSpec=1.0" in error["message"]


async def test_a_query_with_the_multipart_accept_is_a_plain_answer(api: Api) -> None:
    response = await api.post("{ viewer { id } }", headers={"Accept": MULTIPART})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["data"]["viewer"]["id"]


async def test_a_subscription_that_does_not_validate_is_400(api: Api) -> None:
    response = await api.post(
        "subscription { jobEvents(jobId: 1) { nope } }", headers={"Accept": MULTIPART}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"]


CAPS = TierLimits(max_ws_connections=2, max_ws_subscriptions=3)


@pytest.fixture
def capped(settings: Settings) -> Settings:
    return settings.model_copy(update={"tier_limits": {"standard": CAPS}})


async def _first_part(parts: Parts) -> dict[str, Any]:
    async for part in parts:
        if "payload" in part:
            return part
    raise AssertionError("the stream ended before its first result")


async def test_streams_count_toward_the_keys_caps_and_leaving_releases_them(
    capped: Settings,
) -> None:
    from tests.api import serve

    async with serve(capped) as server:
        api = await server.client()
        job = await api.submit_ok("hang", {"topic": "budget"})
        variables = {"id": job["id"]}
        async with contextlib.AsyncExitStack() as open_streams:
            for _ in range(CAPS.max_ws_connections):
                parts = await open_streams.enter_async_context(
                    subscribe(api.http, EVENTS, variables)
                )
                await _first_part(parts)
            over = await api.post(EVENTS, variables, headers={"Accept": MULTIPART})
            assert over.status_code == 429
            assert int(over.headers["retry-after"]) > 0
            [error] = over.json()["errors"]
            assert error["extensions"]["code"] in ("TOO_MANY_CONNECTIONS", "TOO_MANY_SUBSCRIPTIONS")
            # Another caller has budgets of its own.
            bob = await server.client("bob")
            own = await bob.submit_ok("hang", {"topic": "bob"})
            async with subscribe(bob.http, EVENTS, {"id": own["id"]}) as parts:
                await _first_part(parts)
        # Both responses are closed: the budget is back.

        async def admitted() -> bool:
            async with api.http.stream(
                "POST",
                "/v1/graphql",
                json={"query": EVENTS, "variables": variables},
                headers={"Accept": MULTIPART},
            ) as response:
                return response.status_code == 200

        await wait_until(admitted, "the released budget", 5.0)
        await wait_until(_no_streams(server, api), "every stream released from the registry", 5.0)


def _no_streams(server: Server, api: Api) -> Any:
    async def check() -> bool:
        caller = await server.services.keys.authenticate(api.key, None)
        assert caller is not None
        views = _views(server)
        return all(view.connections.connections(caller.id) == 0 for view in views)

    return check


def _views(server: Server) -> list[Any]:
    from starlette.routing import Route

    return [
        route.endpoint.view
        for route in server.app.routes
        if isinstance(route, Route) and hasattr(route.endpoint, "view")
    ]


async def test_a_revoked_key_ends_its_open_streams(server: Server, api: Api) -> None:
    job = await api.submit_ok("hang", {"topic": "revoked"})
    async with subscribe(api.http, EVENTS, {"id": job["id"]}) as parts:
        await _first_part(parts)
        assert await server.services.keys.revoke(api.key[:10]) == 1
        last: dict[str, Any] = {}
        async for part in parts:
            last = part
        assert parts.ended
    assert last == {
        "payload": None,
        "errors": [{"message": "API key revoked", "extensions": {"code": "UNAUTHENTICATED"}}],
    }


async def test_run_job_over_http_cancels_the_job_when_the_response_is_closed(
    server: Server,
) -> None:
    v2 = await v2_client(server)
    try:
        run = """subscription($input: V2SubmitJobInput!, $detach: Boolean) {
          runJob(input: $input, detach: $detach) {
            __typename ... on V2RunJobAccepted { owned job { id } } } }"""
        ids: dict[bool, str] = {}
        for detach in (False, True):
            variables = {"input": {"task": "hang", "params": {"topic": "leave"}}, "detach": detach}
            async with subscribe(v2.http, run, variables, path="/v2/graphql") as parts:
                accepted = (await _first_part(parts))["payload"]["data"]["runJob"]
            assert accepted["__typename"] == "V2RunJobAccepted"
            assert accepted["owned"] is not detach
            ids[detach] = accepted["job"]["id"]

        async def cancelled() -> bool:
            return (await v2.job(ids[False]))["status"] == "CANCELLED"

        await wait_until(cancelled, "the owned job cancelled", 10.0)
        assert (await v2.job(ids[True]))["status"] in ("QUEUED", "RUNNING")
        await v2.cancel(ids[True])
    finally:
        await v2.aclose()


async def test_http_streams_log_no_content_and_no_errors(settings: Settings) -> None:
    """Streams to the end, dropped mid-stream, refused (406, 400, NotFound): no line at
    WARNING or above, and the job's content in no line at any level."""
    canary = f"canary-{uuid.uuid4().hex}"
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            api = await server.client()
            job = await api.submit_ok("echo", {"topic": canary})
            variables = {"id": job["id"]}
            async with subscribe(api.http, EVENTS, variables) as parts:
                events = await parts.payloads()
            output = text_of(events)
            assert len(output) > 40  # the content did flow
            sse_accept = {"Accept": "text/event-stream"}
            async with api.http.stream(
                "POST",
                "/v1/graphql",
                json={"query": EVENTS, "variables": variables},
                headers=sse_accept,
            ) as response:
                assert "V1JobSucceeded" in (await response.aread()).decode()
            hanging = await api.submit_ok("hang", {"topic": canary})
            async with subscribe(api.http, EVENTS, {"id": hanging["id"]}) as parts:
                await _first_part(parts)  # then the client drops the response
            assert (await api.post(EVENTS, variables)).status_code == 406
            bad_id = {**sse_accept, "Last-Event-ID": canary}
            assert (await api.post(EVENTS, variables, headers=bad_id)).status_code == 400
            mallory = await server.client("mallory")
            async with subscribe(mallory.http, EVENTS, variables) as parts:
                assert [e["__typename"] for e in await parts.payloads()] == ["V1NotFound"]
            await api.cancel(hanging["id"])
    assert logs.at_least(logging.WARNING) == []
    assert canary not in logs.text
    assert output not in logs.text


def _active_subscriptions(server: Server) -> float:
    """Job streams open in the server process (the jobql_active_subscriptions gauge)."""
    value = server.runtime.metrics.registry.get_sample_value("jobql_active_subscriptions")
    assert value is not None
    return value


@pytest.mark.parametrize("accept", [MULTIPART, "text/event-stream"])
async def test_a_client_that_leaves_releases_its_bus_subscription_at_once(
    server: Server, api: Api, accept: str
) -> None:
    job = await api.submit_ok("hang", {"topic": "leave"})
    async with api.http.stream(
        "POST",
        "/v1/graphql",
        json={"query": EVENTS, "variables": {"id": job["id"]}},
        headers={"Accept": accept},
    ) as response:
        assert response.status_code == 200
        chunks = response.aiter_bytes()  # held: a dropped iterator would close the response
        assert await anext(chunks)  # the stream is open and following the job
        assert _active_subscriptions(server) == 1

    async def released() -> bool:
        return _active_subscriptions(server) == 0

    await wait_until(released, "the job's stream closed", 2.0)
    await wait_until(_no_streams(server, api), "the stream released from the registry", 2.0)
    await api.cancel(job["id"])
