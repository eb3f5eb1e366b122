"""Shared benchmark plumbing: start/stop local servers, GraphQL helpers, statistics.

Everything here talks to 127.0.0.1 only, and every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BIN_DIR = Path(sys.executable).parent
TASKS_FILE = BENCH_DIR / "tasks.toml"
GRAPHQL_PATH = "/v1/graphql"
WS_PROTOCOL = "graphql-transport-ws"

SUBMIT = (
    "mutation($i: V1SubmitJobInput!){ submitJob(input: $i){ __typename "
    "... on V1SubmitJobSuccess { job { id } } } }"
)
SUBSCRIBE = (
    "subscription($id: ID!, $after: Int){ jobEvents(jobId: $id, after: $after){ __typename "
    "... on V1JobEvent { seq at } ... on V1OutputDelta { text } } }"
)
TERMINAL_TYPENAMES = frozenset({"V1JobSucceeded", "V1JobFailed", "V1JobCancelled", "V1NotFound"})


class BenchError(RuntimeError):
    """A benchmark could not run (a server did not start, a request failed)."""


# -- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Latency summary in milliseconds (nearest-rank percentiles)."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @staticmethod
    def of(seconds: Sequence[float]) -> Summary:
        if not seconds:
            raise BenchError("no samples")
        ms = sorted(s * 1000 for s in seconds)
        return Summary(
            n=len(ms),
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
            max=ms[-1],
            mean=statistics.fmean(ms),
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else math.inf


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_rate(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- CPU use ------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is the state (field 3 of stat)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    """Wall time and CPU time of this (client) process and one server, summed over spans."""

    wall: float = 0.0
    client: float = 0.0
    server: float = 0.0

    @property
    def client_pct(self) -> float:
        return 100 * self.client / self.wall if self.wall else 0.0

    @property
    def server_pct(self) -> float:
        return 100 * self.server / self.wall if self.wall else 0.0

    def describe(self) -> str:
        return f"server {self.server_pct:.0f}% / client {self.client_pct:.0f}% of one CPU"


class CpuMeter:
    """Adds each measured span's wall and CPU time to a CpuUse."""

    def __init__(self, server_pid: int, into: CpuUse) -> None:
        self.server_pid = server_pid
        self.into = into
        self._start = (0.0, 0.0, 0.0)

    def __enter__(self) -> CpuMeter:
        self._start = (
            time.perf_counter(),
            time.process_time(),
            process_cpu_seconds(self.server_pid),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        wall, client, server = self._start
        self.into.wall += time.perf_counter() - wall
        self.into.client += time.process_time() - client
        self.into.server += process_cpu_seconds(self.server_pid) - server


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process this benchmark started (and only it will stop)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    api_key: str = ""

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"http://{HOST}:{self.port}{GRAPHQL_PATH}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}{GRAPHQL_PATH}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _clean_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQL_")}
    env.update(overrides)
    return env


BENCH_TIER_LIMITS = json.dumps(
    {"standard": {"max_ws_connections": 100_000, "max_ws_subscriptions": 100_000}}
)


def jobql_env(workdir: Path, source: Path | None = None, **settings: str) -> dict[str, str]:
    """The embedded default (SQLite file, memory:// bus, inline worker) plus ``settings``.

    ``source``: a checkout of another revision whose ``jobql`` package the `jobql` commands
    import instead of the installed one (same venv, so same dependencies)."""
    env = _clean_env(
        {
            "JOBQL_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
            "JOBQL_BROADCAST_URL": "memory://",
            "JOBQL_TASKS_FILE": str(TASKS_FILE),
            "JOBQL_INLINE_WORKER": "true",
            # One benchmark key opens up to hundreds of WebSockets; the per-key WebSocket
            # caps (tier limits, not settable per key) are lifted like its other limits.
            "JOBQL_TIER_LIMITS": BENCH_TIER_LIMITS,
            **{f"JOBQL_{k.upper()}": v for k, v in settings.items()},
        }
    )
    if source is not None:
        # PYTHONPATH comes before site-packages, where the editable install points here.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(source.resolve()), env.get("PYTHONPATH", "")) if p
        )
    return env


