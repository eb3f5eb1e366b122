"""GraphQL over HTTP: a request that prefers application/graphql-response+json (Apollo
Client 4, urql) gets that media type and the spec's status codes, with the same body as
under application/json; a request for application/json (or with no Accept, or */*) is
answered as it always was."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jobql.settings import Settings
from tests.api import JOB, Api, Server, serve

GRAPHQL_RESPONSE = "application/graphql-response+json"
CONTENT_TYPE = "application/graphql-response+json; charset=utf-8"
APOLLO_CLIENT_4 = "application/graphql-response+json,application/json;q=0.9"
URQL = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)
SUBMIT_MUTATION = 'mutation { submitJob(input: {task: "echo", input: {}}) { __typename } }'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body_bytes": 2048})


async def both(
    api: Api, request_id: str, method: str = "POST", **kwargs: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The same request under both media types (and one request id, so the bodies can be
    compared whole): (application/graphql-response+json, application/json)."""
    answers = []
    sent = kwargs.pop("headers", {})
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        headers = {**sent, "Accept": accept, "X-Request-ID": request_id}
        answers.append(await api.http.request(method, "/v1/graphql", headers=headers, **kwargs))
    return answers[0], answers[1]


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors


@pytest.mark.parametrize("key", [None, "Bearer jq_not-a-key", "Basic Zm9vOmJhcg=="])
async def test_a_bad_key_is_401_with_a_readable_body(server: Server, key: str | None) -> None:
    headers = {"Authorization": key} if key else {}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as client:
        for accept in (GRAPHQL_RESPONSE, APOLLO_CLIENT_4):
            response = await client.post(
                "/v1/graphql", json={"query": "{ viewer { id } }"}, headers={"Accept": accept}
            )
            assert response.status_code == 401
            assert response.headers["content-type"] == CONTENT_TYPE
            [error] = errors_of(response)
            assert "API key" in error["message"]
            assert error["extensions"]["code"] == "UNAUTHENTICATED"
        # application/json: 401 too, as always
        response = await client.post("/v1/graphql", json={"query": "{ viewer { id } }"})
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("case", "body", "message"),
    [
        ("syntax", {"query": "{ viewer { id "}, "Syntax Error"),
        ("validation", {"query": "{ viewer { nope } }"}, "nope"),
        ("depth", {"query": "{ viewer " + "{ id " * 12 + "}" * 13}, ""),
        (
            "variables",
            {"query": "query J($id: ID!) { job(id: $id) { __typename } }", "variables": {}},
            "$id",
        ),
    ],
)
async def test_a_document_or_variables_that_cannot_run_are_400(
    api: Api, case: str, body: dict[str, Any], message: str
) -> None:
    graphql, plain = await both(api, f"req-{case}", json=body)
    assert graphql.status_code == 400, graphql.text
    assert graphql.headers["content-type"] == CONTENT_TYPE
    assert message in errors_of(graphql)[0]["message"]
    # application/json keeps its 200, and the body is the same under both types
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    assert graphql.json() == plain.json()
    assert graphql.json()["data"] is None


async def test_an_unknown_operation_name_is_400(api: Api) -> None:
    body = {"query": "query A { tasks { name } }", "operationName": "B"}
    graphql, plain = await both(api, "req-operation-name", json=body)
    assert graphql.status_code == 400
    assert graphql.headers["content-type"] == CONTENT_TYPE
    assert errors_of(graphql)[0]["extensions"]["code"] == "BAD_REQUEST"
    # application/json: Strawberry's plain-text 400, as always
    assert plain.status_code == 400
    assert plain.headers["content-type"].startswith("text/plain")
    assert errors_of(graphql)[0]["message"] == plain.text


async def test_success_and_errors_as_data_are_200(api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "over http"})
    await api.wait_finished(job["id"])  # so both reads see the same job
    for case, body in {
        "success": {"query": JOB, "variables": {"id": job["id"]}},
        "not-found": {"query": JOB, "variables": {"id": "00000000-0000-0000-0000-000000000000"}},
        "invalid-input": {"query": SUBMIT_MUTATION},
    }.items():
        graphql, plain = await both(api, f"ok-{case}", json=body)
        assert graphql.status_code == plain.status_code == 200, case
        assert graphql.headers["content-type"] == CONTENT_TYPE
        assert plain.headers["content-type"] == "application/json"
        assert "errors" not in graphql.json()
        assert graphql.json() == plain.json()
    assert graphql.json()["data"]["submitJob"]["__typename"] == "V1InvalidInput"


