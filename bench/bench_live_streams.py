"""Benchmark 5: live streams from an HTTP model upstream to N subscribers at once.

The upstream is bench/fake_upstream.py (OpenAI-compatible, its own process on a free
loopback port): every request streams 200 one-token chunks, 20 ms apart, so a stream's
ideal wall time is 4 s. jobql runs with its defaults except what the benchmark must set: the
task file bench/tasks_live.toml (task `bench_live`, provider "upstream"), JOBQL_PROVIDERS
pointing at the upstream, and on the PostgreSQL + Redis backend the database and broadcast
URLs; the API key's limits are lifted (`jobql keys set-limits`), so nothing is refused.

At each N, two phases on the same machine, one after the other:

* direct: N clients, each with its own httpx connection (opened beforehand), spread over
  two worker processes, all start at once a streamed POST /v1/chat/completions to the
  upstream and time the first content chunk, the gaps between content chunks and the end
  of the stream ([DONE]);
* jobql: N clients, each with its own HTTP keep-alive connection and its own
  graphql-transport-ws connection (both opened beforehand), all start at once: submitJob
  over HTTP, then jobEvents(jobId, after: 0) on the socket. Time to first token = submit
  sent -> first V1OutputDelta frame with text; gaps = between consecutive V1OutputDelta
  frames; wall = submit sent -> the terminal event. An error is anything but a
  V1JobSucceeded stream carrying all 200 tokens within the client timeout.

Server CPU per delivered event = CPU time of the jobql process (API and inline worker; not
PostgreSQL's or Redis's) during the jobql phase / V1OutputDelta frames the clients received.
With ``baseline_src`` (a checkout of another revision) the same phase at ``cpu_clients``
also runs against a server started from that source tree, for the same-run comparison.

Run alone: .venv/bin/python bench/bench_live_streams.py --clients 1,10 --backend sqlite
(bench/run.py --only live runs it as part of the report).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchkit import (
    BENCH_DIR,
    REDIS_URL,
    SUBSCRIBE,
    TERMINAL_TYPENAMES,
    BenchError,
    CpuMeter,
    CpuUse,
    Server,
    Summary,
    fmt_ms,
    free_port,
    fresh_postgres_database,
    graphql_ws,
    http_client,
    md_table,
    percentile,
    process_cpu_seconds,
    recv_frame,
    redis_reachable,
    running_jobql,
    send_subscribe,
    spawn,
    stop_server,
    submit_job,
    wait_healthy,
    wait_idle,
)

TASK = "bench_live"
TASKS_FILE = BENCH_DIR / "tasks_live.toml"
TOKENS = 200
INTERVAL_S = 0.020
IDEAL_S = TOKENS * INTERVAL_S
FULL_CLIENTS = (1, 10, 50, 100, 200)
QUICK_CLIENTS = (1, 10)
CPU_CLIENTS = 100  # where the CPU target compares against the baseline source tree
CPU_TARGET = 1 / 3  # server CPU per event, at most this share of the baseline's
# A client that has not seen its terminal event by then counts as an error; generous, as
# at default settings a burst of N jobs is worked off a few at a time.
CLIENT_TIMEOUT_S = 90.0
SETUP_TIMEOUT_S = 60.0
DIRECT_PROCESSES = 2
WORKER_START_S = 5.0  # a spawned worker imports httpx and connects its clients within this
IDLE_TIMEOUT_S = 90.0
MAX_FRAMES = 5000
BACKENDS = ("sqlite", "postgres")
BACKEND_NAMES = {"sqlite": "embedded default (SQLite)", "postgres": "PostgreSQL + Redis"}


@dataclass(frozen=True)
class Target:
    """The issue's targets at one N (None: no target on that measure)."""

    ttft_over_direct_ms: float | None = None  # jobql TTFT p99 - direct TTFT p99
    ttft_p99_ms: float | None = None
    gap_p99_ms: float | None = None
    wall_ratio: float | None = None  # p99 of stream wall / ideal
    zero_errors: bool = False


