"""Workers under real faults, in real processes on a PostgreSQL of the test's own (and a
Redis of its own as the bus): every jobql connection dropped, the database crashed and
restarted, workers SIGKILLed and SIGTERMed. No job fails because of the infrastructure, no
event is lost or duplicated, and nothing goes unobserved in the workers' logs.

Measured times (stalls, rescues) are printed; run with -s to see them.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from gql import Client
from gql.transport.websockets import WebsocketsTransport

from tests.api import GRAPHQL_TRANSPORT_WS, SUBMIT, events_request
from tests.faults.conftest import Processes, create_key, migrate
from tests.faults.servers import (
    JobqlProcess,
    PostgresServer,
    RedisServer,
    free_port,
    jobql_env,
    wait_until,
)

UNOBSERVED = "Task exception was never retrieved"
TERMINAL_TYPES = {"JobSucceeded", "JobFailed", "JobCancelled"}

# Free text for a number of seconds: "t2" lasts 2 s, "t4" 4 s, "t8" 8 s, "t12" 12 s, at 25
# tokens a second; "fast8" 8 s at 100 tokens a second (the event writer is always busy).
TASKS = "\n".join(
    f"""
[v1.{name}{seconds}]
tier = "agent"
prompt_version = "t1"
prompt = "Write for a while about $topic."
max_output_tokens = 1000
model.provider = "simulated"
model.name = "sim-steady"
model.version = "sim-steady-1"
model.options = {{ ttft_ms = 0, tokens_per_second = {tps}, length = {seconds * tps} }}
pricing = {{ input_per_1k = 1.0, output_per_1k = 2.0 }}
input_schema.type = "object"
input_schema.required = ["topic"]
input_schema.properties = {{ topic = {{ type = "string" }} }}
"""
    for name, seconds, tps in [
        ("t", 2, 25),
        ("t", 4, 25),
        ("t", 8, 25),
        ("t", 12, 25),
        ("fast", 8, 100),
    ]
)


@dataclass
class Cluster:
    """One API process (no worker in it) and worker processes on the test's own servers."""

    pg: PostgresServer
    redis: RedisServer
    processes: Processes
    database_url: str
    key: str
    settings: dict[str, Any]
    api: JobqlProcess | None = None

    @property
    def database(self) -> str:
        return self.database_url.rsplit("/", 1)[1]

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")

    def env(self, **extra: Any) -> dict[str, str]:
        return jobql_env(self.database_url, self.redis.url, **{**self.settings, **extra})

    def start_api(self) -> JobqlProcess:
        env = self.env(inline_worker=False, migrate_on_start=False)
        env["JOBQL_PORT"] = str(free_port())
        self.api = self.processes.start("serve", env, "api")
        self.api.wait_ready()
        return self.api

    def start_worker(self, name: str, **extra: Any) -> JobqlProcess:
        worker = self.processes.start("worker", self.env(**extra), name)
        worker.wait_ready()
        return worker

    async def submit(self, task: str, n: int, retry_for: float = 0.0) -> list[str]:
        """Submit ``n`` jobs over HTTP (retrying for ``retry_for`` seconds while the API
        answers that the service is unavailable); their ids."""
        assert self.api is not None
        ids: list[str] = []
        async with httpx.AsyncClient(
            base_url=self.api.base_url, headers={"Authorization": f"Bearer {self.key}"}
        ) as http:
            for i in range(n):
                deadline = time.monotonic() + retry_for
                while True:
                    variables = {"input": {"task": task, "input": {"topic": f"job {i}"}}}
                    response = await http.post(
                        "/v1/graphql", json={"query": SUBMIT, "variables": variables}
                    )
                    body = response.json()
                    result = (body.get("data") or {}).get("submitJob") or {}
                    if result.get("__typename") == "V1SubmitJobSuccess":
                        ids.append(result["job"]["id"])
                        break
                    assert time.monotonic() < deadline, body
                    await asyncio.sleep(0.2)
        return ids

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A fresh connection per query: the test drops connections on purpose."""
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def jobs(self, ids: list[str]) -> dict[str, asyncpg.Record]:
        rows = await self.query(
            "SELECT id, status, attempts, last_seq, error, lease_owner FROM jobs"
            " WHERE id = ANY($1::text[])",
            ids,
        )
        return {row["id"]: row for row in rows}

    async def events(self, ids: list[str]) -> dict[str, list[asyncpg.Record]]:
        rows = await self.query(
            "SELECT job_id, seq, type, payload, created_at FROM job_events"
            " WHERE job_id = ANY($1::text[]) ORDER BY job_id, seq",
            ids,
        )
        by_job: dict[str, list[asyncpg.Record]] = {job_id: [] for job_id in ids}
        for row in rows:
            by_job[row["job_id"]].append(row)
        return by_job

    async def wait_statuses(
        self, ids: list[str], statuses: set[str], what: str, timeout: float = 60
    ) -> float:
        async def reached() -> bool:
            try:
                jobs = await self.jobs(ids)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False  # the database is down for the test too
            return len(jobs) == len(ids) and all(j["status"] in statuses for j in jobs.values())

        return await wait_until(reached, what, timeout)

    async def wait_streaming(self, ids: list[str], events: int = 4) -> None:
        """Until every job runs and has written some output."""

        async def streaming() -> bool:
            rows = await self.query(
                "SELECT count(*) FROM jobs WHERE id = ANY($1::text[])"
                " AND status = 'RUNNING' AND last_seq >= $2",
                ids,
                events,
            )
            return int(rows[0][0]) == len(ids)

        await wait_until(streaming, f"{len(ids)} jobs streaming")


@pytest.fixture
def cluster(
    pg_server: PostgresServer, redis_server: RedisServer, processes: Processes, tmp_path: Path
) -> Cluster:
    url = pg_server.create_database()
    migrate(url)
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(TASKS)
    settings: dict[str, Any] = {
        "tasks_file": tasks,
        "worker_poll_seconds": 0.5,
        # One key follows every job, one WebSocket each.
        "tier_limits": '{"standard": {"max_ws_connections": 100, "max_ws_subscriptions": 500}}',
    }
    return Cluster(pg_server, redis_server, processes, url, create_key(url), settings)


def assert_gapless(
    events: dict[str, list[asyncpg.Record]], jobs: dict[str, asyncpg.Record]
) -> None:
    """Every job's log: seq 1..last_seq, one JobStarted per attempt, one terminal, last."""
    for job_id, log in events.items():
        job = jobs[job_id]
        assert [e["seq"] for e in log] == list(range(1, job["last_seq"] + 1)), job_id
        types = [e["type"] for e in log]
        assert types.count("JobStarted") == job["attempts"], (job_id, types)
        assert sum(t in TERMINAL_TYPES for t in types) == 1, (job_id, types)
        assert types[-1] in TERMINAL_TYPES


