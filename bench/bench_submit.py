"""Benchmark 1: submitJob acknowledgement latency at 20 concurrent clients.

Closed loop (``run_submit_bench``): every client sends its next request as soon as the last
one is answered, so the clients together go as fast as the server (or the client process)
allows -- latency there includes queueing at saturation. Paced (``run_paced_submit_bench``):
the same 20 clients send at a fixed rate well below saturation, so latency is the cost of one
request under moderate concurrent load.

Each client is its own httpx.AsyncClient (one keep-alive connection) doing sequential
requests. Baseline, measured in the same run by the same clients on the same server:
GET /healthz (the HTTP floor: uvicorn + Starlette + middleware, no GraphQL, no database).
Phases alternate (healthz, submit, submit, healthz, ...) so drift on a noisy machine hits
both sides alike. The submitted jobs run on the inline worker during the submit phase; after
each submit phase the benchmark waits (unmeasured) until the worker has finished them, so a
healthz phase never measures the previous phase's backlog.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from benchkit import CpuMeter, CpuUse, Server, Summary, http_client, submit_job, wait_idle

TARGET_P99_MS = 20.0


@dataclass
class SubmitResult:
    clients: int
    per_client: int
    rounds: int
    submit: Summary
    healthz: Summary
    wall_seconds: float
    submit_cpu: CpuUse = field(default_factory=CpuUse)
    healthz_cpu: CpuUse = field(default_factory=CpuUse)

    @property
    def submits_per_s(self) -> float:
        return self.submit.n / self.submit_cpu.wall

    @property
    def p99_ratio(self) -> float:
        return self.submit.p99 / self.healthz.p99

    @property
    def p50_ratio(self) -> float:
        return self.submit.p50 / self.healthz.p50


async def _healthz_loop(client: httpx.AsyncClient, server: Server, count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        response = await client.get(f"{server.http_url}/healthz")
        samples.append(time.perf_counter() - start)
        response.raise_for_status()
    return samples


async def _submit_loop(
    client: httpx.AsyncClient, server: Server, count: int, client_no: int, task: str
) -> list[float]:
    samples: list[float] = []
    for n in range(count):
        start = time.perf_counter()
        await submit_job(client, server, task, f"client {client_no} request {n}")
        samples.append(time.perf_counter() - start)
    return samples


async def _phase(
    kind: str, clients: list[httpx.AsyncClient], server: Server, count: int, task: str
) -> list[float]:
    if kind == "healthz":
        loops = [_healthz_loop(c, server, count) for c in clients]
    else:
        loops = [_submit_loop(c, server, count, i, task) for i, c in enumerate(clients)]
    results = await asyncio.gather(*loops)
    return [s for per_client in results for s in per_client]


async def run_submit_bench(
    server: Server,
    *,
    clients: int = 20,
    per_client: int = 25,
    rounds: int = 3,
    warmup: int = 3,
    task: str = "bench_short",
    time_limit: float = 300.0,
    drain: bool = True,
) -> SubmitResult:
    """``drain``: wait for the worker to finish the submitted jobs after each submit phase
    (pass False when no worker runs)."""
    submit: list[float] = []
    healthz: list[float] = []
    cpu = {"submit": CpuUse(), "healthz": CpuUse()}
    started = time.perf_counter()
    pool = [http_client(server) for _ in range(clients)]
    try:
        async with asyncio.timeout(time_limit):
            # Warm-up: open every connection and touch both paths; not measured.
            await _phase("healthz", pool, server, warmup, task)
            await _phase("submit", pool, server, warmup, task)
            if drain:
                await wait_idle(pool[0], server)
            for round_no in range(rounds):
                order = ("healthz", "submit") if round_no % 2 == 0 else ("submit", "healthz")
                for kind in order:
                    with CpuMeter(server.process.pid, cpu[kind]):
                        samples = await _phase(kind, pool, server, per_client, task)
                    if kind == "submit" and drain:
                        await wait_idle(pool[0], server)
                    (healthz if kind == "healthz" else submit).extend(samples)
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))
    return SubmitResult(
        clients=clients,
        per_client=per_client,
        rounds=rounds,
        submit=Summary.of(submit),
        healthz=Summary.of(healthz),
        wall_seconds=time.perf_counter() - started,
        submit_cpu=cpu["submit"],
        healthz_cpu=cpu["healthz"],
    )


@dataclass
class PacedResult:
    clients: int
    interval: float  # seconds between one client's requests
    submit: Summary
    healthz: Summary
    late: int  # requests sent after their slot because the previous one overran it
    cpu: CpuUse

    @property
    def submits_per_s(self) -> float:
        return self.clients / (2 * self.interval)


async def _paced_client(
    client: httpx.AsyncClient,
    server: Server,
    *,
    client_no: int,
    clients: int,
    interval: float,
    count: int,
    task: str,
    t0: float,
    submit: list[float],
    healthz: list[float],
) -> int:
    late = 0
    offset = interval * client_no / clients
    for k in range(2 * count):
        slot = t0 + offset + k * interval
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late += 1
        start = time.perf_counter()
        if (k + client_no) % 2 == 0:
            await submit_job(client, server, task, f"paced client {client_no} request {k}")
            submit.append(time.perf_counter() - start)
        else:
            (await client.get(f"{server.http_url}/healthz")).raise_for_status()
            healthz.append(time.perf_counter() - start)
    return late


async def run_paced_submit_bench(
    server: Server,
    *,
    clients: int = 20,
    interval: float = 0.5,
    count: int = 20,
    task: str = "bench_short",
    time_limit: float = 300.0,
) -> PacedResult:
    """Each client sends one request every ``interval`` seconds, alternating submitJob and
    GET /healthz, ``count`` of each; clients are spread evenly over the interval."""
    submit: list[float] = []
    healthz: list[float] = []
    cpu = CpuUse()
    pool = [http_client(server) for _ in range(clients)]
    try:
        async with asyncio.timeout(time_limit):
            await _phase("healthz", pool, server, 2, task)  # warm-up: open the connections
            await _phase("submit", pool, server, 1, task)
            await wait_idle(pool[0], server)
            t0 = time.perf_counter() + 0.1
            with CpuMeter(server.process.pid, cpu):
                lates = await asyncio.gather(
                    *(
                        _paced_client(
                            c,
                            server,
                            client_no=i,
                            clients=clients,
                            interval=interval,
                            count=count,
                            task=task,
                            t0=t0,
                            submit=submit,
                            healthz=healthz,
                        )
                        for i, c in enumerate(pool)
                    )
                )
            await wait_idle(pool[0], server)
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))
    return PacedResult(
        clients=clients,
        interval=interval,
        submit=Summary.of(submit),
        healthz=Summary.of(healthz),
        late=sum(lates),
        cpu=cpu,
    )