TARGETS = {
    50: Target(ttft_over_direct_ms=150, gap_p99_ms=100, wall_ratio=1.1),
    200: Target(ttft_p99_ms=1000, gap_p99_ms=250, wall_ratio=1.3, zero_errors=True),
}


@dataclass
class Stream:
    """One client's stream, times in seconds from just before its request went out."""

    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    wall: float | None = None
    content_frames: int = 0
    error: str | None = None


@dataclass
class Phase:
    clients: int
    streams: list[Stream]
    cpu: CpuUse  # the server measured (jobql or the upstream) and this client process
    setup_errors: int = 0

    @property
    def ok(self) -> list[Stream]:
        return [s for s in self.streams if s.error is None]

    @property
    def errors(self) -> int:
        return len(self.streams) - len(self.ok)

    def error_kinds(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for s in self.streams:
            if s.error is not None:
                kinds[s.error] = kinds.get(s.error, 0) + 1
        return kinds

    @property
    def ttft(self) -> Summary | None:
        return _summary([s.ttft for s in self.ok if s.ttft is not None])

    @property
    def gap(self) -> Summary | None:
        return _summary([g for s in self.ok for g in s.gaps])

    def wall_ratio(self, q: float) -> float | None:
        """Percentile ``q`` of stream wall time / ideal."""
        ratios = sorted(s.wall / IDEAL_S for s in self.ok if s.wall is not None)
        return percentile(ratios, q) if ratios else None

    @property
    def content_frames(self) -> int:
        """Content frames delivered, errored streams included (the server did the work)."""
        return sum(s.content_frames for s in self.streams)

    @property
    def cpu_ms_per_event(self) -> float:
        frames = self.content_frames
        return 1000 * self.cpu.server / frames if frames else float("nan")

    @property
    def frames_per_stream(self) -> float:
        counts = [s.content_frames for s in self.ok]
        return statistics.median(counts) if counts else 0.0


def _summary(values: Sequence[float]) -> Summary | None:
    return Summary.of(values) if values else None


@dataclass
class Level:
    clients: int
    direct: Phase
    jobql: Phase


@dataclass
class LiveResult:
    backend: str
    levels: list[Level] = field(default_factory=list)
    baseline: Phase | None = None  # the jobql phase at cpu_clients on baseline_src
    baseline_src: str = ""
    skipped: str = ""  # the backend did not run at all
    problem: str = ""  # it stopped early (the levels it finished are kept)
    wall_seconds: float = 0.0

    def level(self, clients: int) -> Level | None:
        return next((lv for lv in self.levels if lv.clients == clients), None)


# -- clients ------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _content(data: bytes) -> bool:
    chunk = json.loads(data)
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ())


async def _direct_client(url: str, gate: asyncio.Event, ready: asyncio.Event) -> Stream:
    stream = Stream()
    timeout = httpx.Timeout(10.0, read=30.0)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        try:
            # Opens the connection, so the measured request does not pay for it.
            (await client.get(f"{url}/healthz")).raise_for_status()
        finally:
            ready.set()
        await gate.wait()
        body = {"model": "bench", "messages": [{"role": "user", "content": "x"}], "stream": True}
        start = last = time.perf_counter()
        try:
            async with (
                asyncio.timeout(CLIENT_TIMEOUT_S),
                client.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
            ):
                if response.status_code != 200:
                    stream.error = f"HTTP {response.status_code}"
                    return stream
                buffer = b""
                # Raw bytes split by hand: cheaper per chunk than httpx's line decoding.
                async for data in response.aiter_raw():
                    now = time.perf_counter()
                    *events, buffer = (buffer + data).split(b"\n\n")
                    for event in events:
                        if not event.startswith(b"data:"):
                            continue
                        payload = event[5:].strip()
                        if payload == b"[DONE]":
                            stream.wall = now - start
                        elif _content(payload):
                            if stream.ttft is None:
                                stream.ttft = now - start
                            else:
                                stream.gaps.append(now - last)
                            last = now
                            stream.content_frames += 1
        except Exception as exc:
            stream.error = _describe(exc)
            return stream
    if stream.wall is None:
        stream.error = "no [DONE]"
    elif stream.content_frames != TOKENS:
        stream.error = f"{stream.content_frames} of {TOKENS} tokens"
    return stream