def longest_stall(log: list[asyncpg.Record]) -> float:
    """The longest time between two consecutive events of one attempt."""
    gaps = [
        (b["created_at"] - a["created_at"]).total_seconds()
        for a, b in itertools.pairwise(log)
        if b["type"] != "JobStarted"
    ]
    return max(gaps, default=0.0)


def assert_clean_log(process: JobqlProcess) -> None:
    log = process.log()
    assert UNOBSERVED not in log, log[-4000:]
    assert "job failed unexpectedly" not in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]  # an outage is a line, not a traceback


# Every event insert takes 3 ms more: the event writer is nearly always in a statement,
# so the drops cut statements in flight (as on a busy server), not only idle connections.
SLOW_EVENT_WRITES = [
    "CREATE FUNCTION slow_statement() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN PERFORM pg_sleep(0.003); RETURN NULL; END $$",
    "CREATE TRIGGER slow_event_writes AFTER INSERT ON job_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION slow_statement()",
]


async def test_every_connection_dropped_three_times_fails_no_job(cluster: Cluster) -> None:
    for statement in SLOW_EVENT_WRITES:
        await cluster.query(statement)
    cluster.start_api()
    worker = cluster.start_worker("worker")
    ids = await cluster.submit("fast8", 20)
    await cluster.wait_streaming(ids)
    started = time.monotonic()
    dropped = []
    for i in range(3):
        if i:
            await asyncio.sleep(2)  # the fault schedule: three drops 2 s apart
        dropped.append(cluster.pg.terminate_connections(cluster.database))
    assert all(n >= 1 for n in dropped), dropped
    await cluster.wait_statuses(ids, {"SUCCEEDED", "FAILED", "CANCELLED"}, "every job to end")
    finished = time.monotonic() - started

    jobs = await cluster.jobs(ids)
    assert Counter(j["status"] for j in jobs.values()) == {"SUCCEEDED": 20}, [
        (j["status"], j["error"]) for j in jobs.values()
    ]
    events = await cluster.events(ids)
    assert_gapless(events, jobs)
    assert_clean_log(worker)
    stalls = sorted(longest_stall(log) for log in events.values())
    outages = worker.log().count("is unreachable")
    assert outages >= 1, "no drop cut a statement in flight: the test proved nothing"
    print(
        f"\nconnections dropped {dropped}, {outages} seen by the worker:"
        f" attempts {Counter(j['attempts'] for j in jobs.values())},"
        f" longest stall per job p50 {stalls[10]:.2f} s max {stalls[-1]:.2f} s,"
        f" all done {finished:.1f} s after the first drop"
    )


