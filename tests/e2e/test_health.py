"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from tests.api import Server


async def test_healthz_and_readyz(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        live = await client.get("/healthz")
        assert live.status_code == 200
        assert live.json() == {"status": "ok"}
        assert live.headers["x-request-id"]
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": True, "eventBus": True}}


async def test_readyz_reports_a_dead_bus_listener(server: Server) -> None:
    # broadcaster's listener task is what dies when the backend connection drops.
    listener = server.runtime.bus._listener()
    assert listener is not None
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["eventBus"] is False
