"""Benchmark 4: what an idempotency key and the three client limits add to one submitJob.

Target (from the issue): submitJob with an idempotency key and the rate, cost and
concurrency limits on, against the same submit with them off, same run: added p50 <= 2 ms,
on SQLite and on PostgreSQL.

Per database, one fresh database and one caller (`jobql keys create`, then `jobql keys
set-limits` so high that nothing is ever refused), shared by servers that differ only in
settings: `JOBQL_ENFORCE_LIMITS=false` and `=true` (and, on PostgreSQL when Redis answers,
`=true` with `JOBQL_REDIS_URL`, the Redis-backed rate limiter). No worker runs
(`JOBQL_INLINE_WORKER=false`), so only the acknowledgement path is measured; before every
block the caller's jobs are settled (set CANCELLED, as finished jobs would be), so the
concurrency check counts at most one block's worth of active jobs, as a real caller holds
at most its `max_active_jobs`. After the warm-up the caller gets a history of ``history``
finished jobs (copies of one of its own, spread over the last day, each with its own
idempotency key still in the window): what a submit costs must not grow with it.

Configurations, all with the same GraphQL document (`idempotencyKey: $k`, null when "no
key"), each submit with a fresh key where there is one:

    off        no key,  limits off      the baseline
    key        key,     limits off      the key lookup alone
    limits     no key,  limits on       the three limits alone
    on         key,     limits on       what the target is about
    on, Redis  key,     limits on, rate counters in Redis (PostgreSQL only)

One client, sequential requests on one keep-alive connection per server, so the numbers
are the cost of one request, not queueing. Blocks of ``per_block`` submits per
configuration, the order rotated every round so drift on a noisy machine hits every
configuration alike; each block starts with two unmeasured submits (the other server has
just written to the database, which empties SQLite's page cache). On PostgreSQL, `ANALYZE`
runs once after the warm-up: a live database has planner statistics, a fresh one does not
until autovacuum's first pass, and without them the key lookup goes through the wrong index.

After the HTTP run the benchmark times the statements the limits add, with jobql's own
engine and repositories against the same database (servers stopped), to show where the
added time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from benchkit import (
    REDIS_URL,
    UNLIMITED_ACTIVE,
    BenchError,
    CpuMeter,
    CpuUse,
    Server,
    Summary,
    create_api_key,
    http_client,
    jobql_env,
    lift_key_limits,
    psql,
    serving_jobql,
)

TARGET_ADDED_P50_MS = 2.0


SUBMIT_KEYED = (
    "mutation($i: V1SubmitJobInput!, $k: String){ submitJob(input: $i, idempotencyKey: $k){ "
    "__typename ... on V1SubmitJobSuccess { deduplicated job { id } } } }"
)
VIEWER = (
    "{ viewer { id activeJobs limits { rateLimit rateWindowSeconds dailyCostCapUsd "
    "maxActiveJobs } } }"
)


@dataclass(frozen=True)
class Config:
    name: str
    server: str  # key of SERVERS
    key: bool  # send a fresh idempotency key
    description: str


SERVERS: dict[str, dict[str, str]] = {
    "limits-off": {"enforce_limits": "false"},
    "limits-on": {"enforce_limits": "true"},
    "limits-on-redis": {"enforce_limits": "true", "redis_url": REDIS_URL},
}
CONFIGS = (
    Config("off", "limits-off", False, "no key, limits off"),
    Config("key", "limits-off", True, "key, limits off"),
    Config("limits", "limits-on", False, "no key, limits on"),
    Config("on", "limits-on", True, "key + limits on"),
)
REDIS_CONFIG = Config("on, Redis", "limits-on-redis", True, "key + limits on, Redis limiter")
BASELINE = "off"
PREFILL = 1000  # earlier hits in the rate window when the limiter alone is timed


@dataclass
class ConfigRun:
    config: Config
    samples: list[float] = field(default_factory=list)
    block_p50s: list[float] = field(default_factory=list)  # ms, one per round
    cpu: CpuUse = field(default_factory=CpuUse)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.samples)

    @property
    def server_cpu_ms(self) -> float:
        """Server-process CPU per submit (jobql only; PostgreSQL's backends not included)."""
        return 1000 * self.cpu.server / len(self.samples) if self.samples else 0.0


@dataclass(frozen=True)
class Step:
    name: str
    summary: Summary | None
    note: str = ""


@dataclass
class LimitsResult:
    database: str
    rounds: int = 0
    per_block: int = 0
    runs: dict[str, ConfigRun] = field(default_factory=dict)
    active_jobs_start: int = 0  # when the measured rounds began
    active_jobs_end: int = 0
    history: int = 0  # finished jobs the caller had before the measured rounds
    analyzed: bool = False  # PostgreSQL: ANALYZE after the warm-up
    skipped: str | None = None
    redis_skipped: str | None = None
    steps: list[Step] = field(default_factory=list)
    steps_note: str = ""
    wall_seconds: float = 0.0

    def added_p50(self, name: str) -> float:
        return self.runs[name].summary.p50 - self.runs[BASELINE].summary.p50

    def round_deltas(self, name: str) -> list[float]:
        """Per-round p50 difference to the baseline (ms): the spread shows the noise."""
        base = self.runs[BASELINE].block_p50s
        return [a - b for a, b in zip(self.runs[name].block_p50s, base, strict=True)]

    def quarter_deltas(self, name: str) -> tuple[float, float]:
        """Median per-round difference over the first and the last quarter of the rounds:
        the trend over the run."""
        deltas = self.round_deltas(name)
        k = max(1, len(deltas) // 4)
        return statistics.median(deltas[:k]), statistics.median(deltas[-k:])


async def _submit(client: httpx.AsyncClient, server: Server, text: str, key: str | None) -> float:
    variables: dict[str, Any] = {"i": {"task": "bench_short", "input": {"text": text}}, "k": key}
    start = time.perf_counter()
    response = await client.post(
        server.graphql_url, json={"query": SUBMIT_KEYED, "variables": variables}
    )
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise BenchError(f"submitJob: HTTP {response.status_code}: {response.text[:300]}")
    result = ((response.json().get("data") or {}).get("submitJob")) or {}
    if result.get("__typename") != "V1SubmitJobSuccess" or result.get("deduplicated"):
        raise BenchError(f"submitJob ({server.name}) not a fresh success: {response.text[:300]}")
    return elapsed


async def _viewer(client: httpx.AsyncClient, server: Server) -> dict[str, Any]:
    response = await client.post(server.graphql_url, json={"query": VIEWER})
    response.raise_for_status()
    viewer: dict[str, Any] = response.json()["data"]["viewer"]
    return viewer


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def text(self, config: Config) -> str:
        self.n += 1
        return f"limits bench {config.name} {self.n}"

    def key(self, config: Config) -> str | None:
        return f"bench-{uuid.uuid4().hex}" if config.key else None


async def run_limits_bench(
    workdir: Path,
    *,
    database: str,
    database_url: str,
    with_redis: bool,
    redis_skipped: str | None = None,
    rounds: int = 16,
    per_block: int = 25,
    warmup: int = 10,
    block_warmup: int = 2,
    step_samples: int = 200,
    history: int = 20_000,
    time_limit: float = 600.0,
) -> LimitsResult:
    result = LimitsResult(database, rounds=rounds, per_block=per_block)
    result.redis_skipped = redis_skipped
    configs = (*CONFIGS, REDIS_CONFIG) if with_redis else CONFIGS
    started = time.perf_counter()
    base_env = jobql_env(
        workdir,
        database_url=database_url,
        inline_worker="false",
        create_dev_key="false",
    )
    # Migrates the database, makes the one caller every server uses, lifts its limits.
    key = await asyncio.to_thread(create_api_key, workdir, base_env)
    await asyncio.to_thread(lambda: lift_key_limits(workdir, base_env, key))
    needed = {c.server for c in configs}
    counter = _Counter()
    caller_id = ""
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(time_limit):
        servers: dict[str, Server] = {}
        clients: dict[str, httpx.AsyncClient] = {}
        for name in SERVERS:
            if name not in needed:
                continue
            env = {**base_env, **{f"JOBQL_{k.upper()}": v for k, v in SERVERS[name].items()}}
            servers[name] = await stack.enter_async_context(
                serving_jobql(workdir / name, env, key, name=name)
            )
            clients[name] = await stack.enter_async_context(http_client(servers[name]))
        viewer = await _viewer(clients["limits-on"], servers["limits-on"])
        caller_id = viewer["id"]
        limits = viewer["limits"]
        if limits["rateLimit"] < 1_000_000 or limits["maxActiveJobs"] < UNLIMITED_ACTIVE:
            raise BenchError(f"set-limits did not take: {viewer}")

        async def block(config: Config, count: int) -> list[float]:
            server, client = servers[config.server], clients[config.server]
            return [
                await _submit(client, server, counter.text(config), counter.key(config))
                for _ in range(count)
            ]

        for config in configs:  # warm-up: connections, caches, code paths; not measured
            await block(config, warmup)
        sessions = await stack.enter_async_context(_jobql_sessions(database_url))
        await add_history(sessions, caller_id, history)
        result.history = history
        if database_url.startswith("postgresql"):
            # A live database has planner statistics (autovacuum analyzes a new table after
            # 50 changed rows, within a minute); a fresh one has none for the run's first
            # minute, and the planner then reads the key lookup through the wrong index.
            await asyncio.to_thread(psql, "ANALYZE", database_url.rsplit("/", 1)[1])
            result.analyzed = True
        result.active_jobs_start = int(
            (await _viewer(clients["limits-on"], servers["limits-on"]))["activeJobs"]
        )
        for config in configs:
            result.runs[config.name] = ConfigRun(config)

        async def settle() -> None:
            """Finish the caller's jobs (the worker is off), as a real caller's jobs finish:
            its active jobs stay below its max_active_jobs instead of piling up to
            thousands that the concurrency check would count on every submit."""
            from sqlalchemy import text

            async with sessions() as session, session.begin():
                await session.execute(text(SETTLE_SQL))

        for round_no in range(rounds):
            shift = round_no % len(configs)
            for config in (*configs[shift:], *configs[:shift]):
                run = result.runs[config.name]
                await settle()
                await block(config, block_warmup)
                with CpuMeter(servers[config.server].process.pid, run.cpu):
                    samples = await block(config, per_block)
                run.samples += samples
                run.block_p50s.append(statistics.median(samples) * 1000)
        viewer = await _viewer(clients["limits-on"], servers["limits-on"])
        result.active_jobs_end = int(viewer["activeJobs"])
    # Servers stopped: time the added statements alone against the same database.
    try:
        async with asyncio.timeout(120):
            result.steps = await measure_steps(
                database_url,
                caller_id,
                redis_url=REDIS_URL if with_redis else None,
                samples=step_samples,
            )
    except Exception as exc:  # jobql's internals may have moved; the HTTP numbers stand
        result.steps_note = f"statement timings unavailable: {exc.__class__.__name__}: {exc}"
    result.wall_seconds = time.perf_counter() - started
    return result


SETTLE_SQL = "UPDATE jobs SET status = 'CANCELLED' WHERE status IN ('QUEUED', 'RUNNING')"


async def add_history(sessions: Any, caller_id: str, count: int, chunk: int = 1000) -> None:
    """Give the caller ``count`` finished jobs: copies of one of its own, spread over the
    last day, each with an idempotency key (still in the 24 h window, so still indexed)."""
    from datetime import timedelta

    from sqlalchemy import insert, select

    from jobql.models import Job

    table = Job.__table__
    async with sessions() as session, session.begin():
        template = dict(
            (await session.execute(select(table).where(table.c.principal_id == caller_id).limit(1)))
            .mappings()
            .one()
        )
        now = datetime.now(UTC)
        for start in range(0, count, chunk):
            rows = [
                {
                    **template,
                    "id": str(uuid.uuid4()),
                    "status": "SUCCEEDED",
                    "idempotency_key": f"history-{uuid.uuid4().hex}",
                    "created_at": now - timedelta(seconds=80_000 * (i + 1) / count),
                }
                for i in range(start, min(start + chunk, count))
            ]
            await session.execute(insert(table), rows)


# -- where the time goes: the added statements, one at a time --------------------------------


async def _time(samples: int, op: Callable[[], Awaitable[object]]) -> Summary:
    times: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        await op()
        times.append(time.perf_counter() - start)
    return Summary.of(times)


@contextlib.asynccontextmanager
async def _jobql_sessions(database_url: str) -> AsyncIterator[Any]:
    from jobql.repositories.database import create_engine, create_session_factory

    engine = create_engine(database_url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


async def measure_steps(
    database_url: str, caller_id: str, *, redis_url: str | None, samples: int
) -> list[Step]:
    """Each statement `_admit` runs, timed inside an open transaction (as in the server),
    with jobql's engine (same driver, same pool, same SQLite pragmas)."""
    from sqlalchemy import select, text

    from jobql.models import Job
    from jobql.repositories.principals import PrincipalRepository
    from jobql.services.ratelimit import RateLimiter

    steps: list[Step] = []
    today = datetime.now(UTC).date()
    async with _jobql_sessions(database_url) as sessions:

        async def in_transaction(fn: Callable[[Any], Awaitable[object]]) -> Summary:
            async with sessions() as session, session.begin():
                await fn(session)  # first call warms the statement caches
                return await _time(samples, lambda: fn(session))

        steps.append(
            Step(
                "floor: SELECT 1 (one statement round trip)",
                await in_transaction(lambda s: s.execute(text("SELECT 1"))),
            )
        )
        steps.append(
            Step(
                "limits on: lock the caller (PostgreSQL), then one statement for its active "
                "jobs, reservations, spend and the key's job (a miss)",
                await in_transaction(
                    lambda s: PrincipalRepository(s).lock_and_load(
                        caller_id, today, uuid.uuid4().hex
                    )
                ),
            )
        )
        steps.append(
            Step(
                "limits off: look the idempotency key up alone (a miss)",
                await in_transaction(
                    lambda s: s.scalars(
                        select(Job.id).where(
                            Job.principal_id == caller_id, Job.idempotency_key == uuid.uuid4().hex
                        )
                    )
                ),
            )
        )
    limiters = [("memory", None)] + ([("Redis", redis_url)] if redis_url else [])
    for label, url in limiters:
        limiter = RateLimiter(url)
        scope = f"bench-diag-{uuid.uuid4().hex[:8]}"

        async def hit(limiter: RateLimiter = limiter, scope: str = scope) -> object:
            return await limiter.hit(scope, caller_id, 1_000_000, 60)

        try:
            for _ in range(PREFILL):  # a window that already holds earlier submits
                await hit()
            summary = await _time(samples, hit)
        finally:
            await limiter.aclose()
        steps.append(
            Step(
                f"limits: rate limiter hit + window stats, {label}",
                summary,
                f"{PREFILL} earlier hits in the window",
            )
        )
    return steps
