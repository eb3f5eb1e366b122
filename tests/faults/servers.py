"""Throwaway Redis and PostgreSQL servers, and jobql processes, that fault tests stop,
kill and start again. Never the shared servers: each one here runs on a free port out of a
temporary directory and is gone after its test.

PostgreSQL: one cluster is made with ``initdb`` per test session (a template data
directory); each test copies it and starts its own ``postgres`` on a free port. As root
(CI), every PostgreSQL command runs as the ``postgres`` user, which initdb requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx

from tests.backends import unavailable

TESTS = Path(__file__).parent.parent
STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: object, what: str, timeout: float = STARTUP_SECONDS) -> None:
    """Poll a condition another process makes true (nothing in this process to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = STARTUP_SECONDS
) -> float:
    """Await a condition that only polling can see (another process, a server), within
    ``timeout``; how long it took."""
    start = time.monotonic()
    while True:
        if await condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(0.02)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- Redis -----------------------------------------------------------------------------------


class RedisServer:
    """``redis-server --port <free> --save ''``; stop() kills it, start() brings it back on
    the same port (clients reconnect to the same URL)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "PATH", FileNotFoundError("redis-server"))
        self.binary = binary or "redis-server"
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.port), f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Kill it (as a crash or a restart does: clients see their connections drop)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    if found := os.environ.get("JOBQL_TEST_PG_BINDIR"):
        return Path(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _give_to_postgres_user(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


class PostgresTemplate:
    """An initdb'ed data directory, made once per session, copied for every server."""

    def __init__(self) -> None:
        self._bindir = postgres_bindir()
        self._root: Path | None = None
        self._error: BaseException | None = None

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            unavailable(
                "PostgreSQL's initdb", "/usr/lib/postgresql/*/bin", FileNotFoundError("initdb")
            )
        assert self._bindir is not None
        return self._bindir

    def data_directory(self) -> Path:
        if self._error is not None:
            unavailable("initdb", str(self.bindir), self._error)
        if self._root is None:
            root = Path(tempfile.mkdtemp(prefix="jobql-pg-template-"))
            root.chmod(0o755)
            data = root / "data"
            _give_to_postgres_user(root)
            try:
                subprocess.run(
                    _as_postgres_user(
                        [
                            str(self.bindir / "initdb"),
                            "-D",
                            str(data),
                            "-U",
                            "postgres",
                            "--auth=trust",
                            "-E",
                            "UTF8",
                            "--no-sync",
                        ]
                    ),
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                self._error = exc
                unavailable("initdb", str(self.bindir), exc)
            self._root = root
        return self._root / "data"

    def cleanup(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL instance of our own on a free port. ``stop("immediate")`` is a crash;
    ``start()`` brings it back on the same port with the same data."""

    def __init__(self, template: PostgresTemplate) -> None:
        self.bindir = template.bindir
        self.root = Path(tempfile.mkdtemp(prefix="jobql-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        shutil.copytree(template.data_directory(), self.data, symlinks=True)
        _give_to_postgres_user(self.root)
        self.port = free_port()
        self.running = False

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        # fsync off: a crash of the server process (not of the machine) loses nothing, the
        # OS has the pages; commits stay synchronous, so every acknowledged commit survives
        # stop("immediate").
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._pg_ctl("-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        if not self.running:
            return
        self._pg_ctl("-m", mode, "-w", "stop")
        self.running = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout.strip()

    def create_database(self) -> str:
        """A new, empty database with a unique name; its URL."""
        name = f"jobql_fault_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def terminate_connections(self, database: str) -> int:
        """Drop every client connection to ``database`` (as a failover or a pooler
        restart does); how many were dropped."""
        out = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        return int(out or 0)

    def cleanup(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# -- jobql processes -------------------------------------------------------------------------


class JobqlProcess:
    """``python -m jobql.cli serve|worker`` with its own environment; its output goes to a
    file the test can read (``log()``), e.g. to find unobserved task exceptions."""

    def __init__(self, command: str, env: Mapping[str, str], directory: Path, name: str) -> None:
        self.command = command
        self.port = int(env["JOBQL_PORT"]) if "JOBQL_PORT" in env else None
        self.log_path = directory / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobql.cli", command],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=directory,  # no stray .env file is read
        )

    @property
    def base_url(self) -> str:
        assert self.port is not None, "a worker has no HTTP port"
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        if self.command == "serve":

            def ready() -> bool:
                self._check_alive()
                with contextlib.suppress(httpx.TransportError):
                    return httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200
                return False

            wait_for(ready, f"{self.log_path.stem} to be ready", timeout)
        else:
            wait_for(
                lambda: self._check_alive() or b"running" in self.log_path.read_bytes(),
                f"{self.log_path.stem} to run",
                timeout,
            )

    def _check_alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.log_path.stem} exited with {self.process.returncode}:\n{self.log()}"
            )
        return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for a clean exit; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


def jobql_env(
    database_url: str, broadcast_url: str, *, port: int | None = None, **settings: object
) -> dict[str, str]:
    """The environment of a jobql process on the test tasks, quick to rescue and to poll."""
    env = {
        "JOBQL_DATABASE_URL": database_url,
        "JOBQL_BROADCAST_URL": broadcast_url,
        "JOBQL_TASKS_FILE": str(TESTS / "tasks.toml"),
        "JOBQL_CREATE_DEV_KEY": "false",
        "JOBQL_LOG_FORMAT": "text",
        "JOBQL_HEARTBEAT_SECONDS": "0.5",
        "JOBQL_ENFORCE_LIMITS": "false",
    }
    if port is not None:
        env["JOBQL_PORT"] = str(port)
    for name, value in settings.items():
        env[f"JOBQL_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
