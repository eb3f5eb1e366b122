"""Revoking a key takes effect at once: its open WebSockets close with 4403, it starts no
new subscription, HTTP answers 401, also when another process revoked it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from jobql.events.bus import BroadcastBus
from jobql.services.auth import KeyService
from jobql.settings import Settings
from tests.api import Api, Server
from tests.faults.servers import wait_until
from tests.ws import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, Closed, RawSocket

PROTOCOLS = [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # On memory:// a revocation by another process is noticed at this interval.
    return settings.model_copy(update={"key_cache_fallback_seconds": 0.5})


@pytest.fixture
async def other_process(server: Server, settings: Settings) -> AsyncIterator[KeyService]:
    """Keys as another process (`jobql keys revoke`) sees them: its own cache and its own
    connection to the bus (on memory:// that reaches no other process)."""
    bus = BroadcastBus(settings.broadcast_url)
    await bus.connect()
    try:
        yield KeyService(server.runtime.sessions, bus=bus)
    finally:
        await bus.disconnect()


async def _streaming(server: Server, api: Api, protocol: str) -> RawSocket:
    job = await api.submit_ok("hang", {"topic": "revoke me"})
    socket = await RawSocket.connected(server.ws_url, protocol, api.key)
    await socket.subscribe("events", job["id"])
    assert (await socket.receive_for("events"))["type"] in ("next", "data")
    return socket


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_revoking_elsewhere_closes_the_keys_websockets_and_http_within_a_second(
    server: Server, api: Api, other_process: KeyService, protocol: str
) -> None:
    socket = await _streaming(server, api, protocol)
    bystander = await server.client("bystander")
    other = await _streaming(server, bystander, protocol)
    try:
        await api.execute("{ viewer { id } }")  # the key is in the server's cache
        assert await other_process.revoke(api.key[:10]) == 1
        revoked_at = time.monotonic()
        closed = await socket.closed()
        closed_after = time.monotonic() - revoked_at
        assert closed.code == 4403, closed
        assert closed_after < 1.0

        async def refused() -> bool:
            return (await api.post("{ viewer { id } }")).status_code == 401

        assert time.monotonic() - revoked_at + await wait_until(refused, "401", 1.0) < 1.0
        # Another caller's stream goes on.
        assert (await other.receive_for("events"))["type"] in ("next", "data")
        # And the revoked key cannot connect again.
        with pytest.raises(Closed) as again:
            await RawSocket.connected(server.ws_url, protocol, api.key)
        assert again.value.code == 4403
    finally:
        await socket.aclose()
        await other.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_revoked_connection_starts_no_new_subscription(
    server: Server, api: Api, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = await _streaming(server, api, protocol)
    # Hold back the closing, to see the re-check that guards every new operation.
    monkeypatch.setattr(server.services.keys, "_watchers", [])
    try:
        await server.services.keys.revoke(api.key[:10])
        job = await api.server.client("someone")
        other_job = await job.submit_ok("hang", {"topic": "x"})
        await socket.subscribe("again", other_job["id"])
        refusal = await socket.receive_for("again")
        assert refusal["type"] == "error"
        payload = refusal["payload"]
        error = payload[0] if isinstance(payload, list) else payload
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert (await socket.closed()).code == 4403
    finally:
        await socket.aclose()