async def _jobql_client(
    server: Server, n: int, gate: asyncio.Event, ready: asyncio.Event
) -> Stream:
    stream = Stream()
    async with http_client(server) as http, graphql_ws(server) as ws:
        try:
            (await http.get(f"{server.http_url}/healthz")).raise_for_status()
        finally:
            ready.set()
        await gate.wait()
        start = last = time.perf_counter()
        text: list[str] = []
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                job_id = await submit_job(http, server, TASK, f"live stream {n}")
                await send_subscribe(ws, "1", SUBSCRIBE, {"id": job_id, "after": 0})
                for _ in range(MAX_FRAMES):
                    frame = await recv_frame(ws, "1")
                    if frame.typename == "V1OutputDelta" and frame.text:
                        if stream.ttft is None:
                            stream.ttft = frame.at - start
                        else:
                            stream.gaps.append(frame.at - last)
                        last = frame.at
                        stream.content_frames += 1
                        text.append(frame.text)
                    elif frame.typename is None or frame.typename in TERMINAL_TYPENAMES:
                        stream.wall = frame.at - start
                        if frame.typename != "V1JobSucceeded":
                            stream.error = f"ended with {frame.typename or 'complete'}"
                        break
                else:
                    stream.error = f"no terminal event in {MAX_FRAMES} frames"
        except Exception as exc:
            stream.error = _describe(exc)
            return stream
        if stream.error is None and (tokens := len("".join(text).split())) != TOKENS:
            stream.error = f"{tokens} of {TOKENS} tokens"
        with contextlib.suppress(Exception):
            # The `complete` that follows the terminal event, so the socket closes cleanly.
            async with asyncio.timeout(5):
                while (await recv_frame(ws, "1")).typename is not None:
                    pass
    return stream


ClientFn = Callable[[int, asyncio.Event, asyncio.Event], Awaitable[Stream]]


async def _run_phase(
    clients: int, meter_pid: int, client: ClientFn, start_at: float | None = None
) -> Phase:
    """Connect ``clients`` clients, then start them all at once (at ``start_at`` on the
    perf_counter clock, if given); CPU from start to last end."""
    gate = asyncio.Event()
    readies = [asyncio.Event() for _ in range(clients)]

    async def guarded(i: int) -> Stream:
        try:
            return await client(i, gate, readies[i])
        except Exception as exc:  # connecting failed: the client never started
            readies[i].set()
            return Stream(error=f"setup: {_describe(exc)}")

    tasks = [asyncio.create_task(guarded(i)) for i in range(clients)]
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            await asyncio.gather(*(ready.wait() for ready in readies))
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        cpu = CpuUse()
        with CpuMeter(meter_pid, cpu):
            gate.set()
            # Each client bounds itself; this only guards against a hang outside that.
            async with asyncio.timeout(CLIENT_TIMEOUT_S + 30):
                streams = await asyncio.gather(*tasks)
    except TimeoutError as exc:
        raise BenchError(f"a phase of {clients} clients did not finish in time") from exc
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Phase(clients, list(streams), cpu)


def _direct_worker(url: str, clients: int, start_at: float) -> Phase:
    """One share of the direct clients, in a worker process (its CPU in ``cpu.client``)."""
    return asyncio.run(
        _run_phase(clients, os.getpid(), lambda n, g, r: _direct_client(url, g, r), start_at)
    )