async def test_client_accept_headers(api: Api) -> None:
    for accept, content_type in [
        (APOLLO_CLIENT_4, CONTENT_TYPE),
        (URQL, CONTENT_TYPE),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/json, application/graphql-response+json;q=0.5", "application/json"),
    ]:
        response = await api.http.post(
            "/v1/graphql", json={"query": "{ viewer { id } }"}, headers={"Accept": accept}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type, accept
        assert "accept" in {v.strip().lower() for v in response.headers["vary"].split(",")}
    no_accept = api.http.build_request("POST", "/v1/graphql", json={"query": "{ viewer { id } }"})
    del no_accept.headers["accept"]
    response = await api.http.send(no_accept)
    assert response.headers["content-type"] == "application/json"


async def test_a_mutation_over_get_is_405(api: Api) -> None:
    graphql, plain = await both(
        api, "get-mutation", method="GET", params={"query": SUBMIT_MUTATION}
    )
    assert graphql.status_code == 405
    assert graphql.headers["allow"] == "POST"
    assert graphql.headers["content-type"] == CONTENT_TYPE
    assert errors_of(graphql)[0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    assert plain.status_code == 400  # as always under application/json
    # A query over GET runs as usual.
    graphql, plain = await both(
        api, "get-query", method="GET", params={"query": "{ tasks { name } }"}
    )
    assert graphql.status_code == plain.status_code == 200
    assert graphql.json() == plain.json()


async def test_refusals_before_graphql_use_the_asked_type(api: Api) -> None:
    """No query, a body that is not JSON, bad JSON numbers, a body too large: 4xx with a
    GraphQL-shaped error under application/graphql-response+json."""
    cases: dict[str, tuple[int, dict[str, Any]]] = {
        "no-query": (400, {"json": {"variables": {}}}),
        "not-json": (400, {"content": b"{", "headers": {"Content-Type": "application/json"}}),
        "nan": (
            400,
            {
                "content": b'{"query": "{ tasks { name } }", "variables": {"x": NaN}}',
                "headers": {"Content-Type": "application/json"},
            },
        ),
        "too-large": (413, {"json": {"query": "#" + "x" * 4096}}),
    }
    for case, (status, request) in cases.items():
        graphql, plain = await both(api, f"refused-{case}", **request)
        assert graphql.status_code == plain.status_code == status, case
        assert graphql.headers["content-type"] == CONTENT_TYPE, case
        [error] = errors_of(graphql)
        assert error["extensions"]["code"] in ("BAD_REQUEST", "PAYLOAD_TOO_LARGE"), case
        assert error["extensions"]["requestId"] == f"refused-{case}"
        assert error["message"]


async def test_too_many_bad_keys_is_429(settings: Settings) -> None:
    limited = settings.model_copy(update={"failed_auth_burst": 1, "failed_auth_per_second": 0.1})
    async with serve(limited) as server, httpx.AsyncClient(base_url=server.http_url) as client:
        statuses = []
        for i in range(3):
            response = await client.post(
                "/v1/graphql",
                json={"query": "{ viewer { id } }"},
                headers={"Authorization": f"Bearer jq_random-{i}", "Accept": APOLLO_CLIENT_4},
            )
            statuses.append(response.status_code)
    assert statuses[0] == 401
    assert statuses[-1] == 429
    assert response.headers["content-type"] == CONTENT_TYPE
    assert errors_of(response)[0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    assert int(response.headers["retry-after"]) >= 1


async def test_a_query_over_get_is_405_when_get_queries_are_off(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"allow_get_queries": False})) as server:
        api = await server.client()
        graphql, plain = await both(
            api, "get-off", method="GET", params={"query": "{ tasks { name } }"}
        )
    assert graphql.status_code == 405
    assert graphql.headers["allow"] == "POST"
    assert errors_of(graphql)[0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    assert plain.status_code == 400
