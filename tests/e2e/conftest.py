"""A running server and one caller, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jobql.settings import Settings
from tests.api import Api, Server, serve


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with serve(settings) as running:
        yield running


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    client = await server.client("alice")
    yield client
    await client.aclose()
