"""The `jobql` command as a user scripts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobql.repositories.database import create_engine, create_session_factory
from jobql.services.auth import KeyService


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
