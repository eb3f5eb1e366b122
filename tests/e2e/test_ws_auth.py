"""Where a WebSocket's connection_init may carry the API key, on both protocols, and how a
missing or bad key is refused: close 4403 with a reason that names the problem."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api import Api, Server
from tests.ws import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, RawSocket

PROTOCOLS = [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS]
REJECTED = "invalid or missing API key"


def payload(shape: str, value: str) -> dict[str, Any]:
    return {
        "Authorization": {"Authorization": value},
        "authorization": {"authorization": value},
        "headers.Authorization": {"headers": {"Authorization": value}},
        "headers.authorization": {"headers": {"authorization": value}},
    }[shape]


async def opened(server: Server, protocol: str, init: dict[str, Any]) -> RawSocket:
    socket = await RawSocket.open(server.ws_url, protocol)
    socket.ws.close_timeout = 0.1
    await socket.send({"type": "connection_init", "payload": init})
    return socket


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "shape", ["Authorization", "authorization", "headers.Authorization", "headers.authorization"]
)
async def test_each_payload_shape_connects_and_subscribes(
    server: Server, api: Api, protocol: str, shape: str
) -> None:
    job = await api.submit_ok("echo", {"topic": shape})
    socket = await opened(server, protocol, payload(shape, f"Bearer {api.key}"))
    try:
        async with asyncio.timeout(10):
            assert (await socket.receive())["type"] == "connection_ack"
            await socket.subscribe("1", job["id"])
            message = await socket.receive_for("1")
        assert message["type"] in ("next", "data"), message
        event = message["payload"]["data"]["jobEvents"]
        assert event["jobId"] == job["id"]
        assert event["seq"] == 1
    finally:
        await socket.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "init",
    [
        {},
        {"headers": {}},
        {"Authorization": "Bearer jq_not-a-key"},
        {"headers": {"Authorization": "Bearer jq_not-a-key"}},
        {"authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": ""},
    ],
)
async def test_a_missing_or_bad_key_closes_4403_naming_it(
    server: Server, protocol: str, init: dict[str, Any]
) -> None:
    socket = await opened(server, protocol, init)
    closed = await socket.closed()
    assert closed.code == 4403
    assert closed.reason == REJECTED


async def test_the_http_refusal_names_the_api_key_too(server: Server) -> None:
    api = Api(server, "jq_not-a-key")
    try:
        response = await api.post("{ viewer { id } }")
    finally:
        await api.aclose()
    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert "API key" in error["message"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
