"""Browser apps on another origin: CORS on HTTP from the one origin allowlist that WebSocket
handshakes are checked against too (JOBQL_CORS_ORIGINS, or its older name
JOBQL_WS_ALLOWED_ORIGINS), on successes and on every refusal a browser must be able to read."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from jobql.settings import Settings
from tests.api import SUBMIT, Server, serve
from tests.ws import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, RawSocket

VITE = "http://localhost:5173"
OTHER = "https://evil.example"
# What Apollo Client 4 (with client awareness and the CSRF-prevention header) and our own
# request headers make a browser ask for in a preflight.
REQUESTED_HEADERS = (
    "authorization,content-type,apollo-require-preflight,x-apollo-operation-name,"
    "apollographql-client-name,apollographql-client-version,idempotency-key,x-request-id"
)
EXPOSED = {"retry-after", "x-request-id", "ratelimit", "ratelimit-policy"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "cors_origins": [VITE],
            "enforce_limits": True,  # so a submit answers with the RateLimit headers
            "failed_auth_burst": 2,
            "failed_auth_per_second": 0.1,
            "max_body_bytes": 2048,
        }
    )


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": REQUESTED_HEADERS,
    }


def listed(response: httpx.Response, header: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(header, "").split(",")}


async def test_preflight_from_an_allowed_origin(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        for method in ("POST", "GET"):
            response = await client.options("/v1/graphql", headers=preflight(VITE, method))
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == VITE
            assert {"get", "post", "options"} <= listed(response, "access-control-allow-methods")
            assert set(REQUESTED_HEADERS.split(",")) <= listed(
                response, "access-control-allow-headers"
            )
            assert response.headers["access-control-max-age"] == "600"
            assert "access-control-allow-credentials" not in response.headers
            assert "origin" in listed(response, "vary")


async def test_a_reconnecting_sse_client_may_send_last_event_id(server: Server) -> None:
    """graphql-sse resends Last-Event-ID (with its Authorization) to resume a stream: a
    cross-origin app's preflight for it passes."""
    headers = {
        "Origin": VITE,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,last-event-id",
    }
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.options("/v1/graphql", headers=headers)
    assert response.status_code == 200, response.text
    assert "last-event-id" in listed(response, "access-control-allow-headers")


async def test_preflight_from_another_origin_is_refused(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.options("/v1/graphql", headers=preflight(OTHER))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_a_post_from_an_allowed_origin_can_read_the_answer_and_its_headers(
    server: Server,
) -> None:
    api = await server.client()
    submit = {"input": {"task": "echo", "input": {"topic": "cors"}}, "key": None}
    response = await api.post(SUBMIT, submit, headers={"Origin": VITE})
    assert response.status_code == 200
    assert response.json()["data"]["submitJob"]["__typename"] == "V1SubmitJobSuccess"
    assert response.headers["access-control-allow-origin"] == VITE
    assert "origin" in listed(response, "vary")
    # Each exposed header is one the answer really carries.
    assert listed(response, "access-control-expose-headers") >= EXPOSED
    assert {"x-request-id", "ratelimit", "ratelimit-policy"} <= set(response.headers.keys())


async def test_a_post_from_another_origin_gets_no_cors_headers(server: Server) -> None:
    api = await server.client()
    response = await api.post("{ viewer { id } }", headers={"Origin": OTHER})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_refusals_carry_cors_headers(server: Server) -> None:
    """401, 400, 413 and 429, whether GraphQL or a middleware in front of it refused."""
    origin = {"Origin": VITE}
    query: dict[str, Any] = {"query": "{ viewer { id } }"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=origin) as client:
        answers = {
            "401": await client.post("/v1/graphql", json=query),
            "400": await client.post(
                "/v1/graphql",
                content=b'{"query": "{ viewer { id } }", "variables": {"x": NaN}}',
                headers={"Content-Type": "application/json"},
            ),
            "413": await client.post("/v1/graphql", json={"query": "#" + "x" * 4096}),
        }
        while "429" not in answers:  # the address's failed-key budget runs out
            response = await client.post(
                "/v1/graphql", json=query, headers={"Authorization": "Bearer jq_unknown"}
            )
            assert response.status_code in (401, 429)
            if response.status_code == 429:
                answers["429"] = response
    for status, response in answers.items():
        assert str(response.status_code) == status, response.text
        assert response.headers["access-control-allow-origin"] == VITE, status
        assert listed(response, "access-control-expose-headers") >= EXPOSED, status
        assert response.json()["errors"], status
    assert int(answers["429"].headers["retry-after"]) >= 1


async def test_credentials_are_allowed_only_when_switched_on(settings: Settings) -> None:
    with_credentials = settings.model_copy(update={"cors_allow_credentials": True})
    async with serve(with_credentials) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            response = await client.options("/v1/graphql", headers=preflight(VITE))
        assert response.headers["access-control-allow-origin"] == VITE
        assert response.headers["access-control-allow-credentials"] == "true"
        api = await server.client()
        answer = await api.post("{ viewer { id } }", headers={"Origin": VITE})
        assert answer.headers["access-control-allow-origin"] == VITE
        assert answer.headers["access-control-allow-credentials"] == "true"


async def _handshake(server: Server, protocol: str, origin: str, key: str) -> str:
    """How a WebSocket from ``origin`` fares: "ack", or the handshake's HTTP status."""
    try:
        socket = await RawSocket.open(server.ws_url, protocol, origin=origin)
    except InvalidStatus as refused:
        return str(refused.response.status_code)
    try:
        await socket.init(key)
        message = await socket.receive()
        return str(message["type"])
    finally:
        await socket.aclose()


@pytest.mark.parametrize("name", ["cors_origins", "ws_allowed_origins"])
async def test_websocket_origins_are_the_same_list(settings: Settings, name: str) -> None:
    one_list = settings.model_copy(update={"cors_origins": [], name: [VITE]})
    async with serve(one_list) as server:
        api = await server.client()
        for protocol in (GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS):
            assert await _handshake(server, protocol, VITE, api.key) == "connection_ack"
            assert await _handshake(server, protocol, OTHER, api.key) == "403"
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            allowed = await client.options("/v1/graphql", headers=preflight(VITE))
            refused = await client.options("/v1/graphql", headers=preflight(OTHER))
        assert allowed.headers["access-control-allow-origin"] == VITE
        assert refused.status_code == 400


async def test_the_older_name_and_the_new_one_add_up(settings: Settings) -> None:
    both = settings.model_copy(
        update={"cors_origins": [VITE], "ws_allowed_origins": ["https://app.example"]}
    )
    async with serve(both) as server:
        api = await server.client()
        for origin in (VITE, "https://app.example"):
            assert await _handshake(server, GRAPHQL_TRANSPORT_WS, origin, api.key) == (
                "connection_ack"
            )
            answer = await api.post("{ viewer { id } }", headers={"Origin": origin})
            assert answer.headers["access-control-allow-origin"] == origin
        assert json.loads(answer.text)["data"]["viewer"]["id"]
