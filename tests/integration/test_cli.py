"""The `jobql` command as a user scripts it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jobql.repositories.database import create_engine, create_session_factory
from jobql.services.auth import KeyService
from tests.backends import REDIS_URL, Databases, check_redis


def jobql(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBQL_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "jobql.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_keys_create_prints_only_the_key_and_it_works(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    created = jobql("keys", "create", "--name", "ci", "--tier", "pro", db=db)
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1
    key = lines[0]
    assert key.startswith("jq_")

    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    caller = await KeyService(create_session_factory(engine)).authenticate(key)
    await engine.dispose()
    assert caller is not None
    assert caller.name == "ci"
    assert caller.tier == "pro"

    listed = jobql("keys", "list", db=db)
    assert key[:10] in listed.stdout
    assert key not in listed.stdout  # the full key is never shown again

    revoked = jobql("keys", "revoke", key[:10], db=db)
    assert revoked.returncode == 0
    assert "revoked" in jobql("keys", "list", db=db).stdout


def test_keys_create_rejects_a_bad_tier(tmp_path: Path) -> None:
    result = jobql("keys", "create", "--name", "x", "--tier", "Not A Tier", db=tmp_path / "t.db")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "tier" in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert jobql("migrate", db=db).returncode == 0
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"jobs", "job_events", "principals", "api_keys", "usage"} <= tables


def test_serve_and_worker_refuse_tasks_whose_provider_is_not_configured(tmp_path: Path) -> None:
    tasks = Path(__file__).parent.parent / "tasks_providers.toml"
    for command in ("serve", "worker"):
        result = subprocess.run(
            [sys.executable, "-m", "jobql.cli", command],
            env={
                **os.environ,
                "JOBQL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
                "JOBQL_TASKS_FILE": str(tasks),
                "JOBQL_PROVIDERS": "{}",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert "v1.chat uses 'openai'" in result.stderr
        assert "JOBQL_PROVIDERS" in result.stderr


# Runs `jobql worker` to the point where it is running, then reports which web modules the
# process holds and stops it the way an operator does (SIGTERM).
_WORKER_PROBE = """
import json, logging, os, signal, sys
from jobql.cli import main

WEB = ("starlette", "strawberry", "graphql", "uvicorn")

class Probe(logging.Handler):
    def emit(self, record):
        if record.getMessage().endswith(" running"):
            loaded = sorted({m for m in sys.modules if m.split(".")[0] in WEB})
            print(json.dumps({"web_modules": loaded}), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

logging.getLogger("jobql").addHandler(Probe())
sys.exit(main(["worker"]))
"""


def test_worker_process_imports_no_web_layer(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WORKER_PROBE],
        env={**os.environ, "JOBQL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert json.loads(line) == {"web_modules": []}


def test_serve_refuses_several_processes_on_sqlite_or_a_process_local_bus(
    tmp_path: Path,
) -> None:
    sqlite = jobql("serve", "--workers", "2", db=tmp_path / "s.db")
    assert sqlite.returncode == 2
    assert "--workers needs PostgreSQL" in sqlite.stderr
    memory_bus = subprocess.run(
        [sys.executable, "-m", "jobql.cli", "serve", "--workers", "2"],
        env={
            **os.environ,
            "JOBQL_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
            "JOBQL_BROADCAST_URL": "memory://",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert memory_bus.returncode == 2
    assert "--workers needs a shared event bus" in memory_bus.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@pytest.mark.postgres
@pytest.mark.redis
def test_serve_runs_several_processes_on_postgresql(databases: Databases, tmp_path: Path) -> None:
    check_redis()
    url = next(iter_postgres := databases.postgres())
    port = free_port()
    env = {
        **os.environ,
        "JOBQL_DATABASE_URL": url,
        "JOBQL_BROADCAST_URL": REDIS_URL,
        "JOBQL_TASKS_FILE": str(Path(__file__).parent.parent / "tasks.toml"),
        "JOBQL_PORT": str(port),
        # On PostgreSQL the development key is created only when asked for: once, here.
        "JOBQL_CREATE_DEV_KEY": "true",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "jobql.cli", "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/readyz").status_code == 200:
                        break
                time.sleep(0.1)  # another process is starting: nothing to await
            else:
                pytest.fail("jobql serve --workers 2 did not become ready")
            assert len(_children(server.pid)) >= 2
            key = subprocess.run(
                [sys.executable, "-m", "jobql.cli", "keys", "create", "--name", "multi"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()
            headers = {"Authorization": f"Bearer {key}"}
            submit = (
                'mutation { submitJob(input: {task: "classify", input: {text: "I love it"},'
                " wait: 10}) { ... on V1SubmitJobSuccess { job { status result } } } }"
            )
            for _ in range(4):  # answered by either process
                answer = http.post("/v1/graphql", json={"query": submit}, headers=headers)
                assert answer.json().get("data"), answer.text
                job = answer.json()["data"]["submitJob"]["job"]
                assert job["status"] == "SUCCEEDED"
                assert job["result"]["label"] == "positive"
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
        with contextlib.suppress(StopIteration):
            next(iter_postgres)
    assert stderr.count("created a development API key") == 1
