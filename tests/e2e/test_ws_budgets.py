"""WebSocket budgets: per-key caps on connections (4429) and on subscriptions across them,
the connection_init timeout on both protocols, the message size limit, and the budget of
failed key lookups per client address."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from jobql.settings import Settings, TierLimits
from tests.api import Api, Server
from tests.ws import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, Closed, RawSocket

PROTOCOLS = [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS]
INIT_TIMEOUT = 1.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ws_connection_init_timeout_seconds": INIT_TIMEOUT,
            "failed_auth_burst": 5,
            "failed_auth_per_second": 0.5,
            # Small caps keep the accepted streams few; the attempts stay 50 x 100.
            "tier_limits": {"standard": TierLimits(max_ws_connections=5, max_ws_subscriptions=20)},
        }
    )


async def _connect(server: Server, protocol: str, key: str) -> RawSocket | Closed:
    try:
        return await RawSocket.connected(server.ws_url, protocol, key)
    except Closed as closed:
        return closed


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_fifty_connections_times_a_hundred_subscriptions_stop_at_the_caps(
    server: Server, api: Api, protocol: str
) -> None:
    limits = server.services.settings.limits_for("standard")
    job = await api.submit_ok("hang", {"topic": "budget"})
    attempts = await asyncio.gather(*(_connect(server, protocol, api.key) for _ in range(50)))
    sockets = [s for s in attempts if isinstance(s, RawSocket)]
    refused = [s for s in attempts if isinstance(s, Closed)]
    try:
        assert len(sockets) == limits.max_ws_connections
        assert len(refused) == 50 - limits.max_ws_connections
        assert {c.code for c in refused} == {4429}
        assert all("Too many WebSocket connections" in c.reason for c in refused)

        async def subscribe_all(socket: RawSocket, n: int) -> list[str]:
            for i in range(100):
                await socket.subscribe(f"c{n}-s{i}", job["id"])
            first: dict[str, str] = {}  # operation id -> type of its first answer
            while len(first) < 100:
                message = await socket.receive()
                first.setdefault(message["id"], message["type"])
            return list(first.values())

        async with asyncio.timeout(60):
            answers = await asyncio.gather(*(subscribe_all(s, n) for n, s in enumerate(sockets)))
        flat = [kind for kinds in answers for kind in kinds]
        accepted = "next" if protocol == GRAPHQL_TRANSPORT_WS else "data"
        assert flat.count(accepted) == limits.max_ws_subscriptions
        assert flat.count("error") == len(sockets) * 100 - limits.max_ws_subscriptions
    finally:
        for socket in sockets:
            await socket.aclose()


async def test_a_refused_subscription_says_why_and_the_connection_stays_usable(
    server: Server, api: Api
) -> None:
    limits = server.services.settings.limits_for("standard")
    job = await api.submit_ok("hang", {"topic": "budget"})
    socket = await RawSocket.connected(server.ws_url, GRAPHQL_TRANSPORT_WS, api.key)
    try:
        for i in range(limits.max_ws_subscriptions):
            await socket.subscribe(f"s{i}", job["id"])
        for i in range(limits.max_ws_subscriptions):
            assert (await socket.receive_for(f"s{i}"))["type"] == "next"
        await socket.subscribe("over", job["id"])
        error = await socket.receive_for("over")
        assert error["type"] == "error"
        assert error["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        # Completing one frees a place for the next.
        await socket.send({"id": "s0", "type": "complete"})
        await socket.subscribe("again", job["id"])
        assert (await socket.receive_for("again"))["type"] == "next"
    finally:
        await socket.aclose()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_idle_socket_is_closed_at_the_connection_init_timeout(
    server: Server, protocol: str
) -> None:
    sockets = [await RawSocket.open(server.ws_url, protocol) for _ in range(20)]
    started = time.monotonic()
    try:
        async with asyncio.timeout(INIT_TIMEOUT + 5):
            closes = await asyncio.gather(*(s.closed() for s in sockets))
        elapsed = time.monotonic() - started
    finally:
        for socket in sockets:
            await socket.aclose()
    assert {c.code for c in closes} == {4408}
    assert INIT_TIMEOUT * 0.8 <= elapsed < INIT_TIMEOUT + 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("authenticated", [False, True])
async def test_an_oversized_message_is_refused_with_1009(
    server: Server, api: Api, protocol: str, authenticated: bool
) -> None:
    limit = server.services.settings.ws_max_message_bytes
    if authenticated:
        socket = await RawSocket.connected(server.ws_url, protocol, api.key)
    else:
        socket = await RawSocket.open(server.ws_url, protocol)
    try:
        await socket.send({"type": "connection_init", "payload": {"x": "a" * (limit + 1)}})
        closed = await socket.closed()
    finally:
        await socket.aclose()
    assert closed.code == 1009
    # The server carries on: the next connection works.
    (await RawSocket.connected(server.ws_url, protocol, api.key)).ws.close_timeout = 0.1


async def test_failed_key_lookups_are_limited_per_address(server: Server, api: Api) -> None:
    await api.execute("{ viewer { id } }")  # this good key is cached now
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        statuses = []
        for i in range(8):
            response = await client.post(
                "/v1/graphql",
                json={"query": "{ viewer { id } }"},
                headers={"Authorization": f"Bearer jq_random-{i}"},
            )
            statuses.append(response.status_code)
        assert statuses == [401] * 5 + [429] * 3
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    # A key that is known keeps working, from the cache.
    assert (await api.post("{ viewer { id } }")).status_code == 200
    # Over WebSocket the same budget closes the connection with 4429.
    refused = await _connect(server, GRAPHQL_TRANSPORT_WS, "jq_random-ws")
    assert isinstance(refused, Closed)
    assert refused.code == 4429