async def _direct_phase(upstream: Server, clients: int) -> Phase:
    """The direct clients, split over DIRECT_PROCESSES worker processes: httpx costs enough
    per chunk that one process alone saturates a CPU near N = 200, which would be charged
    to the upstream. All start at one instant (CLOCK_MONOTONIC is shared by processes)."""
    shares = [len(range(i, clients, DIRECT_PROCESSES)) for i in range(DIRECT_PROCESSES)]
    shares = [share for share in shares if share]
    loop = asyncio.get_running_loop()
    upstream_cpu = process_cpu_seconds(upstream.process.pid)
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        start_at = time.perf_counter() + WORKER_START_S
        phases = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _direct_worker, upstream.http_url, share, start_at)
                for share in shares
            )
        )
    # The upstream's CPU over the whole span: its idle time while the workers start is noise.
    cpu = CpuUse(
        wall=max(phase.cpu.wall for phase in phases),
        client=sum(phase.cpu.client for phase in phases),
        server=process_cpu_seconds(upstream.process.pid) - upstream_cpu,
    )
    return Phase(clients, [stream for phase in phases for stream in phase.streams], cpu)


async def _jobql_phase(server: Server, clients: int, offset: int) -> Phase:
    return await _run_phase(
        clients,
        server.process.pid,
        lambda n, gate, ready: _jobql_client(server, offset + n, gate, ready),
    )


# -- servers ------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def running_upstream(workdir: Path) -> AsyncIterator[Server]:
    """bench/fake_upstream.py in its own process, so its CPU is neither jobql's nor ours."""
    port = free_port()
    command = [
        sys.executable,
        str(BENCH_DIR / "fake_upstream.py"),
        "--port",
        str(port),
        "--tokens",
        str(TOKENS),
        "--interval-ms",
        str(INTERVAL_S * 1000),
    ]
    server = spawn("upstream", command, dict(os.environ), workdir, port)
    try:
        await wait_healthy(server)
        yield server
    finally:
        stop_server(server)


@contextlib.asynccontextmanager
async def backend_settings(backend: str) -> AsyncIterator[dict[str, str]]:
    """The JOBQL_ settings a backend needs beyond the defaults (a fresh database each time)."""
    if backend == "sqlite":
        yield {}
        return
    if problem := await asyncio.to_thread(redis_reachable):
        raise BenchError(problem)
    async with fresh_postgres_database("jobql_bench_live") as url:
        yield {"database_url": url, "broadcast_url": REDIS_URL}


@contextlib.asynccontextmanager
async def serving(
    workdir: Path,
    upstream: Server,
    backend: str,
    name: str,
    source: Path | None = None,
) -> AsyncIterator[Server]:
    async with (
        backend_settings(backend) as settings,
        running_jobql(
            workdir,
            name,
            source,
            tasks_file=str(TASKS_FILE),
            providers=json.dumps({"upstream": {"base_url": f"{upstream.http_url}/v1"}}),
            **settings,
        ) as server,
    ):
        yield server


async def _settle(server: Server) -> None:
    """Wait for jobs a timed-out client left behind, so they do not load the next phase."""
    try:
        async with http_client(server) as http:
            await wait_idle(http, server, timeout=IDLE_TIMEOUT_S)
    except (BenchError, httpx.HTTPError) as exc:
        log(f"live: {server.name} not idle: {_describe(exc)}")


async def _warm_up(server: Server, upstream: Server) -> None:
    for phase in (await _direct_phase(upstream, 1), await _jobql_phase(server, 1, 0)):
        if phase.errors:
            raise BenchError(f"warm-up failed: {phase.error_kinds()}\n{server.log_tail()}")


