"""Whole-job cost: server CPU per short job from submit to its end, this source against another.

    .venv/bin/python bench/bench_job_cost.py --baseline-src /tmp/jobql-old [--jobs 1000]

Benchmark 1 counts acknowledgements per second while the inline worker runs the jobs in the
same process; a server that leaves jobs queued during the measured phase looks faster there
than one that runs them as they come. This one counts the whole job: `clients` callers
submit `jobs` short jobs (`bench_short`, 20 tokens at once) as fast as they are answered,
then the clock runs until no job is queued or running. Reported: wall time to the last job's
end, jobs per second, and the server process's CPU seconds per job (submit, claim, run,
events, finish). Each source runs twice, alternating (this, baseline, this, baseline), each
on a fresh embedded-default server (SQLite file, inline worker).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchkit import (
    Server,
    http_client,
    md_table,
    process_cpu_seconds,
    running_jobql,
    submit_job,
    wait_idle,
)


async def run_once(source: Path | None, clients: int, jobs: int) -> tuple[float, float]:
    """(wall seconds until every job ended, server CPU seconds) for one fresh server."""
    workdir = Path(tempfile.mkdtemp(prefix="jobql-bench-cost-"))
    async with running_jobql(workdir, source=source) as server:
        await _load(server, clients, max(clients, jobs // 20))  # warm-up
        cpu_before = process_cpu_seconds(server.process.pid)
        started = time.monotonic()
        await _load(server, clients, jobs)
        wall = time.monotonic() - started
        cpu = process_cpu_seconds(server.process.pid) - cpu_before
    return wall, cpu


async def _load(server: Server, clients: int, jobs: int) -> None:
    per_client = jobs // clients

    async def one(n: int) -> None:
        async with http_client(server) as client:
            for i in range(per_client):
                await submit_job(client, server, "bench_short", f"job {n}.{i}")

    await asyncio.gather(*(one(n) for n in range(clients)))
    async with http_client(server) as client:
        await wait_idle(client, server)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"this source": [], "baseline": []}
    for _ in range(2):
        results["this source"].append(await run_once(None, args.clients, args.jobs))
        results["baseline"].append(await run_once(args.baseline_src, args.clients, args.jobs))
    rows = []
    for name, runs in results.items():
        for wall, cpu in runs:
            rows.append(
                [
                    name,
                    str(args.jobs),
                    f"{wall:.1f}",
                    f"{args.jobs / wall:.0f}",
                    f"{cpu * 1000 / args.jobs:.1f}",
                ]
            )
    print(f"`bench/bench_job_cost.py --baseline-src {args.baseline_src}`, {args.clients} clients\n")
    print(md_table(["server", "jobs", "wall s", "jobs/s", "server CPU ms/job"], rows))
    mine = sum(c for _, c in results["this source"])
    theirs = sum(c for _, c in results["baseline"])
    print(f"\nCPU per job, this source / baseline: {mine / theirs:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
