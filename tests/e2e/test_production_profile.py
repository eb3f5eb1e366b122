"""JOBQL_PROFILE=production: the twelve checks of a GraphQL security scanner find nothing,
costly queries are refused before they run, /metrics is protected, and the development key
exists only on the embedded SQLite default."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from jobql.app import create_app
from jobql.runtime import ConfigError
from jobql.settings import Settings
from tests.api import GRAPHQL_TRANSPORT_WS, JOB_FIELDS, Api, Server, serve

ORIGIN = "https://app.example"
TYPENAME = "query cop { __typename }"


def production(settings: Settings, **overrides: Any) -> Settings:
    """The test settings (only what they set on purpose) in the production profile."""
    explicit = {name: getattr(settings, name) for name in settings.model_fields_set}
    values = {**explicit, "profile": "production", "ws_allowed_origins": [ORIGIN], **overrides}
    return Settings(**values, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
async def prod(settings: Settings) -> AsyncIterator[Server]:
    async with serve(production(settings)) as running:
        yield running


@pytest.fixture
async def caller(prod: Server) -> Api:
    return await prod.client("mallory")


@pytest.fixture(params=["with a key", "anonymous"])
async def scanner(prod: Server, request: pytest.FixtureRequest) -> Api:
    """Who runs the scanner: a caller with a valid key, or anyone (no Authorization)."""
    api = await prod.client("mallory")
    if request.param == "anonymous":
        del api.http.headers["Authorization"]
    return api


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def answered(response: httpx.Response) -> bool:
    """What a scanner looks for: the operation ran and returned data."""
    body = body_of(response)
    if isinstance(body, list):
        return any(isinstance(item, dict) and item.get("data") for item in body)
    return isinstance(body, dict) and bool(body.get("data"))


def codes(response: httpx.Response) -> list[str | None]:
    body = body_of(response) or {}
    return [(e.get("extensions") or {}).get("code") for e in body.get("errors", [])]


def anonymous(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.http_url, timeout=30)


# The scanner's twelve checks, each as the scanner sends it, with a valid key and without.


async def test_alias_overloading(scanner: Api) -> None:
    query = "query cop { " + " ".join(f"alias{i}: __typename" for i in range(101)) + " }"
    response = await scanner.post(query)
    assert not answered(response)
    assert "aliases" in response.text


async def test_directive_overloading(scanner: Api) -> None:
    response = await scanner.post("query cop { __typename @aa@aa@aa@aa@aa@aa@aa@aa@aa@aa }")
    assert not answered(response)
    # One error for the whole document, not one per directive.
    assert codes(response) == ["TOO_MANY_DIRECTIVES"]


async def test_batching(scanner: Api) -> None:
    response = await scanner.http.post("/v1/graphql", json=[{"query": TYPENAME}] * 10)
    assert response.status_code == 400
    assert not answered(response)


async def test_field_suggestions(scanner: Api) -> None:
    for query in ("query cop { __schema { directive } }", "{ viewr { id } }", "{ job { idd } }"):
        response = await scanner.post(query)
        assert not answered(response)
        assert "Did you mean" not in response.text


async def test_circular_introspection(scanner: Api) -> None:
    query = (
        "query cop { __schema { types { fields { type { fields { type { fields "
        "{ type { fields { name } } } } } } } } } }"
    )
    response = await scanner.post(query)
    assert not answered(response)


async def test_get_queries(scanner: Api) -> None:
    response = await scanner.http.get("/v1/graphql", params={"query": TYPENAME})
    assert response.status_code in (400, 405)
    assert not answered(response)


async def test_get_mutations(scanner: Api) -> None:
    response = await scanner.http.get(
        "/v1/graphql", params={"query": 'mutation cop { cancelJob(id: "x") { __typename } }'}
    )
    assert response.status_code in (400, 405)
    assert not answered(response)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
)
async def test_form_encoded_post_csrf(scanner: Api, content_type: str) -> None:
    """A browser sends these content types cross-site without a preflight: refused."""
    if content_type == "text/plain":
        content = json.dumps({"query": TYPENAME}).encode()
    elif content_type == "multipart/form-data":
        content = (
            b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n'
            + TYPENAME.encode()
            + b"\r\n--b--\r\n"
        )
        content_type += "; boundary=b"
    else:
        content = f"query={TYPENAME}".encode()
    response = await scanner.http.post(
        "/v1/graphql", content=content, headers={"content-type": content_type}
    )
    assert 400 <= response.status_code < 500
    assert not answered(response)


async def test_trace_mode(scanner: Api) -> None:
    response = await scanner.post(TYPENAME)
    body = response.json()
    assert body["data"] == {"__typename": "Query"}
    assert "tracing" not in (body.get("extensions") or {})
    assert set(body["extensions"]) == {"requestId"}


async def test_unhandled_errors(scanner: Api) -> None:
    for query in ("qwerty cop { abc }", "{ job(id: {}) { __typename } }", "{", "{ viewer }"):
        response = await scanner.post(query)
        assert response.status_code < 500
        for error in (body_of(response) or {}).get("errors", []):
            assert "exception" not in (error.get("extensions") or {})
        assert "Traceback" not in response.text
        assert 'File "' not in response.text


async def test_graphql_ide(scanner: Api) -> None:
    for path in ("/v1/graphql", "/graphql", "/graphiql", "/playground"):
        response = await scanner.http.get(path, headers={"accept": "text/html"})
        assert response.status_code == 404
        assert "graphiql" not in response.text.lower()
        assert "playground" not in response.text.lower()


async def test_introspection(scanner: Api) -> None:
    for query in (
        "query cop { __schema { queryType { name } types { name } } }",
        '{ __type(name: "V1Job") { fields { name } } }',
    ):
        response = await scanner.post(query)
        assert not answered(response)


# What the profile adds besides the scanner's checks.


AMPLIFICATION = (
    "{ "
    + " ".join(
        f"a{i}: jobs(first: 100) {{ edges {{ node {{ input output }} }} }}" for i in range(30)
    )
    + " }"
)


async def test_the_amplification_query_is_refused_before_it_runs(
    prod: Server, caller: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        await caller.submit_ok("echo", {"topic": "x" * 2000 + str(i)})
    listed: list[object] = []
    service = prod.services.jobs
    real_list = service.list

    async def spy(*args: Any, **kwargs: Any) -> Any:
        listed.append(args)
        return await real_list(*args, **kwargs)

    monkeypatch.setattr(service, "list", spy)
    response = await caller.post(AMPLIFICATION)
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert error["extensions"]["cost"] > error["extensions"]["maxCost"] == 5000
    assert len(response.content) < 2000
    assert listed == []  # no resolver ran
    await caller.execute("{ jobs(first: 1) { edges { node { id } } } }")
    assert len(listed) == 1  # the spy sees the jobs a cheap query lists


async def test_a_page_of_ids_still_works(caller: Api) -> None:
    submitted = [(await caller.submit_ok("echo", {"topic": f"t{i}"}))["id"] for i in range(3)]
    data = await caller.execute("{ jobs(first: 100) { edges { node { id status } } } }")
    assert [edge["node"]["id"] for edge in data["jobs"]["edges"]] == submitted[::-1]
    # The page size given as a variable counts as sent.
    page = await caller.execute(
        "query P($n: Int) { jobs(first: $n) { edges { node { id input output } } } }", {"n": 2}
    )
    assert len(page["jobs"]["edges"]) == 2
    full = "query P($n: Int) { jobs(first: $n) { edges { node { JOB_FIELDS } } } }"
    refused = await caller.post(full.replace("JOB_FIELDS", JOB_FIELDS), {"n": 100})
    assert codes(refused) == ["QUERY_TOO_COSTLY"]
    assert await caller.execute(full.replace("JOB_FIELDS", JOB_FIELDS), {"n": 20})


async def test_websockets_work_and_are_costed_too(prod: Server, caller: Api) -> None:
    job = await caller.submit_ok("echo", {"topic": "over a websocket"})
    events = await caller.events(job["id"])
    assert events[-1]["__typename"] == "V1JobSucceeded"
    async with websockets.connect(
        prod.ws_url,
        subprotocols=[GRAPHQL_TRANSPORT_WS],  # type: ignore[list-item]
        origin=ORIGIN,  # type: ignore[arg-type]
    ) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {caller.key}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": AMPLIFICATION}})
        )
        answer = json.loads(await ws.recv())
        errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["QUERY_TOO_COSTLY"]
        assert "data" not in answer["payload"] or answer["payload"]["data"] is None


async def test_metrics_answer_404_without_a_token(prod: Server, caller: Api) -> None:
    async with anonymous(prod) as client:
        assert (await client.get("/metrics")).status_code == 404
    assert (await caller.http.get("/metrics")).status_code == 404  # an API key is not enough


async def test_metrics_with_a_token(settings: Settings) -> None:
    protected = production(settings, metrics_token="s3cret-scrape")
    async with serve(protected) as server, anonymous(server) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        ok = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert ok.status_code == 200
        assert "jobql_" in ok.text


async def test_individual_switches_override_the_profile(settings: Settings) -> None:
    relaxed = production(settings, introspection=True, allow_get_queries=True)
    async with serve(relaxed) as server:
        api = await server.client()
        data = await api.execute("{ __schema { queryType { name } } }")
        assert data["__schema"]["queryType"]["name"] == "Query"
        got = await api.http.get("/v1/graphql", params={"query": "{ viewer { name } }"})
        assert got.json()["data"]["viewer"]["name"] == "tester"
        ide = await api.http.get("/v1/graphql", headers={"accept": "text/html"})
        assert ide.status_code == 404  # GraphiQL stays off


def test_production_refuses_to_start_without_websocket_origins(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="JOBQL_WS_ALLOWED_ORIGINS"):
        create_app(production(settings, ws_allowed_origins=[]))


async def test_the_development_key_only_on_the_embedded_sqlite_default(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The development profile, with create_dev_key left unset: a key is created and
    printed on SQLite; on PostgreSQL nothing is created or printed."""
    explicit = {n: getattr(settings, n) for n in settings.model_fields_set - {"create_dev_key"}}
    development = Settings(**explicit, _env_file=None)  # type: ignore[call-arg]
    sqlite = settings.database_url.startswith("sqlite")
    assert development.create_dev_key is sqlite
    async with serve(development) as server:
        assert await server.services.keys.any_key_exists() is sqlite
    printed = capsys.readouterr().err
    assert ("development API key" in printed) is sqlite
    async with serve(production(settings, create_dev_key=True)) as server:
        assert await server.services.keys.any_key_exists()  # an explicit switch wins


async def test_responses_above_the_ceiling_are_replaced(settings: Settings) -> None:
    small = production(settings, max_response_bytes=4096)
    async with serve(small) as server:
        api = await server.client()
        submitted = await api.execute(
            "mutation S($input: V1SubmitJobInput!) { submitJob(input: $input) "
            "{ ... on V1SubmitJobSuccess { job { id } } } }",
            {"input": {"task": "echo", "input": {"topic": "y" * 6000}}},
        )
        job_id = submitted["submitJob"]["job"]["id"]
        response = await api.post(
            "query J($id: ID!) { job(id: $id) { ... on V1Job { input } } }", {"id": job_id}
        )
        assert response.status_code == 200
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "RESPONSE_TOO_LARGE"
        assert error["extensions"]["maxBytes"] == 4096
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]
        assert "yyyy" not in response.text
