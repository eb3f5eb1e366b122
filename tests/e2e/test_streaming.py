"""Submit -> stream -> terminal -> completion, replay, resume and disconnects, over real
HTTP and WebSocket, on every backend."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from jobql.events.backends import SupervisedPostgresBackend
from jobql.settings import Settings
from tests.api import (
    LEGACY_GRAPHQL_WS,
    TERMINAL,
    Server,
    events_request,
    serve,
    stored,
    text_of,
)
from tests.backends import BACKENDS, Backend, bus_url

# The streaming suite also runs over the postgres:// bus (LISTEN/NOTIFY).
STREAMING_BACKENDS = [*BACKENDS, Backend("postgres+pgbus", "postgres", "postgres")]


@pytest.fixture(params=STREAMING_BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


def assert_complete_log(events: list[dict[str, Any]]) -> None:
    """seq 1..n without gaps, queued first, exactly one terminal event, last."""
    seqs = [e["seq"] for e in stored(events)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[0]["__typename"] == "V1JobQueued"
    terminal = [e for e in events if e["__typename"] in TERMINAL]
    assert len(terminal) == 1
    assert events[-1] is terminal[0]


async def test_submit_stream_terminal_and_completion(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "tides"})
        assert job["status"] in ("QUEUED", "RUNNING", "SUCCEEDED")

        events = await api.events(job["id"])

        assert_complete_log(events)
        types = [e["__typename"] for e in events]
        assert types[1] == "V1JobStarted"
        assert events[1]["attempt"] == 1
        assert "V1OutputDelta" in types
        final = events[-1]
        assert final["__typename"] == "V1JobSucceeded"
        assert final["output"] == text_of(events)
        assert final["usage"]["outputTokens"] == 40
        assert final["usage"]["inputTokens"] > 0
        assert final["costUsd"] == pytest.approx(
            final["usage"]["inputTokens"] / 1000 * 1.0 + 40 / 1000 * 2.0
        )
        assert final["durationMs"] >= 0
        assert final["model"] == {
            "provider": "simulated",
            "name": "sim-fast",
            "version": "sim-fast-1",
        }

        stored_job = await api.job(job["id"])
        assert stored_job["status"] == "SUCCEEDED"
        assert stored_job["output"] == final["output"]
        assert stored_job["lastSeq"] == events[-1]["seq"]
        assert stored_job["usage"] == {
            **final["usage"],
            "totalTokens": final["usage"]["inputTokens"] + 40,
        }
        assert stored_job["contract"]["model"]["version"] == "sim-fast-1"
        assert stored_job["contract"]["apiVersion"] == "v1"
        await api.aclose()


async def test_subscribe_after_finish_replays_everything(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "replay"})
        live = await api.events(job["id"])
        replay = await api.events(job["id"])
        assert stored(replay) == stored(live)
        assert_complete_log(replay)
        await api.aclose()


async def test_resume_after_cursor_gets_each_later_event_once(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "resume"})
        full = stored(await api.events(job["id"]))
        for k in (0, 1, 2, len(full) // 2, len(full) - 1):
            resumed = stored(await api.events(job["id"], after=k))
            assert resumed == full[k:], f"after={k}"
        # A client that already saw the terminal event gets a stream that just completes.
        assert await api.events(job["id"], after=len(full)) == []
        await api.aclose()


async def test_resume_mid_stream_on_a_running_job(settings: Settings) -> None:
    """Read a few live events, drop the connection, come back with after=lastSeq."""
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("slow", {"topic": "reconnect"})
        first: list[dict[str, Any]] = []
        async with api.ws() as session:
            async for item in session.subscribe(events_request(job["id"])):
                first.append(item["jobEvents"])
                if sum(e["__typename"] == "V1OutputDelta" for e in first) == 3:
                    break
        last_seq = stored(first)[-1]["seq"]
        rest = await api.events(job["id"], after=last_seq)
        combined = stored(first) + stored(rest)
        assert_complete_log(combined)
        finished = await api.job(job["id"])
        assert finished["status"] == "SUCCEEDED"
        assert text_of(combined) == finished["output"]
        await api.aclose()


async def test_disconnect_mid_stream_does_not_stop_the_job(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("slow", {"topic": "walk away"})
        # The client goes away while the job streams.
        await api.wait_for_event(job["id"], "V1OutputDelta")
        later = await api.events(job["id"])
        assert_complete_log(later)
        assert later[-1]["__typename"] == "V1JobSucceeded"
        assert later[-1]["usage"]["outputTokens"] == 120
        assert text_of(later) == later[-1]["output"]
        await api.aclose()


async def test_many_concurrent_subscribers_see_the_same_log(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("slow", {"topic": "crowd"})
        results = await asyncio.gather(*(api.events(job["id"]) for _ in range(5)))
        for events in results:
            assert_complete_log(stored(events))
            assert stored(events) == stored(results[0])
        await api.aclose()


async def test_legacy_graphql_ws_protocol_streams_too(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "legacy"})
        events = await api.events(job["id"], protocol=LEGACY_GRAPHQL_WS)
        assert_complete_log(events)
        await api.aclose()


async def test_agent_progress_phases_are_events(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("research", {"topic": "tides"})
        events = await api.events(job["id"])
        phases = [e["phase"] for e in events if e["__typename"] == "V1Progress"]
        assert phases == ["planning", "searching", "writing"]
        assert events[-1]["__typename"] == "V1JobSucceeded"
        await api.aclose()


async def test_heartbeat_when_idle_carries_progress_so_far(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("hang", {"topic": "quiet"})
        beats: list[dict[str, Any]] = []
        async with asyncio.timeout(10), api.ws() as session:
            async for item in session.subscribe(events_request(job["id"])):
                event = item["jobEvents"]
                if event["__typename"] == "V1Heartbeat":
                    beats.append(event)
                    if len(beats) == 2:
                        break
        assert all("seq" not in b for b in beats)
        assert beats[-1]["status"] == "RUNNING"
        assert beats[-1]["currentPhase"] == "thinking"
        assert beats[-1]["elapsedMs"] > beats[0]["elapsedMs"] >= 0
        await api.cancel(job["id"])
        await api.aclose()


async def test_first_delta_is_not_coalesced_later_ones_are(settings: Settings) -> None:
    settings = settings.model_copy(update={"coalesce_ms": 300})
    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "batching"})
        events = await api.events(job["id"])
        deltas = [e["text"] for e in events if e["__typename"] == "V1OutputDelta"]
        assert len(deltas[0].split()) == 1  # the first token went out alone, at once
        assert len(deltas) < 40  # the other 39 tokens were batched
        assert "".join(deltas) == events[-1]["output"]
        await api.aclose()


async def test_stream_survives_a_dropped_bus_connection(
    settings: Settings, backend: Backend
) -> None:
    """Redis or PostgreSQL restarted (or a proxy closed the bus's listening connection)
    mid-stream: the subscriber still gets every event exactly once, and the server's bus
    reconnects by itself."""
    if backend.bus == "memory":
        pytest.skip("the in-process bus has no connection to lose")
    name = f"jobql-test-{uuid.uuid4().hex[:12]}"
    if backend.bus == "redis":
        settings = settings.model_copy(
            update={"broadcast_url": f"{settings.broadcast_url}?client_name={name}"}
        )

    async def drop_listening_connection(server: Server) -> None:
        bus_backend = server.runtime.bus._broadcast._backend
        if isinstance(bus_backend, SupervisedPostgresBackend):
            assert bus_backend._listener is not None
            pid = bus_backend._listener.get_server_pid()
            admin = await asyncpg.connect(bus_url("postgres"))
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await admin.close()
            return
        redis_admin = aioredis.Redis.from_url(bus_url("redis"))
        for client in await redis_admin.client_list(_type="pubsub"):
            if client.get("name") == name:
                await redis_admin.client_kill_filter(_id=client["id"])
        await redis_admin.aclose()

    async with serve(settings) as server:
        api = await server.client()
        job = await api.submit_ok("slow", {"topic": "outage"})
        seen: list[dict[str, Any]] = []
        dropped = False
        async with api.ws() as session:
            async for item in session.subscribe(events_request(job["id"])):
                seen.append(item["jobEvents"])
                deltas = sum(e["__typename"] == "V1OutputDelta" for e in seen)
                if deltas == 3 and not dropped:
                    await drop_listening_connection(server)
                    dropped = True
        assert dropped
        assert_complete_log(stored(seen))
        assert text_of(seen) == (await api.job(job["id"]))["output"]
        assert server.runtime.bus._broadcast._backend.reconnects >= 1  # type: ignore[attr-defined]
        assert server.runtime.bus.healthy
        await api.aclose()