def jobql_cli(
    workdir: Path, env: Mapping[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `jobql ARGS` in ``workdir`` (so no stray .env file is read), bounded in time."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(BIN_DIR / "jobql"), *args],
        env=dict(env),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_api_key(workdir: Path, env: Mapping[str, str]) -> str:
    """`jobql keys create` migrates the database and prints a new key."""
    done = jobql_cli(workdir, env, "keys", "create", "--name", "bench")
    key = done.stdout.strip()
    if done.returncode != 0 or not key.startswith("jq_"):
        raise BenchError(f"jobql keys create failed: {done.stderr.strip()[-2000:]}")
    return key


def set_key_limits(
    workdir: Path,
    env: Mapping[str, str],
    key: str,
    *,
    rate: str,
    cost_per_day: float,
    max_active: int,
) -> None:
    """`jobql keys set-limits` for the caller owning ``key`` (its prefix: first 10 chars)."""
    done = jobql_cli(
        workdir,
        env,
        "keys",
        "set-limits",
        key[:10],
        "--rate",
        rate,
        "--cost-per-day",
        str(cost_per_day),
        "--max-active",
        str(max_active),
    )
    if done.returncode != 0:
        raise BenchError(f"jobql keys set-limits failed: {done.stderr.strip()[-2000:]}")


async def wait_healthy(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchError(f"{server.name} exited early:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{server.http_url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise BenchError(f"{server.name} did not become healthy in {timeout}s:\n{server.log_tail()}")


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """SIGINT (uvicorn's graceful shutdown), then SIGKILL; only this process."""
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def spawn(
    name: str, command: Sequence[str], env: Mapping[str, str], workdir: Path, port: int
) -> Server:
    """Start ``command`` in ``workdir`` (so no stray .env file is read), output to a log."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    return Server(name, process, port, log_path)


# High enough that no benchmark is ever refused (rate: submits per 60 s).
UNLIMITED_RATE, UNLIMITED_COST_PER_DAY, UNLIMITED_ACTIVE = "1000000/60", 1_000_000.0, 1_000_000


def lift_key_limits(workdir: Path, env: Mapping[str, str], key: str) -> None:
    set_key_limits(
        workdir,
        env,
        key,
        rate=UNLIMITED_RATE,
        cost_per_day=UNLIMITED_COST_PER_DAY,
        max_active=UNLIMITED_ACTIVE,
    )


@contextlib.asynccontextmanager
async def serving_jobql(
    workdir: Path, env: Mapping[str, str], api_key: str, name: str = "jobql"
) -> AsyncIterator[Server]:
    """`jobql serve` with ``env`` (database already migrated, ``api_key`` already made)."""
    port = free_port()
    command = [str(BIN_DIR / "jobql"), "serve", "--host", HOST, "--port", str(port)]
    server = spawn(name, command, env, workdir, port)
    server.api_key = api_key
    try:
        await wait_healthy(server)
        yield server
    finally:
        stop_server(server)


@contextlib.asynccontextmanager
async def running_jobql(
    workdir: Path, name: str = "jobql", source: Path | None = None, **settings: str
) -> AsyncIterator[Server]:
    """`jobql serve` on a fresh SQLite file in ``workdir`` (unless ``settings`` name another
    database) with its own API key. Limits stay on (the default) but the key's are lifted so
    that no benchmark request is refused. ``source``: see `jobql_env`."""
    env = jobql_env(workdir, source, **settings)
    key = await asyncio.to_thread(create_api_key, workdir, env)
    await asyncio.to_thread(lambda: lift_key_limits(workdir, env, key))
    async with serving_jobql(workdir, env, key, name) as server:
        yield server


# -- PostgreSQL and Redis on 127.0.0.1 ----------------------------------------------------

POSTGRES_PORT = 5432
REDIS_URL = f"redis://{HOST}:6379/0"


def postgres_url(database: str) -> str:
    return f"postgresql+asyncpg://postgres@{HOST}:{POSTGRES_PORT}/{database}"


PSQL = ("psql", "-h", HOST, "-p", str(POSTGRES_PORT), "-U", "postgres")


def psql(sql: str, database: str = "postgres", timeout: float = 30.0) -> None:
    """Run one SQL command on the local PostgreSQL server as postgres (bounded in time)."""
    if shutil.which("psql") is None:
        raise BenchError("psql not found")
    try:
        done = subprocess.run(
            [*PSQL, "-d", database, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql],
            env=_clean_env({"PGCONNECT_TIMEOUT": "5"}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"psql timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise BenchError(f"psql failed: {done.stderr.strip()[-500:]}")


@contextlib.asynccontextmanager
async def fresh_postgres_database(prefix: str = "jobql_bench") -> AsyncIterator[str]:
    """CREATE DATABASE <prefix>_<random> on the local server, yield its SQLAlchemy URL, drop
    it afterwards. Raises BenchError (with the reason) if PostgreSQL is unreachable."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    await asyncio.to_thread(psql, f"CREATE DATABASE {name}")
    try:
        yield postgres_url(name)
    finally:
        with contextlib.suppress(BenchError):
            await asyncio.to_thread(psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def redis_reachable(url: str = REDIS_URL, timeout: float = 2.0) -> str | None:
    """None if a Redis server answers PING at ``url``'s host and port, else the reason."""
    rest = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"Redis at {host}:{port} unreachable ({exc.__class__.__name__}: {exc})"
    if not answer.startswith(b"+PONG"):
        return f"Redis at {host}:{port} answered {answer[:40]!r} to PING"
    return None


@contextlib.asynccontextmanager
async def running_raw_ws(workdir: Path) -> AsyncIterator[Server]:
    """The baseline: a bare Starlette WebSocket endpoint under uvicorn (bench/raw_ws_server.py)."""
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "raw_ws_server.py"), "--port", str(port)]
    server = spawn("raw-ws", command, _clean_env({}), workdir, port)
    try:
        await wait_healthy(server)
        yield server
    finally:
        stop_server(server)


# -- GraphQL over HTTP and WebSocket ------------------------------------------------------


def http_client(server: Server, *, connections: int = 1) -> httpx.AsyncClient:
    """A keep-alive client for one simulated caller."""
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def submit_job(client: httpx.AsyncClient, server: Server, task: str, text: str) -> str:
    """submitJob; returns the job id."""
    response = await client.post(
        server.graphql_url,
        json={"query": SUBMIT, "variables": {"i": {"task": task, "input": {"text": text}}}},
    )
    if response.status_code != 200:
        raise BenchError(f"submitJob: HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    result = (body.get("data") or {}).get("submitJob") or {}
    if result.get("__typename") != "V1SubmitJobSuccess":
        raise BenchError(f"submitJob failed: {json.dumps(body)[:300]}")
    job_id: str = result["job"]["id"]
    return job_id


ACTIVE_JOBS = "{ jobs(first: 1, status: [QUEUED, RUNNING]) { edges { node { id } } } }"


async def wait_idle(client: httpx.AsyncClient, server: Server, timeout: float = 120.0) -> float:
    """Wait until the caller has no queued or running job; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        response = await client.post(server.graphql_url, json={"query": ACTIVE_JOBS})
        response.raise_for_status()
        if not response.json()["data"]["jobs"]["edges"]:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise BenchError(f"jobs still active after {timeout}s")


@contextlib.asynccontextmanager
async def graphql_ws(server: Server) -> AsyncIterator[ClientConnection]:
    """An initialised graphql-transport-ws connection (no compression, for both sides)."""
    async with connect(
        server.ws_url,
        subprotocols=[WS_PROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_size=2**24,
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"Authorization": f"Bearer {server.api_key}"},
                }
            )
        )
        async with asyncio.timeout(10):
            ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise BenchError(f"expected connection_ack, got {ack}")
        yield ws


async def send_subscribe(
    ws: ClientConnection, sub_id: str, query: str, variables: Mapping[str, Any]
) -> None:
    await ws.send(
        json.dumps(
            {
                "id": sub_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": dict(variables)},
            }
        )
    )


@dataclass(frozen=True)
class Frame:
    """One `next` message (or the final `complete`) as the client received it."""

    at: float  # time.perf_counter() when recv() returned
    size: int  # bytes of the raw frame text
    typename: str | None  # None for `complete`
    text: str
    event_at: float | None = None  # the event's `at` (server clock, epoch seconds), if any


async def recv_frame(ws: ClientConnection, sub_id: str) -> Frame:
    """The next `next`/`complete` frame of ``sub_id``; answers pings, raises on errors."""
    while True:
        raw = await ws.recv()
        at = time.perf_counter()
        message = json.loads(raw)
        kind = message.get("type")
        if kind == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            continue
        if kind == "pong" or message.get("id") != sub_id:
            continue
        if kind == "complete":
            return Frame(at, len(raw), None, "")
        if kind == "error":
            raise BenchError(f"subscription error: {json.dumps(message)[:300]}")
        if kind != "next":
            continue
        payload = message.get("payload") or {}
        if payload.get("errors"):
            raise BenchError(f"subscription error: {json.dumps(payload)[:300]}")
        event = (payload.get("data") or {}).get("jobEvents") or {}
        stamp = event.get("at")
        event_at = datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else None
        return Frame(at, len(raw), event.get("__typename"), event.get("text") or "", event_at)


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "python": sys.version.split()[0],
    }