async def test_a_database_crash_and_restart_fails_no_job_and_the_worker_carries_on(
    cluster: Cluster,
) -> None:
    cluster.start_api()
    worker = cluster.start_worker("worker")
    ids = await cluster.submit("t12", 20)
    await cluster.wait_streaming(ids)
    stopped = time.monotonic()
    cluster.pg.stop("immediate")
    await asyncio.sleep(5)  # the fault: the database is gone for 5 s
    cluster.pg.start()
    restarted = time.monotonic()
    await cluster.wait_statuses(ids, {"SUCCEEDED", "FAILED", "CANCELLED"}, "every job to end")

    jobs = await cluster.jobs(ids)
    assert Counter(j["status"] for j in jobs.values()) == {"SUCCEEDED": 20}, [
        (j["status"], j["error"]) for j in jobs.values()
    ]
    events = await cluster.events(ids)
    assert_gapless(events, jobs)
    # The same worker process, never restarted, runs new jobs.
    assert worker.process.poll() is None
    more = await cluster.submit("t2", 5, retry_for=20)
    await cluster.wait_statuses(more, {"SUCCEEDED"}, "new jobs to succeed")
    assert_clean_log(worker)
    # The outage is told once (a statement on a connection that died with the server may
    # tell it once more right after), not once per job or per retry.
    assert 1 <= worker.log().count("is unreachable") <= 2, worker.log()[-4000:]
    stalls = sorted(longest_stall(log) for log in events.values())
    print(
        f"\ndatabase down {restarted - stopped:.1f} s:"
        f" attempts {Counter(j['attempts'] for j in jobs.values())},"
        f" longest stall per job p50 {stalls[10]:.2f} s max {stalls[-1]:.2f} s"
    )


def worker_pid(owner: str | None) -> int | None:
    """The process id in a worker id (host:pid:suffix)."""
    if owner is None:
        return None
    return int(owner.split(":")[-2])


async def collect(ws_url: str, key: str, job_id: str) -> list[int]:
    """A subscriber from the start to the end of a job's stream: the seqs it received."""
    transport = WebsocketsTransport(
        url=ws_url,
        init_payload={"Authorization": f"Bearer {key}"},
        subprotocols=[GRAPHQL_TRANSPORT_WS],
    )
    seqs: list[int] = []
    async with asyncio.timeout(120), Client(transport=transport) as session:
        async for item in session.subscribe(events_request(job_id)):
            if (seq := item["jobEvents"].get("seq")) is not None:
                seqs.append(seq)
    return seqs


