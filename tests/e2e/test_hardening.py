"""Strawberry's safety limits stay on with the parser and validation caches in front."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from jobql.settings import Settings
from tests.api import GRAPHQL_TRANSPORT_WS, Api, serve


async def errors_of(api: Api, query: str) -> list[str]:
    body = (await api.post(query)).json()
    return [e["message"] for e in body.get("errors", [])]


DEEP = "{ jobs { edges { node { contract { model { name } } } } } }"  # depth 5 (root is 0)
SHALLOW = "{ jobs { edges { node { id } } } }"  # depth 3


async def test_depth_limit(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"max_query_depth": 4})) as server:
        api = await server.client()
        for _ in range(2):  # the second round is answered from the caches
            assert await errors_of(api, SHALLOW) == []
            errors = await errors_of(api, DEEP)
            assert any("exceeds maximum operation depth of 4" in e for e in errors), errors
        await api.aclose()


@pytest.mark.parametrize("attempt", [1, 2])
async def test_alias_limit(api: Api, attempt: int) -> None:
    ok = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(30)) + " }"
    assert await errors_of(api, ok) == []
    too_many = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(31)) + " }"
    errors = await errors_of(api, too_many)
    assert any("aliases" in e for e in errors), errors


async def test_token_limit(api: Api) -> None:
    huge = "{ viewer { " + " ".join(["id"] * 2500) + " } }"
    errors = await errors_of(api, huge)
    assert any("token" in e.lower() for e in errors), errors


async def test_no_field_suggestions(api: Api) -> None:
    errors = await errors_of(api, "{ viewr { id } }")
    assert errors
    assert "Did you mean" not in " ".join(errors)


async def test_request_body_over_the_limit_is_413(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"max_body_bytes": 2048})) as server:
        api = await server.client()
        big = {"query": "{ viewer { id } }", "variables": {"pad": "x" * 4000}}
        response = await api.http.post("/v1/graphql", json=big)
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 500

        chunked = await api.http.post(
            "/v1/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        assert (await api.post("{ viewer { id } }")).status_code == 200
        await api.aclose()


async def test_task_input_over_the_limit_is_invalid_input(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"max_input_bytes": 100})) as server:
        api = await server.client()
        result = await api.submit("echo", {"topic": "y" * 200})
        assert result["__typename"] == "V1InvalidInput"
        assert result["field"] == "input"
        await api.aclose()


async def test_websocket_origin_allowlist(settings: Settings) -> None:
    allowed = settings.model_copy(update={"ws_allowed_origins": ["https://app.example"]})
    async with serve(allowed) as server:
        api = await server.client()
        async with websockets.connect(
            server.ws_url,
            subprotocols=[GRAPHQL_TRANSPORT_WS],  # type: ignore[list-item]
            origin="https://app.example",  # type: ignore[arg-type]
        ) as ws:
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {api.key}"}}
            await ws.send(json.dumps(init))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(
                server.ws_url,
                subprotocols=[GRAPHQL_TRANSPORT_WS],  # type: ignore[list-item]
                origin="https://evil.example",  # type: ignore[arg-type]
            )
        assert refused.value.response.status_code == 403
        await api.aclose()
