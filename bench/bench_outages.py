"""Outages, measured: what clients see while a server is down, and how long after it returns
each part works again. The numbers in docs/deploy.md come from here.

    .venv/bin/python bench/bench_outages.py           # print the report
    .venv/bin/python bench/bench_outages.py --write   # ... and update docs/deploy.md
    .venv/bin/python bench/bench_outages.py --only db,kill

It starts its own PostgreSQL (initdb + pg_ctl on a free port, in a temp dir) and its own
redis-server on a free port (tests/faults/servers.py), never the shared servers, and on them
one API process (`jobql serve`, no inline worker) and `jobql worker` processes, with the
default settings except where a scenario names one. Tasks: bench/tasks_outages.toml
(simulated streams). Clients follow their jobs over graphql-transport-ws and resubscribe
with `after` whenever a stream ends early, so "exactly once" is checked across outages.

Scenarios:
  bus5, bus30   the Redis event bus killed for 5 s / 30 s, then restarted
  pgbus5        the postgres:// event bus's server stopped for 5 s (the job database stays up)
  db            the job database (PostgreSQL) stopped with -m immediate for 5 s
  conns         every jobql database connection terminated three times, 2 s apart
  kill          a worker SIGKILLed while it runs 5 jobs (another worker is up)
  term          a worker SIGTERMed while it runs 5 jobs of 25 s, grace 40 s, lease 10 s,
                and again with no grace (its jobs are handed back to the other worker)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from tests.faults.servers import (  # noqa: E402
    JobqlProcess,
    PostgresServer,
    PostgresTemplate,
    RedisServer,
    free_port,
)

TASKS_FILE = BENCH_DIR / "tasks_outages.toml"
DEPLOY_DOC = REPO_DIR / "docs" / "deploy.md"
BEGIN = "<!-- bench/bench_outages.py: generated results begin -->"
END = "<!-- bench/bench_outages.py: generated results end -->"
TERMINAL = {"V1JobSucceeded", "V1JobFailed", "V1JobCancelled"}
GIVE_UP = 60.0  # seconds after a server returns: "not within 60 s"
# --src: a checkout of another revision whose jobql package the processes import instead.
SOURCE: Path | None = None

SUBMIT = """mutation($i: V1SubmitJobInput!, $k: String) { submitJob(input: $i, idempotencyKey: $k) {
  __typename ... on V1SubmitJobSuccess { job { id } } ... on V1Error { code } } }"""
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { __typename } }"
JOB = "query($id: ID!) { job(id: $id) { ... on V1Job { status attempts } } }"
EVENTS = """subscription($id: ID!, $after: Int) { jobEvents(jobId: $id, after: $after) {
  __typename ... on V1JobEvent { seq } ... on V1JobStarted { attempt }
  ... on V1Error { code } } }"""


class Failed(RuntimeError):
    pass


# -- the processes ---------------------------------------------------------------------------


@dataclass
class Stack:
    workdir: Path
    db: PostgresServer
    database_url: str
    bus_url: str
    key: str = ""
    api: JobqlProcess | None = None
    workers: list[JobqlProcess] = field(default_factory=list)

    def env(self, **settings: object) -> dict[str, str]:
        env = {
            "JOBQL_DATABASE_URL": self.database_url,
            "JOBQL_BROADCAST_URL": self.bus_url,
            "JOBQL_TASKS_FILE": str(TASKS_FILE),
            "JOBQL_CREATE_DEV_KEY": "false",
            "JOBQL_INLINE_WORKER": "false",
            "JOBQL_ENFORCE_LIMITS": "false",
            "JOBQL_LOG_FORMAT": "text",
            # One key follows every job here (20 WebSockets in one scenario).
            "JOBQL_TIER_LIMITS": '{"standard": {"max_ws_connections": 1000}}',
        }
        env.update({f"JOBQL_{k.upper()}": str(v) for k, v in settings.items()})
        if SOURCE is not None:
            env["PYTHONPATH"] = str(SOURCE)
        return env

    def start_api(self) -> JobqlProcess:
        self.api = JobqlProcess("serve", self.env(port=free_port()), self.workdir, "api")
        self.api.wait_ready()
        return self.api

    def start_worker(self, name: str, **settings: object) -> JobqlProcess:
        worker = JobqlProcess("worker", self.env(**settings), self.workdir, name)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def close(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            process.close()


@contextlib.asynccontextmanager
async def stack(
    template: PostgresTemplate, bus: str, *, with_worker: bool = True
) -> AsyncIterator[tuple[Stack, Any]]:
    """A PostgreSQL job database, a bus server ("redis" or "postgres"), an API process and
    (``with_worker``) one worker. Yields the stack and the bus server."""
    workdir = Path(tempfile.mkdtemp(prefix="jobql-outage-"))
    db = PostgresServer(template)
    bus_server: Any = None
    running: Stack | None = None
    try:
        await asyncio.to_thread(db.start)
        database_url = await asyncio.to_thread(db.create_database)
        if bus == "redis":
            bus_server = RedisServer(workdir)
            await asyncio.to_thread(bus_server.start)
            bus_url = bus_server.url
        else:
            bus_server = PostgresServer(template)
            await asyncio.to_thread(bus_server.start)
            bus_url = bus_server.url(driver="postgres")
        running = Stack(workdir, db, database_url, bus_url)
        running.key = await asyncio.to_thread(create_key, running)
        await asyncio.to_thread(running.start_api)
        if with_worker:
            await asyncio.to_thread(running.start_worker, "worker-1")
        yield running, bus_server
    finally:
        if running is not None:
            running.close()
        if isinstance(bus_server, RedisServer):
            bus_server.stop()
        elif isinstance(bus_server, PostgresServer):
            bus_server.cleanup()
        db.cleanup()


def create_key(running: Stack) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "jobql.cli", "keys", "create", "--name", "outages"],
        env={**running.env(), "PATH": "/usr/bin:/bin"},
        cwd=running.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise Failed(f"jobql keys create: {done.stderr[-1000:]}")
    return done.stdout.strip()


# -- clients ---------------------------------------------------------------------------------


class Client:
    def __init__(self, running: Stack) -> None:
        assert running.api is not None
        self.base = running.api.base_url
        self.key = running.key
        self.http = httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def graphql(self, query: str, **variables: Any) -> tuple[int, dict[str, Any]]:
        try:
            response = await self.http.post(
                "/v1/graphql", json={"query": query, "variables": variables}
            )
        except httpx.HTTPError as exc:
            return 0, {"errors": [{"message": type(exc).__name__}]}
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"errors": [{"message": response.text[:100]}]}
        return response.status_code, body

    async def submit(self, task: str, key: str | None = None) -> tuple[str | None, str]:
        """(job id or None, what the client saw: a typename or "HTTP <status> <code>")."""
        status, body = await self.graphql(SUBMIT, i={"task": task, "input": {"text": "x"}}, k=key)
        result = (body.get("data") or {}).get("submitJob")
        if result:
            if result["__typename"] == "V1SubmitJobSuccess":
                return result["job"]["id"], "V1SubmitJobSuccess"
            return None, result["__typename"]
        codes = {((e.get("extensions") or {}).get("code")) for e in body.get("errors", [])}
        return None, f"HTTP {status} {'/'.join(sorted(str(c) for c in codes))}"

    async def submit_until_accepted(self, task: str, give_up: float = GIVE_UP) -> str:
        deadline = time.monotonic() + give_up
        while time.monotonic() < deadline:
            job_id, _ = await self.submit(task)
            if job_id:
                return job_id
            await asyncio.sleep(0.05)
        raise Failed(f"no submit accepted within {give_up:.0f} s")

    async def job(self, job_id: str) -> dict[str, Any]:
        _, body = await self.graphql(JOB, id=job_id)
        job: dict[str, Any] = (body.get("data") or {}).get("job") or {}
        return job

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Follower:
    """Follows one job to its terminal event, resubscribing with `after` when cut."""

    client: Client
    job_id: str
    seqs: list[int] = field(default_factory=list)
    deltas_at: list[float] = field(default_factory=list)
    attempts_at: dict[int, float] = field(default_factory=dict)
    terminal: str | None = None
    terminal_at: float | None = None
    resubscribes: int = 0
    task: asyncio.Task[None] | None = None

    def start(self) -> Follower:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        ws_url = self.client.base.replace("http://", "ws://") + "/v1/graphql"
        while self.terminal is None:
            with contextlib.suppress(OSError, ConnectionClosed, TimeoutError):
                await self._follow(ws_url)
            if self.terminal is None:
                self.resubscribes += 1
                await asyncio.sleep(0.2)

    async def _follow(self, ws_url: str) -> None:
        async with connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=5) as ws:  # type: ignore[list-item]
            init = {"Authorization": f"Bearer {self.client.key}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            async with asyncio.timeout(5):
                await ws.recv()
            after = self.seqs[-1] if self.seqs else None
            payload = {"query": EVENTS, "variables": {"id": self.job_id, "after": after}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue
                if message.get("type") != "next":
                    return  # complete or error: resubscribe unless terminal
                event = (message["payload"].get("data") or {}).get("jobEvents") or {}
                kind = event.get("__typename")
                if kind == "V1Heartbeat":
                    continue
                if "seq" not in event:
                    return  # an error as data (e.g. ServiceUnavailable): resubscribe
                now = time.monotonic()
                self.seqs.append(int(event["seq"]))
                if kind == "V1OutputDelta":
                    self.deltas_at.append(now)
                elif kind == "V1JobStarted":
                    self.attempts_at[int(event["attempt"])] = now
                elif kind in TERMINAL:
                    self.terminal, self.terminal_at = kind, now
                    return

    @property
    def exactly_once(self) -> bool:
        return self.seqs == list(range(1, len(self.seqs) + 1)) and self.terminal is not None

    async def first_delta_after(self, t: float, give_up: float = GIVE_UP) -> float | None:
        """Seconds from ``t`` to the first delta received after it (None: none in time)."""
        return await until(lambda: next((d - t for d in self.deltas_at if d > t), None), give_up)

    async def wait_terminal(self, give_up: float = 180.0) -> None:
        assert self.task is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(give_up):
                await asyncio.shield(self.task)


async def until(probe: Callable[[], Any], give_up: float = GIVE_UP) -> Any:
    """Poll ``probe`` (state of other processes) every 20 ms until it is not None."""
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        value = probe()
        if isinstance(value, Awaitable):
            value = await value
        if value is not None and value is not False:
            return value
        await asyncio.sleep(0.02)
    return None


async def seconds_until(probe: Callable[[], Awaitable[bool]], t0: float) -> float | None:
    async def check() -> float | None:
        return time.monotonic() - t0 if await probe() else None

    value: float | None = await until(check)
    return value


def fmt(seconds: float | None) -> str:
    return "not within 60 s" if seconds is None else f"{seconds:.2f} s"


async def start_jobs(client: Client, task: str, n: int) -> list[Follower]:
    followers = []
    for _ in range(n):
        followers.append(Follower(client, await client.submit_until_accepted(task)).start())
    for follower in followers:
        if await until(lambda f=follower: bool(f.deltas_at), 30) is None:  # type: ignore[misc]
            raise Failed("a job produced no output within 30 s")
    return followers


async def cancel_all(client: Client, followers: list[Follower]) -> None:
    for follower in followers:
        if follower.terminal is None:
            await client.graphql(CANCEL, id=follower.job_id)
    for follower in followers:
        await follower.wait_terminal()


def outcome(followers: list[Follower]) -> str:
    statuses = Counter(f.terminal or "no terminal" for f in followers)
    return ", ".join(f"{n} {s.removeprefix('V1Job').lower()}" for s, n in sorted(statuses.items()))


# -- scenarios -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    during: str
    recovery: list[tuple[str, str]]
    integrity: str


async def bus_outage(template: PostgresTemplate, bus: str, down: float) -> Row:
    async with stack(template, bus) as (running, bus_server):
        client = Client(running)
        try:
            followers = await start_jobs(client, "outage_long", 3)
            await asyncio.to_thread(bus_server.stop)
            await asyncio.sleep(1.0)
            _, submit_during = await client.submit("outage_medium")
            ready_during = await client.ready()
            await asyncio.sleep(max(0.0, down - 1.0))
            await asyncio.to_thread(bus_server.start)
            t0 = time.monotonic()
            resumed = await asyncio.gather(*(f.first_delta_after(t0) for f in followers))
            t_ready = await seconds_until(client.ready, t0)
            t_submit = time.monotonic()
            fresh = Follower(client, await client.submit_until_accepted("outage_long")).start()
            first_delta = await fresh.first_delta_after(t_submit)
            t_cancel = time.monotonic()
            await client.graphql(CANCEL, id=followers[0].job_id)
            await followers[0].wait_terminal(GIVE_UP)
            cancelled = followers[0].terminal_at - t_cancel if followers[0].terminal_at else None
            everyone = [*followers, fresh]
            await cancel_all(client, everyone)
            lag = [r for r in resumed if r is not None]
            return Row(
                f"{'Redis' if bus == 'redis' else 'postgres://'} bus down {down:.0f} s",
                f"submit: {submit_during}; /readyz: {'200' if ready_during else '503'}",
                [
                    ("/readyz 200", fmt(t_ready)),
                    ("running streams resume (slowest)", fmt(max(lag) if len(lag) == 3 else None)),
                    ("new job: submit to first delta", fmt(first_delta)),
                    ("cancel to JobCancelled", fmt(cancelled)),
                ],
                f"{sum(f.exactly_once for f in everyone)}/{len(everyone)} streams exactly once; "
                f"{outcome(everyone)}",
            )
        finally:
            await client.aclose()


async def db_outage(template: PostgresTemplate) -> Row:
    async with stack(template, "redis") as (running, _):
        client = Client(running)
        try:
            followers = await start_jobs(client, "outage_medium", 5)
            await asyncio.to_thread(running.db.stop, "immediate")
            t_down = time.monotonic()
            answers: Counter[str] = Counter()
            acknowledged: list[str] = []
            stop_submitting = asyncio.Event()
            t_first_ok: list[float] = []

            async def submitter() -> None:
                key = uuid.uuid4().hex
                while not stop_submitting.is_set():
                    job_id, seen = await client.submit("outage_medium", key)
                    if time.monotonic() - t_down < 5.0:
                        answers[seen] += 1
                    if job_id:
                        acknowledged.append(job_id)
                        if not t_first_ok:
                            t_first_ok.append(time.monotonic())
                        key = uuid.uuid4().hex
                    await asyncio.sleep(0.25)

            task = asyncio.create_task(submitter())
            await asyncio.sleep(5.0)
            await asyncio.to_thread(running.db.start)
            t0 = time.monotonic()
            t_ready = await seconds_until(client.ready, t0)
            await until(lambda: bool(t_first_ok), GIVE_UP)
            stop_submitting.set()
            await task
            t_submit = t_first_ok[0] - t0 if t_first_ok and t_first_ok[0] > t0 else None
            for follower in followers:
                await follower.wait_terminal()
            statuses = Counter()
            for job_id in acknowledged:
                job = await client.job(job_id)
                statuses[job.get("status", "missing")] += 1
            attempts = [(await client.job(f.job_id)).get("attempts") for f in followers]
            return Row(
                "PostgreSQL down 5 s (-m immediate)",
                "submits: " + ", ".join(f"{n} x {k}" for k, n in answers.most_common()),
                [
                    ("/readyz 200", fmt(t_ready)),
                    ("first submit accepted", fmt(t_submit)),
                ],
                f"running jobs: {outcome(followers)} (attempts {attempts}); "
                f"{sum(f.exactly_once for f in followers)}/{len(followers)} streams exactly "
                f"once; {len(acknowledged)} acknowledged submits: "
                + ", ".join(f"{n} {s.lower()}" for s, n in statuses.items()),
            )
        finally:
            await client.aclose()


async def connections_dropped(template: PostgresTemplate) -> Row:
    async with stack(template, "redis") as (running, _):
        client = Client(running)
        try:
            followers = await start_jobs(client, "outage_medium", 20)
            t0 = time.monotonic()
            database = running.database_url.rsplit("/", 1)[1]
            dropped = []
            for i in range(3):
                if i:
                    await asyncio.sleep(2.0)
                dropped.append(await asyncio.to_thread(running.db.terminate_connections, database))
            for follower in followers:
                await follower.wait_terminal()
            done = max(f.terminal_at or t0 for f in followers) - t0
            attempts = Counter([(await client.job(f.job_id)).get("attempts") for f in followers])
            return Row(
                "every jobql DB connection terminated 3 times 2 s apart (20 jobs of 10 s)",
                f"{sum(dropped)} connections dropped",
                [("all 20 jobs terminal after the first drop", fmt(done))],
                f"{outcome(followers)}; attempts {dict(sorted(attempts.items()))}; "
                f"{sum(f.exactly_once for f in followers)}/20 streams exactly once",
            )
        finally:
            await client.aclose()


async def worker_killed(template: PostgresTemplate) -> Row:
    async with stack(template, "redis", with_worker=False) as (running, _):
        client = Client(running)
        try:
            victim = await asyncio.to_thread(running.start_worker, "victim")
            followers = await start_jobs(client, "outage_job", 5)
            await asyncio.to_thread(running.start_worker, "survivor")
            await asyncio.to_thread(victim.kill)
            t0 = time.monotonic()
            rescued = await until(
                lambda: all(2 in f.attempts_at for f in followers) or None, GIVE_UP
            )
            rescue = [f.attempts_at[2] - t0 for f in followers] if rescued else []
            for follower in followers:
                await follower.wait_terminal()
            return Row(
                "a worker SIGKILLed running 5 jobs (default lease)",
                "its streams pause",
                [
                    (
                        "jobs restarted on the other worker (first / last)",
                        f"{min(rescue):.2f} / {max(rescue):.2f} s" if rescue else "not within 60 s",
                    )
                ],
                f"{outcome(followers)}; "
                f"{sum(f.exactly_once for f in followers)}/5 streams exactly once",
            )
        finally:
            await client.aclose()


# Shorter than the jobs and the grace, whatever the defaults are.
SHORT_LEASE = {"lease_seconds": 10, "lease_renew_seconds": 3}


async def worker_stopped(template: PostgresTemplate) -> list[Row]:
    rows = []
    async with stack(template, "redis", with_worker=False) as (running, _):
        client = Client(running)
        try:
            stopping = await asyncio.to_thread(
                running.start_worker, "stopping", shutdown_grace_seconds=40, **SHORT_LEASE
            )
            followers = await start_jobs(client, "outage_job", 5)
            await asyncio.to_thread(running.start_worker, "other", **SHORT_LEASE)
            t0 = time.monotonic()
            code = await asyncio.to_thread(stopping.terminate, 90)
            exited = time.monotonic() - t0
            for follower in followers:
                await follower.wait_terminal()
            restarted = sum(2 in f.attempts_at for f in followers)
            rows.append(
                Row(
                    "a worker SIGTERMed running 5 jobs of 25 s, grace 40 s, lease 10 s",
                    "streams go on",
                    [("worker exited after", f"{exited:.2f} s (code {code})")],
                    f"{outcome(followers)}; {restarted} restarted elsewhere; "
                    f"{sum(f.exactly_once for f in followers)}/5 streams exactly once",
                )
            )
            handing = await asyncio.to_thread(
                running.start_worker, "handing-back", shutdown_grace_seconds=0
            )
            # The other worker is busy with nothing; the new jobs go to whichever claims first.
            followers = await start_jobs(client, "outage_job", 5)
            mine = [f for f in followers if await _running_on(running, f, handing)]
            t0 = time.monotonic()
            await asyncio.to_thread(handing.terminate, 90)
            moved = await until(lambda: all(2 in f.attempts_at for f in mine) or None, GIVE_UP)
            took = [f.attempts_at[2] - t0 for f in mine] if moved else []
            await cancel_all(client, followers)
            rows.append(
                Row(
                    "a worker SIGTERMed with no grace (jobs handed back)",
                    f"{len(mine)} of its jobs handed back",
                    [
                        (
                            "handed-back jobs restarted on the other worker (last)",
                            fmt(max(took) if took else None) if mine else "n/a",
                        )
                    ],
                    f"{sum(f.exactly_once for f in followers)}/5 streams exactly once",
                )
            )
        finally:
            await client.aclose()
    return rows


async def _running_on(running: Stack, follower: Follower, worker: JobqlProcess) -> bool:
    """Whether ``worker`` holds the job's lease (its pid is in the worker id)."""
    database = running.database_url.rsplit("/", 1)[1]
    owner = await asyncio.to_thread(
        running.db.psql, f"SELECT lease_owner FROM jobs WHERE id = '{follower.job_id}'", database
    )
    return f":{worker.process.pid}:" in owner