async def run_live_bench(
    workdir: Path,
    upstream: Server,
    backend: str,
    *,
    clients: Sequence[int] = FULL_CLIENTS,
    cpu_clients: int = CPU_CLIENTS,
    baseline_src: Path | None = None,
    source: Path | None = None,
) -> LiveResult:
    """Every N in ``clients`` on ``backend``; then, with ``baseline_src``, N = ``cpu_clients``
    against a server from that source tree (its own fresh database). ``source``: the source
    tree of the measured server, if not the installed one."""
    result = LiveResult(BACKEND_NAMES[backend])
    started = time.perf_counter()
    ids = itertools.count(1)
    try:
        async with serving(workdir / backend, upstream, backend, "jobql", source) as server:
            await _warm_up(server, upstream)
            for n in clients:
                log(f"5/5 live streams, {result.backend}, N = {n}: direct, then jobql")
                direct = await _direct_phase(upstream, n)
                jobql = await _jobql_phase(server, n, next(ids) * 1000)
                result.levels.append(Level(n, direct, jobql))
                await _settle(server)
        if baseline_src is not None:
            result.baseline_src = str(baseline_src)
            log(f"5/5 live streams, {result.backend}, N = {cpu_clients}: {baseline_src}")
            async with serving(
                workdir / f"{backend}-baseline", upstream, backend, "jobql-base", baseline_src
            ) as base:
                await _warm_up(base, upstream)
                result.baseline = await _jobql_phase(base, cpu_clients, 0)
                await _settle(base)
    except BenchError as exc:
        # First line and last (a server's traceback ends with the exception).
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or ["?"]
        reason = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        if result.levels:
            result.problem = reason
        else:
            result.skipped = reason
        log(f"live: {result.backend}: {exc}")
    result.wall_seconds = time.perf_counter() - started
    return result


# -- report -------------------------------------------------------------------------------


def _pair(summary: Summary | None) -> str:
    return f"{fmt_ms(summary.p50)} / {fmt_ms(summary.p99)}" if summary else "-"


def _ratios(phase: Phase) -> str:
    p50, p99 = phase.wall_ratio(50), phase.wall_ratio(99)
    return f"{p50:.2f} / {p99:.2f}" if p50 is not None and p99 is not None else "-"


def _check(name: str, value: float | None, limit: float) -> str:
    if value is None:
        return f"{name} **missed** (no data)"
    return f"{name} met" if value <= limit else f"{name} **missed**"


def verdicts(direct: Phase, jobql: Phase, target: Target) -> list[str]:
    out: list[str] = []
    ttft, direct_ttft, gap = jobql.ttft, direct.ttft, jobql.gap
    if target.ttft_over_direct_ms is not None:
        over = ttft.p99 - direct_ttft.p99 if ttft and direct_ttft else None
        out.append(_check("TTFT", over, target.ttft_over_direct_ms))
    if target.ttft_p99_ms is not None:
        out.append(_check("TTFT", ttft.p99 if ttft else None, target.ttft_p99_ms))
    if target.gap_p99_ms is not None:
        out.append(_check("gap", gap.p99 if gap else None, target.gap_p99_ms))
    if target.wall_ratio is not None:
        out.append(_check("wall", jobql.wall_ratio(99), target.wall_ratio))
    if target.zero_errors:
        out.append(_check("errors", jobql.errors, 0))
    return out


def _row(label: str, direct: Phase, jobql: Phase, target: Target | None) -> list[str]:
    errors = f"{jobql.errors}" + (f" (direct {direct.errors})" if direct.errors else "")
    return [
        label,
        _pair(direct.ttft),
        _pair(jobql.ttft),
        fmt_ms(direct.gap.p99) if direct.gap else "-",
        _pair(jobql.gap),
        _ratios(jobql),
        errors,
        f"{jobql.frames_per_stream:.0f}",
        f"{jobql.cpu.server_pct:.0f}%",
        f"{jobql.cpu_ms_per_event:.3f}",
        f"{direct.cpu.client_pct:.0f}% / {jobql.cpu.client_pct:.0f}%",
        f"{direct.cpu.server_pct:.0f}%",
        ", ".join(verdicts(direct, jobql, target)) if target else "",
    ]


