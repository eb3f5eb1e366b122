"""Benchmark 3: events per second relayed to one subscriber.

One job streams ``bench_long`` (5000 tokens, no pacing). The subscriber subscribes right
after the submit acknowledgement (jobEvents(after: 0)) and records every frame. Rates are
frames (or tokens, or bytes) divided by the window from sending `subscribe` to receiving
`complete`. The same job is then replayed from the log (after: 0 once it has finished).

Baselines, run interleaved with the jobql runs, on bench/raw_ws_server.py (bare Starlette
WebSocket under uvicorn, separate process):

* mirrored: exactly as many frames, of exactly the same byte sizes, as that jobql run sent;
* per-token: one frame per token (5000 small V1OutputDelta-shaped frames), i.e. what an
  uncoalesced relay of this output would have to push.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

from benchkit import (
    SUBSCRIBE,
    BenchError,
    CpuMeter,
    CpuUse,
    Frame,
    Server,
    graphql_ws,
    http_client,
    recv_frame,
    send_subscribe,
    submit_job,
)
from websockets.asyncio.client import ClientConnection

MAX_FRAMES = 60_000
RAW_QUERY = "subscription { raw }"  # the baseline server ignores the query


@dataclass(frozen=True)
class StreamRun:
    label: str
    frames: int  # `next` frames
    delta_frames: int
    tokens: int
    text_bytes: int
    wire_bytes: int  # all `next` frame bytes
    window: float  # seconds, subscribe sent -> complete received
    first_delta: float  # seconds, subscribe sent -> first V1OutputDelta
    sizes: tuple[int, ...] = field(repr=False)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.window

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.window

    @property
    def mb_per_s(self) -> float:
        return self.wire_bytes / self.window / 1e6


@dataclass
class StreamResult:
    """Per configuration, the runs in order; the report uses medians."""

    runs: dict[str, list[StreamRun]] = field(default_factory=dict)
    cpu: dict[str, CpuUse] = field(default_factory=dict)
    expected_tokens: int = 0

    def meter(self, label: str, server: Server) -> CpuMeter:
        """CPU of ``server`` and of this client while a ``label`` run streams."""
        return CpuMeter(server.process.pid, self.cpu.setdefault(label, CpuUse()))

    def add(self, run: StreamRun) -> None:
        self.runs.setdefault(run.label, []).append(run)

    def median(self, label: str, metric: str) -> float:
        values: list[float] = [getattr(r, metric) for r in self.runs[label]]
        return statistics.median(values)


async def _collect(
    ws: ClientConnection, sub_id: str, label: str, start: float, tokens: int | None = None
) -> StreamRun:
    frames: list[Frame] = []
    for _ in range(MAX_FRAMES):
        frame = await recv_frame(ws, sub_id)
        if frame.typename is None:
            end = frame.at  # `complete`
            break
        frames.append(frame)
    else:
        raise BenchError(f"{label}: stream did not complete within {MAX_FRAMES} frames")
    deltas = [f for f in frames if f.typename == "V1OutputDelta"]
    text = "".join(f.text for f in deltas)
    if not deltas:
        raise BenchError(f"{label}: no output deltas (last frame {frames[-1:]})")
    return StreamRun(
        label=label,
        frames=len(frames),
        delta_frames=len(deltas),
        tokens=len(text.split()) if tokens is None else tokens,
        text_bytes=len(text.encode()),
        wire_bytes=sum(f.size for f in frames),
        window=end - start,
        first_delta=deltas[0].at - start,
        sizes=tuple(f.size for f in frames),
    )


async def _jobql_live_and_replay(
    server: Server, ws: ClientConnection, label: str, n: int, task: str, result: StreamResult
) -> tuple[StreamRun, StreamRun]:
    async with http_client(server) as http:
        job_id = await submit_job(http, server, task, f"stream sample {n}")
    with result.meter(f"{label}, live", server):
        start = time.perf_counter()
        await send_subscribe(ws, f"live-{n}", SUBSCRIBE, {"id": job_id, "after": 0})
        live = await _collect(ws, f"live-{n}", f"{label}, live", start)
    with result.meter(f"{label}, replay", server):
        start = time.perf_counter()
        await send_subscribe(ws, f"replay-{n}", SUBSCRIBE, {"id": job_id, "after": 0})
        replay = await _collect(ws, f"replay-{n}", f"{label}, replay", start)
    return live, replay


async def _raw(
    raw: Server,
    ws: ClientConnection,
    label: str,
    sub_id: str,
    sizes: list[int],
    tokens: int,
    result: StreamResult,
) -> StreamRun:
    with result.meter(label, raw):
        start = time.perf_counter()
        await send_subscribe(ws, sub_id, RAW_QUERY, {"sizes": sizes})
        return await _collect(ws, sub_id, label, start, tokens=tokens)


def one_token_frame_size(sub_id: str, seq: int, token: str = " model") -> int:
    """Bytes of a one-token V1OutputDelta `next` frame."""
    event = {"__typename": "V1OutputDelta", "seq": seq, "text": token}
    return len(
        json.dumps({"type": "next", "id": sub_id, "payload": {"data": {"jobEvents": event}}})
    )


async def run_stream_bench(
    jobql: Server,
    raw: Server,
    result: StreamResult,
    *,
    label: str,
    repeats: int = 3,
    tokens: int = 5000,
    task: str = "bench_long",
    time_limit: float = 300.0,
) -> None:
    """Measure one jobql configuration (and its baselines) into ``result``."""
    result.expected_tokens = tokens
    async with asyncio.timeout(time_limit), graphql_ws(jobql) as ws, graphql_ws(raw) as raw_ws:
        # Warm-up: one job end to end and one raw stream, not recorded.
        warm_up = StreamResult()
        await _jobql_live_and_replay(jobql, ws, label, 0, task, warm_up)
        await _raw(raw, raw_ws, "warm-up", "warm", [200] * 100, 100, warm_up)
        for n in range(1, repeats + 1):
            live, replay = await _jobql_live_and_replay(jobql, ws, label, n, task, result)
            if live.tokens != tokens or replay.tokens != tokens:
                raise BenchError(f"{label}: expected {tokens} tokens, got {live.tokens}")
            result.add(live)
            result.add(replay)
            # Subscription ids as long as jobql's ("live-N"), so padding gives equal sizes.
            mirror, mirror_id = f"{label}, raw mirror", f"mirr-{n}"
            sizes = list(live.sizes)
            result.add(await _raw(raw, raw_ws, mirror, mirror_id, sizes, live.tokens, result))
            token_id = f"tokn-{n}"
            per_token = [one_token_frame_size(token_id, seq) for seq in range(1, tokens + 1)]
            result.add(
                await _raw(raw, raw_ws, "raw per-token", token_id, per_token, tokens, result)
            )