async def test_sigkilled_workers_lose_no_job_and_cost_one_attempt_each(cluster: Cluster) -> None:
    cluster.settings.update(
        lease_seconds=2, lease_renew_seconds=0.5, max_attempts=12, worker_concurrency=6
    )
    api = cluster.start_api()
    workers = [cluster.start_worker(f"worker-{i}") for i in range(3)]
    began = time.monotonic()
    ids = await cluster.submit("t2", 100)
    ws_url = f"ws://127.0.0.1:{api.port}/v1/graphql"
    subscribers = {
        job_id: asyncio.create_task(collect(ws_url, cluster.key, job_id)) for job_id in ids
    }

    held_when_killed: Counter[str] = Counter()
    kills: list[tuple[datetime, list[str]]] = []  # when, and the jobs the worker held

    async def victim() -> JobqlProcess:
        """The ready worker holding the most running jobs (once one holds any). Only ready
        ones die, so that some worker is always up to rescue."""
        found: list[JobqlProcess] = []

        async def holding() -> bool:
            running = await cluster.query(
                "SELECT lease_owner FROM jobs WHERE id = ANY($1::text[]) AND status = 'RUNNING'",
                ids,
            )
            pids = Counter(worker_pid(row["lease_owner"]) for row in running)
            alive = {
                w.process.pid: w
                for w in workers
                if w.process.poll() is None and b"running" in w.log_path.read_bytes()
            }
            found[:] = [alive[pid] for pid, _ in pids.most_common() if pid in alive][:1]
            return bool(found)

        await wait_until(holding, "a worker holding jobs")
        return found[0]

    for kill in range(10):
        if kill:
            await asyncio.sleep(1)  # the fault schedule: a kill a second
        dying = await victim()
        dying.kill()
        killed_at = datetime.now(UTC)
        pid = dying.process.pid
        held = [
            row["id"]
            for row in await cluster.query(
                "SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status = 'RUNNING'"
                " AND lease_owner LIKE $2",
                ids,
                f"%:{pid}:%",
            )
        ]
        held_when_killed.update(held)
        kills.append((killed_at, held))
        # Restarted as an operator's supervisor does (it gets ready in the background).
        workers.remove(dying)
        workers.append(cluster.processes.start("worker", cluster.env(), f"worker-{3 + kill}"))
    timeline = [f"kills done {time.monotonic() - began:.1f} s"]

    await cluster.wait_statuses(ids, {"SUCCEEDED", "FAILED", "CANCELLED"}, "every job to end", 120)
    jobs = await cluster.jobs(ids)
    assert Counter(j["status"] for j in jobs.values()) == {"SUCCEEDED": 100}
    for job_id, job in jobs.items():
        assert job["attempts"] <= 1 + held_when_killed[job_id], (job_id, job["attempts"])
    events = await cluster.events(ids)
    assert_gapless(events, jobs)
    received = dict(zip(ids, await asyncio.gather(*subscribers.values()), strict=True))
    for job_id, seqs in received.items():
        assert seqs == [e["seq"] for e in events[job_id]], job_id  # exactly once, in order
    assert sum(held_when_killed.values()) >= 10
    for worker in workers:
        assert_clean_log(worker)
    # How long after a kill its jobs started again elsewhere (rescue, doorbell, claim).
    restarted = [
        max(
            min(
                e["created_at"]
                for e in events[job_id]
                if e["type"] == "JobStarted" and e["created_at"] > killed_at
            )
            - killed_at
            for job_id in held
        ).total_seconds()
        for killed_at, held in kills
        if held
    ]
    assert len(kills) == 10
    timeline.append(f"all checked {time.monotonic() - began:.1f} s after the first submit")
    print(
        f"\n{len(kills)} kills, {sum(held_when_killed.values())} jobs held by the killed:"
        f" running again {min(restarted):.1f}-{max(restarted):.1f} s after the kill"
        f" (lease 2 s, renew 0.5 s); extra attempts"
        f" {sum(j['attempts'] - 1 for j in jobs.values())}; {', '.join(timeline)}"
    )


async def test_sigterm_finishes_the_stopping_workers_jobs_in_a_grace_longer_than_the_lease(
    cluster: Cluster,
) -> None:
    cluster.settings.update(lease_seconds=1, lease_renew_seconds=0.25)
    cluster.start_api()
    stopping = cluster.start_worker("stopping", shutdown_grace_seconds=20)
    ids = await cluster.submit("t12", 8)
    await cluster.wait_streaming(ids)
    other = cluster.start_worker("other")  # ready to rescue what the stopping one leaves
    signalled = time.monotonic()
    stopping.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(stopping.process.wait, 30) == 0
    exited = time.monotonic() - signalled
    assert exited > 3  # it ran its jobs to their end, far beyond its 1 s lease
    jobs = await cluster.jobs(ids)
    assert {(j["status"], j["attempts"]) for j in jobs.values()} == {("SUCCEEDED", 1)}
    assert_gapless(await cluster.events(ids), jobs)
    assert "rescued" not in other.log()
    assert_clean_log(stopping)
    print(f"\nSIGTERM: the stopping worker finished its jobs and exited in {exited:.1f} s")


async def test_jobs_handed_back_on_sigterm_start_elsewhere_at_once(cluster: Cluster) -> None:
    # The other worker polls every 30 s: only the doorbell explains a quick start.
    cluster.settings.update(worker_poll_seconds=30)
    cluster.start_api()
    stopping = cluster.start_worker("stopping", shutdown_grace_seconds=0)
    ids = await cluster.submit("t4", 4)
    await cluster.wait_streaming(ids)
    other = cluster.start_worker("other")
    stopping.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(stopping.process.wait, 30) == 0

    async def restarted() -> bool:
        rows = await cluster.query(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND attempts = 2"
            " AND lease_owner LIKE $2",
            ids,
            f"%:{other.process.pid}:%",
        )
        return int(rows[0][0]) == len(ids)

    took = await wait_until(restarted, "the other worker to start the handed-back jobs", 5)
    assert took < 2, took
    await cluster.wait_statuses(ids, {"SUCCEEDED"}, "the jobs to succeed")
    assert_gapless(await cluster.events(ids), await cluster.jobs(ids))
    print(
        f"\nhanded-back jobs restarted on another worker {took:.2f} s after the stopping"
        " worker exited (its poll is 30 s)"
    )
