"""API keys over HTTP and WebSocket; a caller only ever sees its own jobs."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.api import GRAPHQL_TRANSPORT_WS, JOB, LEGACY_GRAPHQL_WS, Api, Server


async def test_http_without_a_valid_key_is_401(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        for headers in ({}, {"Authorization": "Bearer jq_not-a-key"}, {"Authorization": "x"}):
            response = await client.post(
                "/v1/graphql", json={"query": "{ viewer { id } }"}, headers=headers
            )
            assert response.status_code == 401
            body = response.json()
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert body["data"] is None


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
@pytest.mark.parametrize("payload", [{}, {"Authorization": "Bearer jq_wrong"}])
async def test_websocket_with_a_bad_key_closes_4403(
    server: Server, protocol: str, payload: dict[str, str]
) -> None:
    async with websockets.connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await drain(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def drain(ws: websockets.ClientConnection) -> None:
    """Read until the server closes the connection (legacy graphql-ws sends an error first)."""
    while True:
        await ws.recv()


async def test_websocket_with_a_good_key_is_acknowledged(api: Api) -> None:
    async with websockets.connect(
        api.server.ws_url,
        subprotocols=[GRAPHQL_TRANSPORT_WS],  # type: ignore[list-item]
    ) as ws:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {api.key}"}}
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"


async def test_other_callers_jobs_are_not_found_everywhere(server: Server, api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "private"})
    await api.wait_finished(job["id"])
    mallory = await server.client("mallory")
    try:
        assert (await mallory.job(job["id"]))["__typename"] == "V1NotFound"
        cancel = await mallory.cancel(job["id"])
        assert cancel["__typename"] == "V1NotFound"
        assert cancel["code"] == "NOT_FOUND"
        events = await mallory.events(job["id"])
        assert [e["__typename"] for e in events] == ["V1NotFound"]
        listing = await mallory.execute("{ jobs { edges { node { id } } } }")
        assert listing["jobs"]["edges"] == []
        # And the owner is unaffected.
        assert (await api.job(job["id"]))["status"] == "SUCCEEDED"
        # A job id that exists nowhere looks exactly the same.
        unknown = await mallory.job("00000000-0000-0000-0000-000000000000")
        assert unknown == (await mallory.job(job["id"]))
    finally:
        await mallory.aclose()


async def test_revoked_key_stops_working(server: Server) -> None:
    api = await server.client("temp")
    assert (await api.post("{ viewer { name } }")).status_code == 200
    await server.services.keys.revoke(api.key[:10])
    assert (await api.post(JOB, {"id": "x"})).status_code == 401
    await api.aclose()