SCENARIOS: dict[str, Callable[[PostgresTemplate], Awaitable[Row | list[Row]]]] = {
    "bus5": lambda t: bus_outage(t, "redis", 5.0),
    "bus30": lambda t: bus_outage(t, "redis", 30.0),
    "pgbus5": lambda t: bus_outage(t, "postgres", 5.0),
    "db": db_outage,
    "conns": connections_dropped,
    "kill": worker_killed,
    "term": worker_stopped,
}


def report(rows: list[Row], errors: list[str], command: str) -> str:
    import platform

    lines = [
        f"Command: `{command}` (from the repository root), "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} CPUs, Python {platform.python_version()}.",
        "",
        "| fault | while it lasts | after it ends | integrity |",
        "|---|---|---|---|",
    ]
    for row in rows:
        recovery = "<br>".join(f"{what}: **{value}**" for what, value in row.recovery)
        lines.append(f"| {row.scenario} | {row.during} | {recovery} | {row.integrity} |")
    lines.extend(f"\n- {error}" for error in errors)
    return "\n".join(lines) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--write", action="store_true", help="update docs/deploy.md")
    parser.add_argument("--src", type=Path, help="run the jobql of this checkout instead")
    args = parser.parse_args()
    global SOURCE
    SOURCE = args.src.resolve() if args.src else None
    template = PostgresTemplate()
    rows: list[Row] = []
    errors: list[str] = []
    try:
        for name in args.only.split(","):
            print(f"running {name} ...", file=sys.stderr)
            try:
                result = await SCENARIOS[name](template)
            except Exception as exc:  # a scenario that breaks is reported, the rest run
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            rows.extend(result if isinstance(result, list) else [result])
    finally:
        template.cleanup()
    command = "python bench/bench_outages.py" + (" --write" if args.write else "")
    if args.only != ",".join(SCENARIOS):
        command += f" --only {args.only}"
    if args.src:
        command += f" --src {args.src}"
    text = report(rows, errors, ".venv/bin/" + command)
    print(text)
    if args.write:
        doc = DEPLOY_DOC.read_text()
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DEPLOY_DOC.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