HEADER = [
    "N",
    "direct TTFT p50 / p99 ms",
    "jobql TTFT p50 / p99 ms",
    "direct gap p99 ms",
    "jobql gap p50 / p99 ms",
    "wall / ideal p50 / p99",
    "errors",
    "content frames / stream",
    "server CPU",
    "server CPU ms / event",
    "client CPU direct / jobql",
    "upstream CPU direct",
    "targets",
]


def cpu_comparison(result: LiveResult, cpu_clients: int) -> tuple[float, float] | None:
    """(this tree's, the baseline's) server CPU ms per event at ``cpu_clients``."""
    level = result.level(cpu_clients)
    if level is None or result.baseline is None:
        return None
    return level.jobql.cpu_ms_per_event, result.baseline.cpu_ms_per_event


def report_live(results: Sequence[LiveResult], cpu_clients: int) -> str:
    parts = [
        f"An OpenAI-compatible upstream (bench/fake_upstream.py, its own process) streams "
        f"{TOKENS} one-token chunks {INTERVAL_S * 1000:.0f} ms apart per request: ideal wall "
        f"time {IDEAL_S:.0f} s. At each N, first N clients call the upstream directly (a "
        f"streamed POST /v1/chat/completions each, on their own httpx connection: *direct*), "
        f"then N clients each submit `bench_live` over HTTP and subscribe to "
        f"`jobEvents(jobId, after: 0)` over graphql-transport-ws on their own connection; "
        f"every client connects first and all start at once. jobql runs with its defaults "
        f"(inline worker, worker concurrency, coalescing), given only the task file, the "
        f"provider, the backend's URLs and a key with lifted limits. TTFT = request sent "
        f"(submitJob for jobql) -> first frame with content; gap = between consecutive "
        f"content frames of one stream (all streams pooled); wall = request sent -> terminal "
        f"event (`[DONE]` direct); p50 / p99, nearest rank, over the streams without error. "
        f"Errors: anything but a V1JobSucceeded stream with all {TOKENS} tokens within "
        f"{CLIENT_TIMEOUT_S:.0f} s. Server CPU: the jobql process (API + inline worker; not "
        f"PostgreSQL or Redis) over the jobql phase, as a share of one CPU and per delivered "
        f"V1OutputDelta frame. Client CPU: this benchmark's process (direct: its "
        f"{DIRECT_PROCESSES} worker processes, summed), per phase; upstream CPU: the "
        f"upstream's process in the direct phase (all shares of one CPU). Targets are "
        f"judged on p99 (wall: p99 of wall / ideal)."
    ]
    for result in results:
        if result.skipped:
            parts.append(f"**{result.backend}**: skipped ({result.skipped}).")
            continue
        rows = [
            _row(str(lv.clients), lv.direct, lv.jobql, TARGETS.get(lv.clients))
            for lv in result.levels
        ]
        level = result.level(cpu_clients)
        if result.baseline is not None and level is not None:
            rows.append(
                _row(f"{cpu_clients}, baseline source", level.direct, result.baseline, None)
            )
        text = f"**{result.backend}** ({result.wall_seconds:.0f} s)\n\n" + md_table(HEADER, rows)
        notes: list[str] = []
        if result.problem:
            notes.append(f"Stopped early: {result.problem}.")
        for lv in result.levels:
            for kind, phase in (("direct", lv.direct), ("jobql", lv.jobql)):
                if kinds := phase.error_kinds():
                    listed = "; ".join(f"{count} x {error}" for error, count in kinds.items())
                    notes.append(f"N = {lv.clients}, {kind} errors: {listed}.")
        if result.baseline is not None and (kinds := result.baseline.error_kinds()):
            listed = "; ".join(f"{count} x {error}" for error, count in kinds.items())
            notes.append(f"Baseline source errors: {listed}.")
        if (pair := cpu_comparison(result, cpu_clients)) is not None:
            mine, base = pair
            share = mine / base if base else float("nan")
            notes.append(
                f"Server CPU per event at N = {cpu_clients}: {mine:.3f} ms, against "
                f"{base:.3f} ms for `{result.baseline_src}` in the same run: {share:.2f}x "
                f"(target <= {CPU_TARGET:.2f}x: "
                f"{'met' if share <= CPU_TARGET else '**missed**'})."
            )
        if notes:
            text += "\n\n" + "\n".join(f"- {note}" for note in notes)
        parts.append(text)
    return "\n\n".join(parts)


