"""Fixtures for the fault suites: throwaway servers and jobql processes, cleaned up always."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import run_blocking
from tests.faults.servers import (
    TESTS,
    JobqlProcess,
    PostgresServer,
    PostgresTemplate,
    RedisServer,
    jobql_env,
)


@pytest.fixture
def pg_server(pg_template: PostgresTemplate) -> Iterator[PostgresServer]:
    """A PostgreSQL instance of this test's own, started; the test may stop and start it."""
    server = PostgresServer(pg_template)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, started; the test may stop and start it."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Processes:
    """Starts jobql processes for a test and kills whatever is left at its end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[JobqlProcess] = []

    def start(self, command: str, env: dict[str, str], name: str) -> JobqlProcess:
        process = JobqlProcess(command, env, self.directory, name)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            process.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.close()


def migrate(database_url: str) -> None:
    from jobql.repositories.database import create_engine
    from jobql.repositories.migrate import upgrade

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run_blocking(run)


def create_key(database_url: str, name: str = "fault-tester") -> str:
    """A new API key, made as an operator does (`jobql keys create`)."""
    result = subprocess.run(
        [sys.executable, "-m", "jobql.cli", "keys", "create", "--name", name],
        env={**jobql_env(database_url, "memory://"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=TESTS.parent,
    )
    return result.stdout.strip()
