"""`GET /<version>/jobs/{id}/events` over real HTTP on every backend: a job's events as
Server-Sent Events, opened with the stream ticket of `eventsUrl` (as a browser's EventSource
does) or an Authorization header; the same events and ids as the GraphQL SSE transport,
`Last-Event-ID` resume, and tickets that grant nothing else."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from jobql.http.event_source import V1_EVENTS
from jobql.services.tickets import Claims, TicketSigner, events_path
from jobql.settings import Settings, TierLimits
from tests.api import Api, Server, serve
from tests.log_capture import all_logs, serve_logged

SECRET = "a secret every API process shares"
TERMINAL = {"V1JobSucceeded", "V1JobFailed", "V1JobCancelled"}
V1_JOB_EVENTS_URL = "query($id: ID!) { job(id: $id) { ... on V1Job { id eventsUrl } } }"
V2_SUBMIT = """
mutation($input: V2SubmitJobInput!) {
  submitJob(input: $input) { __typename ... on V2SubmitJobSuccess { job { id eventsUrl } } }
}"""


@dataclass(frozen=True)
class Sse:
    """One Server-Sent Event as a reader sees it."""

    event: str
    id: str | None
    data: str

    @property
    def data_only(self) -> object:
        """The payload without its extensions (the requestId differs per request)."""
        if not self.data:
            return None
        payload: dict[str, Any] = json.loads(self.data)
        return payload.get("data")

    @property
    def item(self) -> dict[str, Any]:
        """A `next` event's jobEvents item."""
        payload: dict[str, Any] = json.loads(self.data)
        assert "errors" not in payload, payload
        item: dict[str, Any] = next(iter(payload["data"].values()))
        return item


async def read_events(
    response: httpx.Response, stop_after: int | None = None
) -> AsyncIterator[Sse]:
    """The events of an SSE body (comments skipped); ``stop_after`` ids seen: leave."""
    fields: dict[str, list[str]] = {}
    seen = 0
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
            continue
        if not fields:
            continue
        event = Sse(
            fields.get("event", ["message"])[0],
            fields["id"][0] if "id" in fields else None,
            "\n".join(fields.get("data", [])),
        )
        fields = {}
        yield event
        seen += event.id is not None
        if stop_after is not None and seen >= stop_after:
            return


async def collect(
    http: httpx.AsyncClient,
    url: str,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> list[Sse]:
    async with http.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [e async for e in read_events(response, stop_after)]


def items(events: list[Sse]) -> list[dict[str, Any]]:
    return [e.item for e in events if e.event == "next"]


def assert_whole_stream(events: list[Sse], first_seq: int = 1) -> None:
    """Stored events in seq order from ``first_seq``, each with its seq as `id:`, one
    terminal event last, then `complete`."""
    nexts = [e for e in events if e.event == "next"]
    stored = [e for e in nexts if e.id is not None]
    seqs = [e.item["seq"] for e in stored]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), seqs
    assert [e.id for e in stored] == [str(s) for s in seqs]
    # Heartbeats (no seq) carry no id, so a reconnect never resumes from one.
    assert all(e.item["__typename"] == "V1Heartbeat" for e in nexts if e.id is None)
    assert [e.event for e in events][-1] == "complete"
    assert nexts[-1].item["__typename"] in TERMINAL
    assert sum(e.item["__typename"] in TERMINAL for e in nexts) == 1


@pytest.fixture
def ticket_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"stream_ticket_secret": SecretStr(SECRET)})


@pytest.fixture
async def server(ticket_settings: Settings) -> AsyncIterator[Server]:
    async with serve(ticket_settings) as running:
        yield running


