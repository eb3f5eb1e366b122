"""A v2 caller per test, on the running server of tests/e2e/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api import Server
from tests.e2e.v2.client import V2Api


async def v2_client(server: Server, name: str = "tester") -> V2Api:
    """A v2 caller with a new key."""
    return V2Api(server, await server.new_key(name))


@pytest.fixture
async def v2(server: Server) -> AsyncIterator[V2Api]:
    client = await v2_client(server, "alice")
    yield client
    await client.aclose()
