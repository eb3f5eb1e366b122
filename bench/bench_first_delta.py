"""Benchmark 2: submit -> first V1OutputDelta received by a subscriber.

``concurrency`` lanes each hold one HTTP keep-alive connection and one initialised
graphql-transport-ws connection (a client that is already connected). A sample is: send
submitJob, on the acknowledgement subscribe to jobEvents(jobId, after: 0) (replay covers
anything already written), stop the clock at the first V1OutputDelta, then read the stream to
its end so the next sample starts clean.

Baseline, interleaved with the samples on the same connections: the same two round trips
without a job -- GET /healthz, then jobEvents on an unknown id until its V1NotFound frame.
That is the transport + GraphQL + auth floor; the difference is the queue, worker, provider
and event pipeline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field

import httpx
from benchkit import (
    SUBSCRIBE,
    BenchError,
    CpuMeter,
    CpuUse,
    Server,
    Summary,
    graphql_ws,
    http_client,
    recv_frame,
    send_subscribe,
    submit_job,
)
from websockets.asyncio.client import ClientConnection

TARGET_P99_MS = 50.0
MAX_FRAMES_PER_STREAM = 1000


@dataclass
class FirstDeltaResult:
    samples: int
    concurrency: int
    total: Summary  # submit sent -> first OutputDelta received
    ack: Summary  # submit sent -> submit acknowledged
    after_ack: Summary  # acknowledgement -> first OutputDelta received
    baseline: Summary  # GET /healthz + subscribe to an unknown id -> first frame
    wall_seconds: float
    cpu: CpuUse  # the whole run, warm-up included
    # Where the time goes, from the events' `at` stamps (same machine, same clock):
    to_queued: Summary  # submit sent -> JobQueued.at (the submit transaction)
    to_started: Summary  # JobQueued.at -> JobStarted.at (wake-up, claim, start transaction)
    to_written: Summary  # JobStarted.at -> first OutputDelta.at (provider, delta transaction)
    to_received: Summary  # first OutputDelta.at -> received (commit, bus, GraphQL, WebSocket)

    @property
    def p99_ratio(self) -> float:
        return self.total.p99 / self.baseline.p99

    @property
    def p50_ratio(self) -> float:
        return self.total.p50 / self.baseline.p50


@dataclass
class _Lane:
    http: httpx.AsyncClient
    ws: ClientConnection
    ids: itertools.count[int]
    total: list[float] = field(default_factory=list)
    ack: list[float] = field(default_factory=list)
    after_ack: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    to_queued: list[float] = field(default_factory=list)
    to_started: list[float] = field(default_factory=list)
    to_written: list[float] = field(default_factory=list)
    to_received: list[float] = field(default_factory=list)

    def clear(self) -> None:
        for name in SAMPLE_LISTS:
            getattr(self, name).clear()


SAMPLE_LISTS = (
    "total",
    "ack",
    "after_ack",
    "baseline",
    "to_queued",
    "to_started",
    "to_written",
    "to_received",
)


async def _drain(ws: ClientConnection, sub_id: str) -> None:
    for _ in range(MAX_FRAMES_PER_STREAM):
        if (await recv_frame(ws, sub_id)).typename is None:
            return
    raise BenchError("stream did not complete")


async def _sample(lane: _Lane, server: Server, task: str, n: int) -> None:
    sub_id = str(next(lane.ids))
    wall_start = time.time()
    start = time.perf_counter()
    job_id = await submit_job(lane.http, server, task, f"first delta sample {n}")
    acked = time.perf_counter()
    await send_subscribe(lane.ws, sub_id, SUBSCRIBE, {"id": job_id, "after": 0})
    stamps: dict[str, float] = {}
    for _ in range(MAX_FRAMES_PER_STREAM):
        frame = await recv_frame(lane.ws, sub_id)
        if frame.typename and frame.event_at is not None:
            stamps.setdefault(frame.typename, frame.event_at)
        if frame.typename == "V1OutputDelta":
            lane.total.append(frame.at - start)
            lane.ack.append(acked - start)
            lane.after_ack.append(frame.at - acked)
            queued, started = stamps.get("V1JobQueued"), stamps.get("V1JobStarted")
            if queued is not None and started is not None:
                written = stamps["V1OutputDelta"]
                received = wall_start + (frame.at - start)
                lane.to_queued.append(queued - wall_start)
                lane.to_started.append(started - queued)
                lane.to_written.append(written - started)
                lane.to_received.append(received - written)
            break
        if frame.typename is None or frame.typename in {"V1JobFailed", "V1JobCancelled"}:
            raise BenchError(f"job {job_id} ended without output ({frame.typename})")
    await _drain(lane.ws, sub_id)


async def _baseline(lane: _Lane, server: Server) -> None:
    sub_id = str(next(lane.ids))
    start = time.perf_counter()
    (await lane.http.get(f"{server.http_url}/healthz")).raise_for_status()
    await send_subscribe(lane.ws, sub_id, SUBSCRIBE, {"id": str(uuid.uuid4()), "after": 0})
    frame = await recv_frame(lane.ws, sub_id)
    lane.baseline.append(frame.at - start)
    if frame.typename != "V1NotFound":
        raise BenchError(f"expected V1NotFound, got {frame.typename}")
    await _drain(lane.ws, sub_id)


async def _run_lane(
    lane: _Lane, server: Server, task: str, count: int, warmup: int, lane_no: int
) -> None:
    for n in range(warmup):
        await _baseline(lane, server)
        await _sample(lane, server, task, -n)
    lane.clear()
    for n in range(count):
        # Alternate which goes first, so neither always follows the other's tail.
        if n % 2:
            await _sample(lane, server, task, lane_no * count + n)
            await _baseline(lane, server)
        else:
            await _baseline(lane, server)
            await _sample(lane, server, task, lane_no * count + n)


async def run_first_delta_bench(
    server: Server,
    *,
    samples: int = 200,
    concurrency: int = 5,
    warmup: int = 2,
    task: str = "bench_short",
    time_limit: float = 300.0,
) -> FirstDeltaResult:
    per_lane = -(-samples // concurrency)
    started = time.perf_counter()
    lanes: list[_Lane] = []

    async def lane_main(lane_no: int) -> None:
        async with http_client(server) as http, graphql_ws(server) as ws:
            lane = _Lane(http, ws, itertools.count(1))
            lanes.append(lane)
            await _run_lane(lane, server, task, per_lane, warmup, lane_no)

    cpu = CpuUse()
    with CpuMeter(server.process.pid, cpu):
        async with asyncio.timeout(time_limit):
            await asyncio.gather(*(lane_main(i) for i in range(concurrency)))

    def pooled(attr: str) -> list[float]:
        return [s for lane in lanes for s in getattr(lane, attr)]

    return FirstDeltaResult(
        samples=len(pooled("total")),
        concurrency=concurrency,
        total=Summary.of(pooled("total")),
        ack=Summary.of(pooled("ack")),
        after_ack=Summary.of(pooled("after_ack")),
        baseline=Summary.of(pooled("baseline")),
        wall_seconds=time.perf_counter() - started,
        cpu=cpu,
        to_queued=Summary.of(pooled("to_queued")),
        to_started=Summary.of(pooled("to_started")),
        to_written=Summary.of(pooled("to_written")),
        to_received=Summary.of(pooled("to_received")),
    )
