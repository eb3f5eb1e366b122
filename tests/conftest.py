"""Fixtures shared by the integration and end-to-end suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobql.settings import Settings
from tests.backends import BACKENDS, Backend, Databases, bus_url
from tests.faults.servers import PostgresTemplate

TESTS = Path(__file__).parent
TEST_TASKS = TESTS / "tasks.toml"


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    databases = Databases(tmp_path_factory.mktemp("databases"))
    yield databases
    databases.cleanup()


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    return b


@pytest.fixture
def database_url(backend: Backend, databases: Databases) -> Iterator[str]:
    if backend.database == "sqlite":
        yield databases.sqlite()
    else:
        yield from databases.postgres()


@pytest.fixture
def settings(backend: Backend, database_url: str) -> Settings:
    return fast_settings(database_url, bus_url(backend.bus))


def fast_settings(database_url: str, broadcast_url: str, **overrides: Any) -> Settings:
    """Fast settings for tests: short heartbeats and leases, no grace on shutdown."""
    return Settings(
        database_url=database_url,
        broadcast_url=broadcast_url,
        tasks_file=TEST_TASKS,
        migrate_on_start=False,  # the template database is migrated already
        create_dev_key=False,
        heartbeat_seconds=0.5,
        coalesce_ms=10,
        worker_poll_seconds=0.5,
        lease_seconds=5,
        lease_renew_seconds=1,
        shutdown_grace_seconds=0,
        enforce_limits=False,  # the limit suites switch them on
        _env_file=None,  # type: ignore[call-arg]
        **overrides,
    )


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PostgresTemplate]:
    """An initdb'ed PostgreSQL data directory for throwaway servers (tests/faults/servers.py)."""
    template = PostgresTemplate()
    yield template
    template.cleanup()