@pytest.fixture
async def anonymous(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no key at all, as a browser's EventSource is."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client


async def events_url(api: Api, job_id: str) -> str:
    data = await api.execute(V1_JOB_EVENTS_URL, {"id": job_id})
    url: str = data["job"]["eventsUrl"]
    return url


def ticket_of(url: str) -> str:
    [ticket] = parse_qs(urlsplit(url).query)["ticket"]
    return ticket


async def test_the_events_url_streams_the_job_with_no_key(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    api = await server.client()
    job = await api.submit_ok("echo", {"topic": "event source"})
    url = await events_url(api, job["id"])
    assert url.startswith(f"/v1/jobs/{job['id']}/events?ticket=")

    events = await collect(anonymous, url)

    assert_whole_stream(events)
    final = items(events)[-1]
    assert final["__typename"] == "V1JobSucceeded"
    assert final["job"] == {"id": job["id"], "status": "SUCCEEDED", "cancelRequested": False}
    assert final["output"] == (await api.job(job["id"]))["output"]


async def test_the_same_events_and_ids_as_the_graphql_sse_transport(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    api = await server.client()
    job = await api.submit_ok("slow", {"topic": "two transports"})
    await api.wait_finished(job["id"])
    route = await collect(anonymous, await events_url(api, job["id"]))
    async with api.http.stream(
        "POST",
        "/v1/graphql",
        json={"query": V1_EVENTS, "variables": {"jobId": job["id"]}},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        graphql_sse = [e async for e in read_events(response)]
    assert_whole_stream(route)
    # The same bytes but each request's own requestId.
    assert [(e.event, e.id, e.data_only) for e in route] == [
        (e.event, e.id, e.data_only) for e in graphql_sse
    ]


async def test_last_event_id_resumes_after_that_seq(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    api = await server.client()
    job = await api.submit_ok("slow", {"topic": "resuming"})
    url = await events_url(api, job["id"])
    first = await collect(anonymous, url, stop_after=3)
    last_id = [e.id for e in first if e.id is not None][-1]
    assert last_id == "3"

    rest = await collect(anonymous, url, headers={"Last-Event-ID": last_id})

    assert_whole_stream(rest, first_seq=4)
    # `?after=` does the same for a new EventSource (which cannot set the header); the
    # header wins when both are sent, as on an EventSource's own reconnect.
    after = await collect(anonymous, f"{url}&after=3")
    assert [e.data_only for e in after] == [e.data_only for e in rest]
    both = await collect(anonymous, f"{url}&after=1", headers={"Last-Event-ID": "3"})
    assert [e.data_only for e in both] == [e.data_only for e in rest]
    refused = await anonymous.get(url, headers={"Last-Event-ID": "three"})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_an_authorization_header_instead_of_a_ticket(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    api = await server.client()
    job = await api.submit_ok("echo", {"topic": "curl"})
    path = events_path("v1", job["id"])
    events = await collect(api.http, path)
    assert_whole_stream(events)

    refused = await anonymous.get(path, headers={"Authorization": "Bearer jq_not-a-key"})
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/json")
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    # The header wins over a ticket sent with it.
    ticketed = await events_url(api, job["id"])
    both = await anonymous.get(ticketed, headers={"Authorization": "Bearer jq_not-a-key"})
    assert both.status_code == 401
    # Neither a key nor a ticket.
    bare = await anonymous.get(path)
    assert bare.status_code == 401
    assert "eventsUrl" in bare.json()["errors"][0]["message"]


async def refusal(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    assert response.status_code == 401, response.text
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    message: str = error["message"]
    return message


async def test_a_ticket_grants_only_its_job_while_it_is_good(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    alice = await server.client("alice")
    mine = await alice.submit_ok("echo", {"topic": "mine"})
    other = await alice.submit_ok("echo", {"topic": "other"})
    ticket = ticket_of(await events_url(alice, mine["id"]))

    # Another job of the same caller, another version, a tampered ticket: refused.
    assert "another job" in await refusal(
        anonymous, f"{events_path('v1', other['id'])}?ticket={ticket}"
    )
    assert "another job" in await refusal(
        anonymous, f"{events_path('v2', mine['id'])}?ticket={ticket}"
    )
    tampered = ticket[:-1] + ("A" if ticket[-1] != "A" else "B")
    assert "altered" in await refusal(
        anonymous, f"{events_path('v1', mine['id'])}?ticket={tampered}"
    )
    assert "Malformed" in await refusal(anonymous, f"{events_path('v1', mine['id'])}?ticket=x")
    # Signed with the server's secret but past its expiry: refused as expired.
    expires, principal, key, _ = ticket.split(".")
    expired = TicketSigner(SECRET.encode()).sign(
        "v1", mine["id"], Claims(principal, key, int(time.time()) - 1)
    )
    assert int(expires) > time.time() + 590  # the ticket handed out lives 10 minutes
    assert "expired" in await refusal(
        anonymous, f"{events_path('v1', mine['id'])}?ticket={expired}"
    )
    # The ticket is no key: the GraphQL endpoint does not take it.
    graphql = await anonymous.post(
        f"/v1/graphql?ticket={ticket}", json={"query": "{ viewer { id } }"}
    )
    assert graphql.status_code == 401
    # The good ticket still works.
    assert_whole_stream(
        await collect(anonymous, f"{events_path('v1', mine['id'])}?ticket={ticket}")
    )


async def test_another_callers_ticket_finds_nothing_of_yours(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    alice = await server.client("alice")
    mallory = await server.client("mallory")
    job = await alice.submit_ok("echo", {"topic": "private"})
    # No eventsUrl is handed out for a job one cannot see; a ticket for Mallory signed with
    # the server's own secret for Alice's job id still shows Mallory nothing.
    assert (await mallory.job(job["id"]))["__typename"] == "V1NotFound"
    caller = await server.services.keys.authenticate(mallory.key)
    assert caller is not None
    assert caller.key_id is not None
    claims = Claims(caller.id, caller.key_id, int(time.time()) + 60)
    ticket = TicketSigner(SECRET.encode()).sign("v1", job["id"], claims)
    events = await collect(anonymous, f"{events_path('v1', job['id'])}?ticket={ticket}")
    assert [e["__typename"] for e in items(events)] == ["V1NotFound"]
    assert events[-1].event == "complete"


async def test_revoking_the_key_ends_its_ticket_streams_and_voids_its_tickets(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    api = await server.client("revoked")
    job = await api.submit_ok("hang", {"topic": "revoked"})  # runs until cancelled
    url = await events_url(api, job["id"])
    async with anonymous.stream("GET", url) as response:
        assert response.status_code == 200
        events = read_events(response)
        first = await anext(events)
        assert first.item["__typename"] == "V1JobQueued"
        assert await server.services.keys.revoke(api.key[:10]) == 1
        rest = [e async for e in events]
    # The open stream ends: an error, then complete.
    assert rest[-1].event == "complete"
    errors = [json.loads(e.data) for e in rest if e.event == "next" and e.id is None]
    assert {
        "errors": [{"message": "API key revoked", "extensions": {"code": "UNAUTHENTICATED"}}]
    } in errors
    assert "revoked" in await refusal(anonymous, url)


async def test_v2_jobs_have_their_own_events_url(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    api = await server.client()
    response = await api.http.post(
        "/v2/graphql",
        json={
            "query": V2_SUBMIT,
            "variables": {"input": {"task": "echo", "params": {"topic": "v2"}}},
        },
    )
    submitted = response.json()["data"]["submitJob"]
    assert submitted["__typename"] == "V2SubmitJobSuccess", submitted
    job = submitted["job"]
    assert job["eventsUrl"].startswith(f"{events_path('v2', job['id'])}?ticket=")

    events = await collect(anonymous, job["eventsUrl"])
    nexts = items(events)
    stored = [e for e in events if e.id is not None]
    assert [e.item["seq"] for e in stored] == list(range(1, len(stored) + 1))
    assert nexts[-1]["__typename"] == "V2JobSucceeded"
    assert nexts[-1]["job"]["id"] == job["id"]
    assert events[-1].event == "complete"
    # A v1 ticket path for a v2 job id finds no v1 job.
    v1 = await anonymous.get(events_path("v1", job["id"]), headers=api.http.headers)
    assert v1.status_code == 200
    assert "V1NotFound" in v1.text


async def test_without_a_secret_a_postgresql_server_issues_no_tickets(
    settings: Settings,
) -> None:
    """A per-process secret would fail tickets handed out by another process: without
    JOBQL_STREAM_TICKET_SECRET only a single-process (SQLite) server issues tickets."""
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "no secret"})
        body = (await api.post(V1_JOB_EVENTS_URL, {"id": job["id"]})).json()
        if settings.database_url.startswith("sqlite"):
            assert "errors" not in body, body
            assert body["data"]["job"]["eventsUrl"].startswith(events_path("v1", job["id"]))
        else:
            # The field is null and says why; the rest of the job is still answered.
            [error] = body["errors"]
            assert error["extensions"]["code"] == "STREAM_TICKETS_UNAVAILABLE"
            assert "JOBQL_STREAM_TICKET_SECRET" in error["message"]
            assert error["path"] == ["job", "eventsUrl"]
            assert body["data"]["job"]["eventsUrl"] is None
            assert body["data"]["job"]["id"] == job["id"]
        # The header still opens the stream.
        assert_whole_stream(await collect(api.http, events_path("v1", job["id"])))


async def test_tickets_reach_no_log_line(ticket_settings: Settings) -> None:
    """Access lines carry the path without the query string: a ticket, like a key, is in
    no log line (unless JOBQL_LOG_CONTENT=true, which logs query strings)."""
    with all_logs() as logs:
        async with serve_logged(ticket_settings) as server:
            api = await server.client()
            job = await api.submit_ok("echo", {"topic": "logs"})
            url = await events_url(api, job["id"])
            async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as anonymous:
                assert_whole_stream(await collect(anonymous, url))
                expired = url.replace("ticket=", "ticket=1")  # malformed: refused, 401
                assert (await anonymous.get(expired)).status_code == 401
    ticket = ticket_of(url)
    mac = ticket.rsplit(".", 1)[1]
    # The server's lines: this test's own HTTP client (httpx, httpcore) logs its URLs.
    server_lines = [
        line for line in logs.lines() if not line["logger"].startswith(("httpx", "httpcore"))
    ]
    assert server_lines
    assert not [line for line in server_lines if mac in json.dumps(line)]
    assert f"GET /v1/jobs/{job['id']}/events HTTP/1.1" in logs.text


async def test_ticket_streams_count_against_the_keys_budgets(ticket_settings: Settings) -> None:
    """A stream opened with a ticket is one of its key's connections, as with the header."""
    settings = ticket_settings.model_copy(
        update={"tier_limits": {"standard": TierLimits(max_ws_connections=1)}}
    )
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("hang", {"topic": "budgets"})
        url = await events_url(api, job["id"])
        async with (
            httpx.AsyncClient(base_url=server.http_url, timeout=30) as anonymous,
            anonymous.stream("GET", url) as first,
        ):
            assert first.status_code == 200
            # Held until the end: a dropped generator would close the response.
            opened = read_events(first)
            assert (await anext(opened)).item["__typename"] == "V1JobQueued"
            second = await anonymous.get(url)
            assert second.status_code == 429
            assert second.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_CONNECTIONS"
            assert "retry-after" in second.headers
            by_header = await api.http.get(events_path("v1", job["id"]))
            assert by_header.status_code == 429
            # The first stream is still open.
            assert (await anext(opened)).event == "next"
