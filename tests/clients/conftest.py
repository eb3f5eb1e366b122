"""A live jobql for the client libraries: SQLite, the in-memory bus, the test tasks, and
CORS open to one development origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from jobql.settings import Settings
from tests.api import Server, serve
from tests.backends import Databases
from tests.conftest import fast_settings

# The origin of a frontend dev server on another port (Vite's default).
DEV_ORIGIN = "http://localhost:5173"


def client_settings(database_url: str, cors_origins: list[str]) -> Settings:
    return fast_settings(database_url, "memory://", cors_origins=cors_origins)


@dataclass(frozen=True)
class Live:
    server: Server
    key: str

    def env(self, origin: str = DEV_ORIGIN) -> dict[str, str]:
        """What the Node tests read: where jobql is, the key, the origin to send."""
        return {
            "JOBQL_HTTP_URL": f"{self.server.http_url}/v1/graphql",
            "JOBQL_WS_URL": self.server.ws_url,
            "JOBQL_KEY": self.key,
            "JOBQL_ORIGIN": origin,
        }


@pytest.fixture
async def live(databases: Databases) -> AsyncIterator[Live]:
    async with serve(client_settings(databases.sqlite(), [DEV_ORIGIN])) as server:
        yield Live(server, await server.new_key("frontend"))
