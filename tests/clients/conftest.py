"""A live jobql for the client libraries: SQLite, the in-memory bus, the test tasks, and
CORS open to one development origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from jobql.settings import Settings
from tests.api import Server, serve
from tests.backends import Databases
from tests.conftest import TEST_TASKS

# The origin of a frontend dev server on another port (Vite's default).
DEV_ORIGIN = "http://localhost:5173"


def client_settings(database_url: str, cors_origins: list[str]) -> Settings:
    return Settings(
        database_url=database_url,
        broadcast_url="memory://",
        tasks_file=TEST_TASKS,
        migrate_on_start=False,  # the template database is migrated already
        create_dev_key=False,
        heartbeat_seconds=0.5,
        coalesce_ms=10,
        worker_poll_seconds=0.5,
        lease_seconds=5,
        lease_renew_seconds=1,
        shutdown_grace_seconds=0,
        enforce_limits=False,
        cors_origins=cors_origins,
        _env_file=None,  # type: ignore[call-arg]
    )


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
