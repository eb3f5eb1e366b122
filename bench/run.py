"""Run every jobql benchmark against local servers it starts, print a markdown report.

    .venv/bin/python bench/run.py            # print the report
    .venv/bin/python bench/run.py --write    # ... and update docs/benchmarks.md
    .venv/bin/python bench/run.py --quick    # small counts, to check the scripts work
    .venv/bin/python bench/run.py --only limits   # one benchmark (--write would replace
                                                  # the whole generated section with it)
    .venv/bin/python bench/run.py --only live --baseline-src /tmp/jobql-base
                                  # live streams, with the server CPU compared against a
                                  # checkout of an older revision (git worktree add ...)

Each benchmark gets a fresh `jobql serve` (embedded default: SQLite file in a temp dir,
memory:// bus, inline worker, tasks from bench/tasks.toml) on 127.0.0.1 and a free port.
The limits benchmark (4) also runs on a fresh database on the local PostgreSQL server
(127.0.0.1:5432, created and dropped by the run; skipped with the reason if unreachable)
and, with Redis at 127.0.0.1:6379, with the Redis-backed rate limiter. The live-streams
benchmark (5) runs on the embedded default and on PostgreSQL + Redis, against an
OpenAI-compatible upstream it starts (bench/fake_upstream.py, tasks from bench/tasks_live.toml).
The machine may be shared and noisy, so every number comes with a baseline measured in the
same run, and the report gives ratios. Latency targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench_first_delta import TARGET_P99_MS as FIRST_DELTA_TARGET_MS
from bench_first_delta import FirstDeltaResult, run_first_delta_bench
from bench_limits import BASELINE as LIMITS_BASELINE
from bench_limits import REDIS_CONFIG, LimitsResult, run_limits_bench
from bench_limits import TARGET_ADDED_P50_MS as LIMITS_TARGET_MS
from bench_live_streams import BACKENDS as LIVE_BACKENDS
from bench_live_streams import LiveResult, report_live, run_all_backends
from bench_live_streams import summary_rows as live_summary_rows
from bench_stream import StreamResult, run_stream_bench
from bench_submit import TARGET_P99_MS as SUBMIT_TARGET_MS
from bench_submit import PacedResult, SubmitResult, run_paced_submit_bench, run_submit_bench
from benchkit import (
    REPO_DIR,
    BenchError,
    CpuUse,
    Summary,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    fresh_postgres_database,
    machine_info,
    md_table,
    ratio,
    redis_reachable,
    running_jobql,
    running_raw_ws,
)

DOC = REPO_DIR / "docs" / "benchmarks.md"
BEGIN = "<!-- bench/run.py: generated results begin -->"
END = "<!-- bench/run.py: generated results end -->"
STREAM_CONFIGS = (("coalesce 25 ms", "25"), ("coalesce 0", "0"))
BENCHMARKS = ("submit", "first-delta", "stream", "limits", "live")


@dataclass(frozen=True)
class Sizes:
    clients: int
    per_client: int
    rounds: int
    single_client: int
    paced_count: int
    paced_interval: float
    first_delta_samples: int
    first_delta_single: int
    concurrency: int
    stream_repeats: int
    limits_rounds: int
    limits_per_block: int
    limits_step_samples: int
    live_clients: tuple[int, ...]
    live_cpu_clients: int  # where server CPU per event is compared with --baseline-src


FULL = Sizes(
    clients=20,
    per_client=25,
    rounds=3,
    single_client=50,
    paced_count=15,
    paced_interval=1.0,
    first_delta_samples=200,
    first_delta_single=40,
    concurrency=5,
    stream_repeats=3,
    limits_rounds=16,
    limits_per_block=25,
    limits_step_samples=200,
    live_clients=(1, 10, 50, 100, 200),
    live_cpu_clients=100,
)
QUICK = Sizes(
    clients=20,
    per_client=5,
    rounds=1,
    single_client=10,
    paced_count=3,
    paced_interval=1.0,
    first_delta_samples=20,
    first_delta_single=5,
    concurrency=5,
    stream_repeats=1,
    limits_rounds=2,
    limits_per_block=10,
    limits_step_samples=20,
    live_clients=(1, 10),
    live_cpu_clients=10,
)


@dataclass
class Results:
    submit: SubmitResult | None = None
    submit_single: SubmitResult | None = None
    submit_paced: PacedResult | None = None
    submit_no_worker: SubmitResult | None = None
    submit_baseline: SubmitResult | None = None
    baseline_src: Path | None = None
    first_delta: FirstDeltaResult | None = None
    first_delta_single: FirstDeltaResult | None = None
    stream: StreamResult | None = None
    limits: list[LimitsResult] | None = None
    live: list[LiveResult] | None = None
    live_cpu_clients: int = 0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_all(
    sizes: Sizes, workdir: Path, only: set[str], baseline_src: Path | None = None
) -> Results:
    results = Results(baseline_src=baseline_src)
    if "submit" in only:
        log("1/5 submitJob acknowledgement latency")
        async with running_jobql(workdir / "submit") as server:
            # One client first (no queueing: the unloaded latency), then the real load.
            results.submit_single = await run_submit_bench(
                server, clients=1, per_client=sizes.single_client, rounds=2
            )
            results.submit = await run_submit_bench(
                server, clients=sizes.clients, per_client=sizes.per_client, rounds=sizes.rounds
            )
            log("1/5 the same clients, paced well below saturation")
            results.submit_paced = await run_paced_submit_bench(
                server,
                clients=sizes.clients,
                count=sizes.paced_count,
                interval=sizes.paced_interval,
            )
        if baseline_src is not None:
            log(f"1/5 the same clients against {baseline_src}")
            async with running_jobql(
                workdir / "submit-baseline", "baseline", baseline_src
            ) as server:
                results.submit_baseline = await run_submit_bench(
                    server, clients=sizes.clients, per_client=sizes.per_client, rounds=sizes.rounds
                )
        log("1/5 (diagnostic) the same with no worker running")
        async with running_jobql(workdir / "submit-no-worker", inline_worker="false") as server:
            results.submit_no_worker = await run_submit_bench(
                server,
                clients=sizes.clients,
                per_client=sizes.per_client,
                rounds=sizes.rounds,
                drain=False,
            )
    if "first-delta" in only:
        log("2/5 submit -> first OutputDelta")
        async with running_jobql(workdir / "first-delta") as server:
            # One lane first: the latency of the pipeline itself, without contention.
            results.first_delta_single = await run_first_delta_bench(
                server, samples=sizes.first_delta_single, concurrency=1
            )
            results.first_delta = await run_first_delta_bench(
                server, samples=sizes.first_delta_samples, concurrency=sizes.concurrency
            )
    if "stream" in only:
        results.stream = StreamResult()
        async with running_raw_ws(workdir / "raw-ws") as raw:
            for label, coalesce_ms in STREAM_CONFIGS:
                log(f"3/5 stream throughput, {label}")
                async with running_jobql(
                    workdir / f"stream-{coalesce_ms}", coalesce_ms=coalesce_ms
                ) as server:
                    await run_stream_bench(
                        server, raw, results.stream, label=label, repeats=sizes.stream_repeats
                    )
    if "limits" in only:
        results.limits = await run_limits(sizes, workdir / "limits")
    if "live" in only:
        results.live_cpu_clients = sizes.live_cpu_clients
        results.live = await run_all_backends(
            workdir / "live",
            LIVE_BACKENDS,
            sizes.live_clients,
            sizes.live_cpu_clients,
            baseline_src,
        )
    return results


async def run_limits(sizes: Sizes, workdir: Path) -> list[LimitsResult]:
    bench = functools.partial(
        run_limits_bench,
        rounds=sizes.limits_rounds,
        per_block=sizes.limits_per_block,
        step_samples=sizes.limits_step_samples,
    )
    log("4/5 idempotency key + limits, SQLite")
    out = [
        await bench(
            workdir / "sqlite",
            database="SQLite",
            database_url=f"sqlite+aiosqlite:///{workdir / 'sqlite' / 'x.db'}",
            with_redis=False,
        )
    ]
    redis_problem = await asyncio.to_thread(redis_reachable)
    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(fresh_postgres_database())
        except BenchError as exc:
            log(f"4/5 PostgreSQL skipped: {exc}")
            out.append(LimitsResult("PostgreSQL", skipped=f"PostgreSQL unreachable: {exc}"))
            return out
        log("4/5 idempotency key + limits, PostgreSQL" + ("" if redis_problem else " (+ Redis)"))
        out.append(
            await bench(
                workdir / "postgresql",
                database="PostgreSQL",
                database_url=url,
                with_redis=redis_problem is None,
                redis_skipped=redis_problem,
            )
        )
    return out


# -- report -------------------------------------------------------------------------------


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**missed**"


def compared(
    name: str, value: float, baseline_name: str, baseline: float, target: float | None = None
) -> list[str]:
    """A summary row: a measured latency, its target (if any) and its same-run baseline."""
    return [
        name,
        f"{fmt_ms(value)} ms",
        "" if target is None else f"<= {target:.0f} ms",
        f"{baseline_name} {fmt_ms(baseline)} ms",
        fmt_ratio(ratio(value, baseline)),
        "" if target is None else verdict(value, target),
    ]


def summary_row(name: str, s: Summary) -> list[str]:
    return [name, str(s.n), *(fmt_ms(v) for v in (s.p50, s.p90, s.p99, s.max, s.mean))]


LATENCY_HEADER = ["", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"]


def report_summary(r: Results) -> str:
    rows: list[list[str]] = []
    if r.submit:
        s, h = r.submit.submit, r.submit.healthz
        rows.append(
            compared(
                f"submitJob ack, p99 ({r.submit.clients} clients)",
                s.p99,
                "GET /healthz p99",
                h.p99,
                SUBMIT_TARGET_MS,
            )
        )
        rows.append(compared("submitJob ack, p50", s.p50, "GET /healthz p50", h.p50))
    if r.submit_paced:
        p = r.submit_paced
        rows.append(
            compared(
                f"submitJob ack, p99, paced: {p.clients} clients, "
                f"{p.submits_per_s:.0f} submits/s in all",
                p.submit.p99,
                "GET /healthz p99",
                p.healthz.p99,
                SUBMIT_TARGET_MS,
            )
        )
    if r.first_delta:
        t, b = r.first_delta.total, r.first_delta.baseline
        rows.append(
            compared(
                f"submit -> first OutputDelta, p99 ({r.first_delta.concurrency} at a time)",
                t.p99,
                "healthz + subscribe-to-unknown p99",
                b.p99,
                FIRST_DELTA_TARGET_MS,
            )
        )
        if r.first_delta_single:
            t1, b1 = r.first_delta_single.total, r.first_delta_single.baseline
            rows.append(
                compared(
                    "submit -> first OutputDelta, p99, 1 at a time",
                    t1.p99,
                    "p99",
                    b1.p99,
                    FIRST_DELTA_TARGET_MS,
                )
            )
        rows.append(compared("submit -> first OutputDelta, p50", t.p50, "p50", b.p50))
    if r.stream:
        st = r.stream
        for label, _ in STREAM_CONFIGS:
            live, mirror = f"{label}, live", f"{label}, raw mirror"
            if live not in st.runs:
                continue
            rows.append(
                [
                    f"stream to 1 subscriber, {label}: events/s",
                    fmt_rate(st.median(live, "frames_per_s")),
                    "",
                    f"raw WS, same frames: {fmt_rate(st.median(mirror, 'frames_per_s'))}",
                    fmt_ratio(
                        ratio(st.median(mirror, "frames_per_s"), st.median(live, "frames_per_s"))
                    )
                    + " slower",
                    "",
                ]
            )
            rows.append(
                [
                    f"stream to 1 subscriber, {label}: tokens/s",
                    fmt_rate(st.median(live, "tokens_per_s")),
                    "",
                    f"raw WS, same frames: {fmt_rate(st.median(mirror, 'tokens_per_s'))}",
                    fmt_ratio(
                        ratio(st.median(mirror, "tokens_per_s"), st.median(live, "tokens_per_s"))
                    )
                    + " slower",
                    "",
                ]
            )
    for lr in r.limits or ():
        rows += limits_summary_rows(lr)
    if r.live:
        rows += live_summary_rows(r.live, r.live_cpu_clients)
    return md_table(["Benchmark", "Measured", "Target", "Baseline (same run)", "Ratio", ""], rows)


def fmt_delta(value: float) -> str:
    return f"{value:+.1f}" if abs(value) < 100 else f"{value:+.0f}"


def limits_summary_rows(lr: LimitsResult) -> list[list[str]]:
    target = f"<= {LIMITS_TARGET_MS:.0f} ms"
    if lr.skipped:
        return [
            [
                f"submitJob + key + 3 limits, added p50, {lr.database}",
                "skipped",
                target,
                lr.skipped,
                "",
                "",
            ]
        ]
    rows = []
    base = lr.runs[LIMITS_BASELINE].summary
    for name in ("on", REDIS_CONFIG.name):
        if name not in lr.runs:
            continue
        on = lr.runs[name].summary
        added = lr.added_p50(name)
        limiter = ", Redis rate limiter" if name == REDIS_CONFIG.name else ""
        rows.append(
            [
                f"submitJob + key + 3 limits, added p50, {lr.database}{limiter} (1 client)",
                f"{fmt_delta(added)} ms (p50 {fmt_ms(on.p50)} ms)",
                target,
                f"same submit, no key, limits off: p50 {fmt_ms(base.p50)} ms",
                fmt_ratio(ratio(on.p50, base.p50)),
                verdict(added, LIMITS_TARGET_MS),
            ]
        )
    return rows


def submit_rows(name: str, s: SubmitResult) -> list[list[str]]:
    rows = []
    for kind, summary, cpu in (
        ("submitJob", s.submit, s.submit_cpu),
        ("GET /healthz", s.healthz, s.healthz_cpu),
    ):
        rows.append(
            [
                *summary_row(f"{kind}, {name}", summary),
                fmt_rate(summary.n / cpu.wall),
                f"{cpu.server_pct:.0f}%",
                f"{cpu.client_pct:.0f}%",
            ]
        )
    return rows


def report_submit(r: Results) -> str:
    assert r.submit is not None
    header = [*LATENCY_HEADER, "req/s", "server CPU", "client CPU"]
    s = r.submit
    rows = submit_rows(f"{s.clients} clients", s)
    if r.submit_single:
        rows += submit_rows("1 client", r.submit_single)
    if r.submit_no_worker:
        rows += submit_rows(f"{r.submit_no_worker.clients} clients, no worker", r.submit_no_worker)
    baseline = ""
    if r.submit_baseline:
        b = r.submit_baseline
        rows += submit_rows(f"{b.clients} clients, baseline source", b)
        baseline = (
            f"\n\nAgainst `{r.baseline_src}` in the same run ({b.clients} clients): "
            f"{fmt_rate(s.submits_per_s)} vs {fmt_rate(b.submits_per_s)} submits/s "
            f"({fmt_ratio(ratio(s.submits_per_s, b.submits_per_s))}), p99 "
            f"{fmt_ms(s.submit.p99)} vs {fmt_ms(b.submit.p99)}."
        )
    paced = ""
    if r.submit_paced:
        p = r.submit_paced
        rate = fmt_rate(p.submit.n / p.cpu.wall)
        paced_rows = [
            [
                *summary_row(f"submitJob, {p.clients} clients paced", p.submit),
                rate,
                f"{p.cpu.server_pct:.0f}%",
                f"{p.cpu.client_pct:.0f}%",
            ],
            [*summary_row(f"GET /healthz, {p.clients} clients paced", p.healthz), rate, "", ""],
        ]
        paced = (
            f"\n\nPaced (open loop), same server: each of the {p.clients} clients sends one "
            f"request every {p.interval * 1000:.0f} ms, alternating submitJob and GET /healthz "
            f"(clients spread evenly over the interval), i.e. {p.submits_per_s:.0f} submits/s "
            f"plus as many healthz in all; {p.late} requests went out late because the "
            f"previous one overran its slot. CPU columns cover both kinds together.\n\n"
            + md_table(header, paced_rows)
        )
    return (
        f"{s.clients} clients (one httpx.AsyncClient and keep-alive connection each), "
        f"{s.per_client} sequential requests per client per phase, {s.rounds} rounds of "
        f"alternating phases (healthz, submit / submit, healthz), after a warm-up. Task "
        f"`bench_short` (20 tokens, ttft 0): the inline worker runs the submitted jobs while "
        f"the benchmark submits more (an unmeasured wait for them to finish follows each "
        f"submit phase). The diagnostic rows repeat it on a server started with "
        f"`JOBQL_INLINE_WORKER=false`, so only acknowledgements run; the 1-client rows (run "
        f"first, on the main server) show the latency without queueing. CPU columns: CPU "
        f"time of the server process and of the benchmark client during the measured "
        f"phases, as a share of one CPU (the machine has {machine_info()['nproc']}).\n\n"
        + md_table(header, rows)
        + f"\n\nsubmitJob / healthz ({s.clients} clients): p50 {fmt_ratio(s.p50_ratio)}, "
        f"p99 {fmt_ratio(s.p99_ratio)}." + baseline + paced
    )


def report_first_delta(r: Results) -> str:
    assert r.first_delta is not None
    f = r.first_delta
    rows: list[list[str]] = []
    for run, lanes in ((f, f"{f.concurrency} lanes"), (r.first_delta_single, "1 lane")):
        if run is None:
            continue
        rows += [
            summary_row(f"submit sent -> first V1OutputDelta received, {lanes}", run.total),
            summary_row("&nbsp;&nbsp;of which: submit sent -> acknowledged", run.ack),
            summary_row("&nbsp;&nbsp;of which: acknowledged -> first V1OutputDelta", run.after_ack),
            summary_row("&nbsp;&nbsp;by stamps: submit sent -> JobQueued.at", run.to_queued),
            summary_row("&nbsp;&nbsp;by stamps: JobQueued.at -> JobStarted.at", run.to_started),
            summary_row(
                "&nbsp;&nbsp;by stamps: JobStarted.at -> first OutputDelta.at", run.to_written
            ),
            summary_row("&nbsp;&nbsp;by stamps: first OutputDelta.at -> received", run.to_received),
            summary_row(
                f"baseline: GET /healthz + jobEvents(unknown id) -> V1NotFound, {lanes}",
                run.baseline,
            ),
        ]
    return (
        f"{f.samples} samples, {f.concurrency} lanes at a time; each lane holds one HTTP and "
        f"one graphql-transport-ws connection, submits `bench_short`, subscribes with "
        f"`after: 0` on the acknowledgement and stops the clock at the first V1OutputDelta "
        f"(then reads the stream to its end). Baseline samples alternate with real ones on the "
        f"same connections. The 1-lane rows (run first, same server) show the pipeline "
        f"without contention. *By stamps* splits the time with the events' `at` (taken by the "
        f"server when it writes the event, before commit; same clock as the client): the "
        f"submit transaction, then wake-up + claim + start, then provider + first delta, then "
        f"commit + bus + GraphQL + WebSocket to the subscriber.\n\n"
        + md_table(LATENCY_HEADER, rows)
        + f"\n\nfirst delta / baseline: p50 {fmt_ratio(f.p50_ratio)}, "
        f"p99 {fmt_ratio(f.p99_ratio)}. CPU over the whole run: {f.cpu.describe()}."
    )


def report_stream(r: Results) -> str:
    assert r.stream is not None
    st = r.stream
    header = [
        "",
        "runs",
        "frames",
        "delta frames",
        "text KB",
        "window ms",
        "1st delta ms",
        "events/s",
        "tokens/s",
        "MB/s",
        "server CPU",
        "client CPU",
    ]
    rows: list[list[str]] = []
    for label, runs in st.runs.items():
        cpu = st.cpu.get(label, CpuUse())
        rows.append(
            [
                label,
                str(len(runs)),
                f"{st.median(label, 'frames'):.0f}",
                f"{st.median(label, 'delta_frames'):.0f}",
                f"{st.median(label, 'text_bytes') / 1000:.1f}",
                fmt_ms(st.median(label, "window") * 1000),
                fmt_ms(st.median(label, "first_delta") * 1000),
                fmt_rate(st.median(label, "frames_per_s")),
                fmt_rate(st.median(label, "tokens_per_s")),
                f"{st.median(label, 'mb_per_s'):.2f}",
                f"{cpu.server_pct:.0f}%",
                f"{cpu.client_pct:.0f}%",
            ]
        )
    ratios: list[str] = []
    for label, _ in STREAM_CONFIGS:
        live, mirror = f"{label}, live", f"{label}, raw mirror"
        if live in st.runs:
            faster = ratio(st.median(mirror, "frames_per_s"), st.median(live, "frames_per_s"))
            share = ratio(
                st.median(live, "tokens_per_s"), st.median("raw per-token", "tokens_per_s")
            )
            ratios.append(
                f"- {label}: the raw endpoint sends the same frames {fmt_ratio(faster)} faster; "
                f"jobql's live tokens/s is {share:.2f}x the raw endpoint's one-frame-per-token "
                f"tokens/s."
            )
    return (
        f"One subscriber, job `bench_long` ({st.expected_tokens} tokens, tokens_per_second = 0), "
        f"subscribed right after the acknowledgement. Window = `subscribe` sent -> `complete` "
        f"received; all rates are per that window, medians over the runs. *replay* subscribes "
        f"again with `after: 0` once the job has finished (all from the event log). "
        f"*raw mirror* = bench/raw_ws_server.py sending exactly the frame sizes of the jobql "
        f"run; *raw per-token* = one V1OutputDelta-shaped frame per token. CPU columns: the "
        f"server that streams (jobql or the raw endpoint) and the client, over the windows "
        f"(10 ms clock ticks, so rough for short windows).\n\n"
        + md_table(header, rows)
        + "\n\n"
        + "\n".join(ratios)
    )


def report_limits(r: Results) -> str:
    assert r.limits
    ran = [lr for lr in r.limits if not lr.skipped]
    intro = (
        "Per database: a fresh database, one caller (`jobql keys create`, then `jobql keys "
        "set-limits <prefix> --rate 1000000/60 --cost-per-day 1000000 --max-active 1000000`, "
        "so nothing is refused) and servers identical but for `JOBQL_ENFORCE_LIMITS=false` / "
        "`true` (and `true` with `JOBQL_REDIS_URL=redis://127.0.0.1:6379/0`: rate counters in "
        "Redis instead of memory), all with `JOBQL_INLINE_WORKER=false`, so only the "
        "acknowledgement runs; before every block the caller's jobs are settled (set "
        "CANCELLED, as finished jobs would be), so its active jobs stay below one block's "
        "worth, as they stay below a real caller's `max_active_jobs`. One client, "
        "sequential submits of `bench_short`, one keep-alive connection per server, the same "
        'GraphQL document everywhere (`idempotencyKey: $k`, null for "no key"; a fresh key '
        "per submit otherwise). "
    )
    if ran:
        lr0 = ran[0]
        intro += (
            f"{lr0.rounds} rounds; in each, a block of {lr0.per_block} measured submits per "
            f"configuration (after 2 unmeasured ones), the order rotated every round; "
            f"{lr0.per_block * lr0.rounds} samples per configuration. After the warm-up the "
            f"caller is given a history of {lr0.history:,} finished jobs (copies of one of "
            f"its own, spread over the last day, each with an idempotency key still in the "
            f"window), as a busy backend caller has: a submit's cost must not grow with it. "
            f"*Added p50* = the "
            f"configuration's p50 minus the `{LIMITS_BASELINE}` p50; *per round* = the same "
            f"difference within each round (median and range over the rounds: the noise; "
            f"then its median over the first and over the last quarter of the rounds: the "
            f"trend over the run). On PostgreSQL the run does `ANALYZE` once after "
            f"the warm-up, as autovacuum would on a live database (a table this new has no "
            f"planner statistics yet). "
            f"Server CPU: jobql's process only, per submit (PostgreSQL's and Redis's own "
            f"CPU is not in it)."
        )
    parts = [intro]
    header = [
        "configuration",
        "n",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "added p50 ms",
        "per round: median (min .. max)",
        "first / last 4th of rounds",
        "server CPU ms/submit",
    ]
    for lr in r.limits:
        if lr.skipped:
            parts.append(f"**{lr.database}**: skipped ({lr.skipped}).")
            continue
        rows = []
        for name, run in lr.runs.items():
            s = run.summary
            if name == LIMITS_BASELINE:
                added = per_round = trend = "(baseline)"
            else:
                first, last = lr.quarter_deltas(name)
                trend = f"{fmt_delta(first)} / {fmt_delta(last)}"
                deltas = lr.round_deltas(name)
                added = fmt_delta(lr.added_p50(name))
                per_round = (
                    f"{fmt_delta(statistics.median(deltas))} "
                    f"({fmt_delta(min(deltas))} .. {fmt_delta(max(deltas))})"
                )
            rows.append(
                [
                    f"{name}: {run.config.description}",
                    *summary_row("", s)[1:],
                    added,
                    per_round,
                    trend,
                    f"{run.server_cpu_ms:.2f}",
                ]
            )
        analyzed = "; `ANALYZE` after the warm-up" if lr.analyzed else ""
        text = (
            f"**{lr.database}** ({lr.wall_seconds:.0f} s; the caller's history: "
            f"{lr.history:,} finished jobs; its active jobs: "
            f"{lr.active_jobs_start} at the start, {lr.active_jobs_end} at the end"
            f"{analyzed})\n\n" + md_table(header, rows)
        )
        if lr.redis_skipped:
            text += f"\n\nRedis row skipped: {lr.redis_skipped}."
        if lr.steps:
            step_rows = [
                [
                    step.name + (f" ({step.note})" if step.note else ""),
                    str(step.summary.n),
                    *(
                        f"{v:.2f}"
                        for v in (
                            step.summary.p50,
                            step.summary.p90,
                            step.summary.p99,
                            step.summary.max,
                            step.summary.mean,
                        )
                    ),
                ]
                for step in lr.steps
                if step.summary is not None
            ]
            text += (
                f"\n\nThe statements the limits and the key add, timed one at a time after the "
                f"HTTP run (servers stopped) with jobql's own engine and repositories against "
                f"the same {lr.database} database, inside an open transaction as in "
                f"`JobService._admit`, {lr.steps[0].summary.n if lr.steps[0].summary else 0} "
                f"calls each:\n\n" + md_table(LATENCY_HEADER, step_rows)
            )
        elif lr.steps_note:
            text += f"\n\n{lr.steps_note}"
        parts.append(text)
    return "\n\n".join(parts)


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "jobql"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' (jobql/ has uncommitted changes)' if dirty else ''}"


def command_line() -> str:
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(REPO_DIR))
    except ValueError:
        shown = str(exe)
    script = Path(sys.argv[0]).resolve()
    try:
        script_shown = str(script.relative_to(REPO_DIR))
    except ValueError:
        script_shown = str(script)
    return shlex.join([shown, script_shown, *sys.argv[1:]])


def render(r: Results, started: datetime, elapsed: float, load: tuple[float, ...]) -> str:
    info = machine_info()
    parts = [
        f"Command: `{command_line()}` (from the repository root)  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed:.0f} s  ",
        f"Revision: {git_revision()}  ",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}  ",
        "Clients and servers share the machine; baselines ran in the same run.  ",
        "Benchmarks 1-3 and 5 run with the limits on (the default) and the caller's limits "
        "lifted (`jobql keys set-limits`), so no request is refused.",
        "",
        "### Summary",
        "",
        report_summary(r),
    ]
    if r.submit:
        parts += ["", "### 1. submitJob acknowledgement latency", "", report_submit(r)]
    if r.first_delta:
        parts += ["", "### 2. submit -> first OutputDelta", "", report_first_delta(r)]
    if r.stream:
        parts += ["", "### 3. Events relayed to one subscriber", "", report_stream(r)]
    if r.limits:
        parts += [
            "",
            "### 4. What an idempotency key and the limits add to submitJob",
            "",
            report_limits(r),
        ]
    if r.live:
        parts += [
            "",
            "### 5. Live streams from an HTTP upstream to N subscribers",
            "",
            report_live(r.live, r.live_cpu_clients),
        ]
    return "\n".join(parts) + "\n"


def write_doc(generated: str) -> None:
    """Replace the generated section of the doc; the text around it is kept."""
    block = f"{BEGIN}\n{generated}{END}"
    if DOC.exists():
        text = DOC.read_text()
        head, found, rest = text.partition(BEGIN)
        if found:
            _, _, tail = rest.partition(END)
            DOC.write_text(head + block + (tail or "\n"))
            return
        DOC.write_text(text.rstrip("\n") + "\n\n" + block + "\n")
        return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="live: also run a server from this source tree (an older revision) at one N "
        "and compare server CPU per event",
    )
    args = parser.parse_args()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    if unknown := only - set(BENCHMARKS):
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    load = os.getloadavg()
    clock = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="jobql-bench-"))
    try:
        results = asyncio.run(run_all(sizes, tmp, only, args.baseline_src))
    finally:
        if args.keep:
            log(f"server logs and databases kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = render(results, started, time.monotonic() - clock, load)
    print(report)
    if args.write:
        write_doc(report)
        log(f"wrote {DOC.relative_to(REPO_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
