"""Nothing acknowledged is lost when the server restarts or a worker vanishes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from jobql.models import JobStatus
from jobql.models.base import utcnow
from jobql.settings import Settings
from tests.api import serve, stored


async def test_restart_loses_nothing_acknowledged(settings: Settings) -> None:
    one_at_a_time = settings.model_copy(update={"worker_concurrency": 1})
    async with serve(one_at_a_time) as server:
        api = await server.client()
        key = api.key
        running = await api.submit_ok("slow", {"topic": "interrupted"})
        queued = [(await api.submit_ok("echo", {"topic": f"q{i}"}))["id"] for i in range(3)]
        await api.wait_for_event(running["id"], "V1OutputDelta")
        await api.aclose()
    # The server is gone with one job mid-stream and three queued.

    async with serve(settings) as server:
        from tests.api import Api

        api = Api(server, key)
        for job_id in [running["id"], *queued]:
            events = await api.events(job_id)
            log = stored(events)
            assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
            assert log[-1]["__typename"] == "V1JobSucceeded"
            assert (await api.job(job_id))["status"] == "SUCCEEDED"
        interrupted = await api.events(running["id"])
        starts = [e["attempt"] for e in interrupted if e["__typename"] == "V1JobStarted"]
        assert starts == [1, 2]  # attempt 2 tells clients to drop attempt 1's partial output
        final = interrupted[-1]
        after_restart = interrupted[
            [e["__typename"] for e in interrupted].index("V1JobStarted", 2) :
        ]
        assert (
            "".join(e["text"] for e in after_restart if e["__typename"] == "V1OutputDelta")
            == (final["output"])
        )
        await api.aclose()


async def test_job_of_a_vanished_worker_is_rescued(settings: Settings) -> None:
    fast_leases = settings.model_copy(update={"lease_renew_seconds": 0.2})
    async with serve(fast_leases.model_copy(update={"inline_worker": False})) as server:
        api = await server.client()
        key = api.key
        job = await api.submit_ok("echo", {"topic": "orphan"})
        # A worker claimed it, then died: its lease ran out.
        await server.update_job(
            job["id"],
            status=JobStatus.RUNNING.value,
            attempts=1,
            lease_owner="ghost",
            lease_expires_at=utcnow() - timedelta(seconds=1),
        )
        await api.aclose()
    async with serve(fast_leases) as server:
        from tests.api import Api

        api = Api(server, key)
        events = await api.events(job["id"])
        assert events[-1]["__typename"] == "V1JobSucceeded"
        assert [e["attempt"] for e in events if e["__typename"] == "V1JobStarted"] == [2]
        await api.aclose()


async def test_job_past_its_last_attempt_fails_as_worker_lost(settings: Settings) -> None:
    fast_leases = settings.model_copy(update={"lease_renew_seconds": 0.2, "max_attempts": 1})
    async with serve(fast_leases) as server:
        api = await server.client()
        job = await api.submit_ok("hang", {"topic": "cursed"})
        await api.wait_for_event(job["id"], "V1Progress")
        # Another worker's view: this job's lease holder is gone.
        await server.update_job(
            job["id"], lease_owner="ghost", lease_expires_at=utcnow() - timedelta(seconds=1)
        )
        events = await api.events(job["id"])
        assert events[-1]["__typename"] == "V1JobFailed"
        assert events[-1]["error"]["code"] == "WORKER_LOST"
        assert events[-1]["error"]["retryable"] is True
        # The real worker notices it lost the lease (at its next renewal) and stops the
        # inference.
        record = server.provider.records[f"{job['id']}:1"]
        async with asyncio.timeout(10):
            await record.stopped.wait()
        assert record.closed
        await api.aclose()
