"""The real databases and buses the integration suites run against.

PostgreSQL and Redis come from JOBQL_TEST_POSTGRES_URL and JOBQL_TEST_REDIS_URL (defaults:
the local servers). When one is unreachable its tests skip with the reason, except under
CI=true, where they fail: CI must prove every backend.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from jobql.repositories.database import create_engine
from jobql.repositories.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "JOBQL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("JOBQL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Backend:
    """One combination a suite runs on: a store and an event bus."""

    name: str
    database: str  # "sqlite" | "postgres"
    bus: str  # "memory" | "redis" | "postgres"


BACKENDS = [
    Backend("sqlite+memory", "sqlite", "memory"),
    Backend("postgres+redis", "postgres", "redis"),
]


def unavailable(what: str, url: str, error: BaseException) -> None:
    reason = f"{what} is not reachable at {url} ({error.__class__.__name__}: {error})"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(f"{reason}; start it or set the JOBQL_TEST_* URL")


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def run_blocking(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion from sync code, even inside a running event loop
    (fixtures are set up from the test's loop): on a thread with a loop of its own."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(factory())).result()


async def _pg_admin(sql: list[str]) -> None:
    conn = await asyncpg.connect(_plain_dsn(POSTGRES_URL), timeout=5)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


class Databases:
    """Hands every test a fresh, migrated database copied from a template made once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._sqlite_template: Path | None = None
        self._postgres_ready: bool | None = None
        self._postgres_error: BaseException | None = None
        # One migrated template per test session, named for it: two runs sharing a server
        # (CI beside a developer's run) never drop each other's template.
        self.template = f"jobql_test_template_{uuid.uuid4().hex[:12]}"

    def sqlite(self) -> str:
        if self._sqlite_template is None:
            self._sqlite_template = self.tmp / "template.db"
            url = f"sqlite+aiosqlite:///{self._sqlite_template}"
            run_blocking(lambda: _migrate(url))
        path = self.tmp / f"{uuid.uuid4().hex}.db"
        shutil.copy(self._sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"

    def postgres_available(self) -> None:
        """Skip (or fail under CI) unless the PostgreSQL server is there."""
        if self._postgres_ready is None:
            try:
                run_blocking(
                    lambda: _pg_admin(
                        [
                            f"CREATE DATABASE {self.template}",
                        ]
                    )
                )
                self._postgres_ready = True
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._postgres_ready, self._postgres_error = False, exc
            else:
                run_blocking(lambda: _migrate(_with_database(POSTGRES_URL, self.template)))
        if not self._postgres_ready:
            assert self._postgres_error is not None
            unavailable("PostgreSQL", POSTGRES_URL, self._postgres_error)

    def postgres(self) -> Iterator[str]:
        self.postgres_available()
        name = f"jobql_test_{uuid.uuid4().hex[:12]}"
        run_blocking(lambda: _pg_admin([f"CREATE DATABASE {name} TEMPLATE {self.template}"]))
        try:
            yield _with_database(POSTGRES_URL, name)
        finally:
            run_blocking(lambda: _pg_admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]))

    def cleanup(self) -> None:
        """Drop this session's PostgreSQL template, if one was made."""
        if self._postgres_ready:
            run_blocking(
                lambda: _pg_admin([f"DROP DATABASE IF EXISTS {self.template} WITH (FORCE)"])
            )


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", REDIS_URL, exc)
    finally:
        client.close()


def bus_url(bus: str) -> str:
    if bus == "memory":
        return "memory://"
    if bus == "redis":
        check_redis()
        return REDIS_URL
    return _plain_dsn(POSTGRES_URL).replace("postgresql://", "postgres://")