def summary_rows(results: Sequence[LiveResult], cpu_clients: int) -> list[list[str]]:
    """Rows for bench/run.py's summary: Benchmark, Measured, Target, Baseline, Ratio, verdict."""
    rows: list[list[str]] = []
    for result in results:
        if result.skipped:
            continue
        for n, target in TARGETS.items():
            level = result.level(n)
            if level is None:
                continue
            ttft, direct = level.jobql.ttft, level.direct.ttft
            limit = (
                f"<= direct + {target.ttft_over_direct_ms:.0f} ms"
                if target.ttft_over_direct_ms is not None
                else f"<= {target.ttft_p99_ms:.0f} ms"
            )
            rows.append(
                [
                    f"live streams, {result.backend}, N = {n}: TTFT p99, gap p99, wall p99",
                    f"{fmt_ms(ttft.p99) if ttft else '-'} ms, "
                    f"{fmt_ms(level.jobql.gap.p99) if level.jobql.gap else '-'} ms, "
                    f"{level.jobql.wall_ratio(99) or 0:.2f}x ideal, "
                    f"{level.jobql.errors} errors",
                    f"{limit}, gap <= {target.gap_p99_ms:.0f} ms, <= {target.wall_ratio}x"
                    + (", 0 errors" if target.zero_errors else ""),
                    f"direct TTFT p99 {fmt_ms(direct.p99) if direct else '-'} ms",
                    "",
                    ", ".join(verdicts(level.direct, level.jobql, target)),
                ]
            )
        if (pair := cpu_comparison(result, cpu_clients)) is not None:
            mine, base = pair
            share = mine / base if base else float("nan")
            rows.append(
                [
                    f"live streams, {result.backend}, N = {cpu_clients}: server CPU per event",
                    f"{mine:.3f} ms",
                    f"<= {CPU_TARGET:.2f}x baseline",
                    f"baseline source {base:.3f} ms",
                    f"{share:.2f}x",
                    "met" if share <= CPU_TARGET else "**missed**",
                ]
            )
    return rows


async def run_all_backends(
    workdir: Path,
    backends: Sequence[str],
    clients: Sequence[int],
    cpu_clients: int,
    baseline_src: Path | None,
    source: Path | None = None,
) -> list[LiveResult]:
    async with running_upstream(workdir) as upstream:
        return [
            await run_live_bench(
                workdir,
                upstream,
                backend,
                clients=clients,
                cpu_clients=cpu_clients,
                baseline_src=baseline_src,
                source=source,
            )
            for backend in backends
        ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", default=",".join(map(str, FULL_CLIENTS)), help="N values")
    parser.add_argument("--backend", default=",".join(BACKENDS), help=", ".join(BACKENDS))
    parser.add_argument("--baseline-src", type=Path, help="source tree to compare CPU with")
    parser.add_argument("--src", type=Path, help="source tree of the measured server")
    parser.add_argument("--cpu-clients", type=int, help="N of that comparison (largest N)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    args = parser.parse_args()
    clients = [int(part) for part in args.clients.split(",") if part.strip()]
    backends = [part.strip() for part in args.backend.split(",") if part.strip()]
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    cpu_clients = args.cpu_clients or (CPU_CLIENTS if CPU_CLIENTS in clients else max(clients))
    tmp = Path(tempfile.mkdtemp(prefix="jobql-bench-live-"))
    try:
        results = asyncio.run(
            run_all_backends(tmp, backends, clients, cpu_clients, args.baseline_src, args.src)
        )
    finally:
        if args.keep:
            log(f"server logs and databases kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report_live(results, cpu_clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
