"""Retention against a running server, on every backend: a finished job's log is compacted
after the log window and the job deleted after the job window (time driven through the
worker's prune pass), while its usage keeps counting; active jobs are never touched."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import datetime, timedelta
from typing import Any

from jobql.models.base import utcnow
from jobql.services.retention import PruneCounts
from jobql.settings import Settings
from jobql.worker import Worker
from tests.api import TERMINAL, Api, Server, serve, stored, text_of
from tests.backends import Databases
from tests.conftest import fast_settings
from tests.e2e.test_usage_report import usage as v2_usage
from tests.e2e.v2.conftest import v2_client
from tests.faults.servers import wait_until

LOG_SECONDS = 60
JOB_SECONDS = 600
RETENTION = """
query Job($id: ID!) {
  job(id: $id) {
    __typename
    ... on V1Job { id status output finishedAt lastSeq logCompacted logExpiresAt expiresAt
                   usage { inputTokens outputTokens costUsd } }
  }
}"""
V2_RETENTION = """
query Job($id: ID!) {
  job(id: $id) {
    __typename
    ... on V2Job { status output finishedAt lastSeq logCompacted logExpiresAt expiresAt }
  }
}"""
VIEWER = "{ viewer { usageToday { jobs inputTokens outputTokens costUsd } } }"


def retention_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "event_log_retention_seconds": LOG_SECONDS,
            "job_retention_seconds": JOB_SECONDS,
            "prune_every_seconds": 0,  # passes run here, at chosen times
        }
    )


def worker_of(server: Server) -> Worker:
    worker = server.runtime.worker
    assert worker is not None
    return worker


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def retention_of(api: Api, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = (await api.execute(RETENTION, {"id": job_id}))["job"]
    return job


async def test_a_finished_job_is_compacted_then_deleted_and_its_usage_stays(
    settings: Settings,
) -> None:
    async with serve(retention_settings(settings)) as server:
        api = await server.client("alice")
        submitted = await api.submit_ok("echo", {"topic": "retention"})
        live = await api.events(submitted["id"])
        job = await retention_of(api, submitted["id"])
        assert job["status"] == "SUCCEEDED"
        finished = at(job["finishedAt"])
        assert at(job["logExpiresAt"]) == finished + timedelta(seconds=LOG_SECONDS)
        assert at(job["expiresAt"]) == finished + timedelta(seconds=JOB_SECONDS)
        assert job["logCompacted"] is False
        usage_before = (await api.execute(VIEWER))["viewer"]["usageToday"]
        assert usage_before["jobs"] == 1
        worker = worker_of(server)

        # Inside the log window nothing changes.
        inside = await worker.prune(finished + timedelta(seconds=LOG_SECONDS - 1))
        assert inside == PruneCounts()
        assert stored(await api.events(submitted["id"])) == stored(live)

        compacted = await worker.prune(finished + timedelta(seconds=LOG_SECONDS + 1))

        assert compacted == PruneCounts(jobs_compacted=1, events_deleted=len(stored(live)) - 2)
        after = await retention_of(api, submitted["id"])
        assert after["logCompacted"] is True
        assert {k: after[k] for k in ("output", "usage", "lastSeq", "finishedAt")} == {
            k: job[k] for k in ("output", "usage", "lastSeq", "finishedAt")
        }
        replay = stored(await api.events(submitted["id"]))
        last = job["lastSeq"]
        assert [(e["__typename"], e["seq"]) for e in replay] == [
            ("V1OutputDelta", last - 1),
            ("V1JobSucceeded", last),
        ]
        assert text_of(replay) == job["output"] == text_of(live)
        assert replay[-1] == stored(live)[-1]  # the terminal event as it was
        # Resuming inside the removed range gets the compacted form; at its delta, the rest.
        assert stored(await api.events(submitted["id"], after=2)) == replay
        assert stored(await api.events(submitted["id"], after=last - 1)) == replay[-1:]

        deleted = await worker.prune(finished + timedelta(seconds=JOB_SECONDS + 1))

        assert deleted == PruneCounts(events_deleted=2, jobs_deleted=1)
        assert (await api.job(submitted["id"]))["__typename"] == "V1NotFound"
        assert (await api.cancel(submitted["id"]))["__typename"] == "V1NotFound"
        assert [e["__typename"] for e in await api.events(submitted["id"])] == ["V1NotFound"]
        listed = await api.execute("{ jobs(first: 10) { edges { node { id } } } }")
        assert listed["jobs"]["edges"] == []
        assert (await api.execute(VIEWER))["viewer"]["usageToday"] == usage_before
        await api.aclose()


async def test_a_deleted_v2_job_is_not_found_and_still_in_the_usage_report(
    settings: Settings,
) -> None:
    async with serve(retention_settings(settings)) as server:
        v2 = await v2_client(server, "bob")
        submitted = await v2.submit_ok("echo", {"topic": "retention"})
        await v2.events(submitted["id"])
        job = (await v2.execute(V2_RETENTION, {"id": submitted["id"]}))["job"]
        finished = at(job["finishedAt"])
        assert at(job["expiresAt"]) == finished + timedelta(seconds=JOB_SECONDS)
        day = finished.date().isoformat()
        report = await v2_usage(v2, day, day)  # type: ignore[arg-type]
        assert report["total"]["jobs"]["total"] == 1

        await worker_of(server).prune(finished + timedelta(seconds=LOG_SECONDS + 1))
        compacted = (await v2.execute(V2_RETENTION, {"id": submitted["id"]}))["job"]
        assert compacted["logCompacted"] is True
        assert compacted["output"] == job["output"]
        replay = stored(await v2.events(submitted["id"]))
        assert [e["__typename"] for e in replay] == ["V2OutputDelta", "V2JobSucceeded"]

        counts = await worker_of(server).prune(finished + timedelta(seconds=JOB_SECONDS + 1))

        assert counts.jobs_deleted == 1
        assert (await v2.job(submitted["id"]))["__typename"] == "V2NotFound"
        assert await v2.node(submitted["id"]) is None
        assert (await v2.cancel(submitted["id"]))["__typename"] == "V2NotFound"
        assert (await v2.jobs(first=10))["edges"] == []
        assert await v2_usage(v2, day, day) == report  # type: ignore[arg-type]
        await v2.aclose()


async def test_a_live_stream_sees_every_event_once_while_prune_passes_run(
    settings: Settings,
) -> None:
    # Equal windows: a job past them is deleted (never compacted while a stream is open).
    equal = retention_settings(settings).model_copy(
        update={"event_log_retention_seconds": JOB_SECONDS}
    )
    async with serve(equal) as server:
        api = await server.client("carol")
        worker = worker_of(server)
        done = await api.submit_ok("echo", {"topic": "old"})
        await api.events(done["id"])
        finished = at((await retention_of(api, done["id"]))["finishedAt"])
        slow = await api.submit_ok("slow", {"topic": "streaming"})
        streaming = asyncio.create_task(api.events(slow["id"]))
        # Jobs that finished up to a second after the old one are past their windows; the
        # slow one streams for two seconds, so it never is.
        now = finished + timedelta(seconds=JOB_SECONDS + 1)
        passes: list[PruneCounts] = []
        while not streaming.done():
            passes.append(await worker.prune(now))
            await asyncio.sleep(0.02)
        events = stored(await streaming)

        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert events[0]["__typename"] == "V1JobQueued"
        assert [e["__typename"] for e in events if e["__typename"] in TERMINAL] == [
            "V1JobSucceeded"
        ]
        assert text_of(events) == events[-1]["output"]
        assert len(passes) > 1
        assert sum(p.jobs_deleted for p in passes) == passes[0].jobs_deleted == 1
        assert sum(p.jobs_compacted for p in passes) == 0
        assert (await api.job(done["id"]))["__typename"] == "V1NotFound"
        kept = await retention_of(api, slow["id"])
        assert (kept["status"], kept["logCompacted"]) == ("SUCCEEDED", False)
        assert stored(await api.events(slow["id"])) == events
        await api.aclose()


async def jobql_prune(settings: Settings, *args: str, **env: str) -> tuple[int, int, int]:
    """Run `jobql prune` on the test database; the counts it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobql.cli",
        "prune",
        *args,
        env={
            **os.environ,
            "JOBQL_DATABASE_URL": settings.database_url,
            "JOBQL_MIGRATE_ON_START": "false",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    found = PRUNED.fullmatch(out.decode().strip())
    assert found is not None, out.decode()
    assert found["verb"] == ("would remove" if "--dry-run" in args else "removed")
    return int(found["compacted"]), int(found["events"]), int(found["deleted"])


PRUNED = re.compile(
    r"(?P<verb>would remove|removed): jobs compacted (?P<compacted>\d+), "
    r"events deleted (?P<events>\d+), jobs deleted (?P<deleted>\d+)"
)


async def test_jobql_prune_dry_run_changes_nothing_and_counts_what_a_run_removes(
    settings: Settings,
) -> None:
    async with serve(retention_settings(settings)) as server:
        api = await server.client("dave")
        finished = []
        for topic in ("one", "two", "three"):
            job = await api.submit_ok("echo", {"topic": topic})
            await api.events(job["id"])
            finished.append(await retention_of(api, job["id"]))
        hanging = await api.submit_ok("hang", {"topic": "forever"})
        # Its last event before it goes quiet: the log compared below is then complete.
        await api.wait_for_event(hanging["id"], "V1Progress")
        hanging_log = await server.runtime.store.events_after(hanging["id"], 0)
        # The windows of the command below are one second: wait until they passed.
        last = max(at(j["finishedAt"]) for j in finished)
        await asyncio.sleep(max(0.0, (last - utcnow()).total_seconds() + 1.1))
        compact = {"JOBQL_EVENT_LOG_RETENTION_SECONDS": "1", "JOBQL_JOB_RETENTION_SECONDS": "3600"}

        preview = await jobql_prune(settings, "--dry-run", **compact)
        assert await jobql_prune(settings, "--dry-run", **compact) == preview
        assert [(await retention_of(api, j["id"]))["logCompacted"] for j in finished] == [False] * 3
        removed = await jobql_prune(settings, **compact)

        assert removed == preview
        # Each log (seq 1..lastSeq) keeps its terminal event and one OutputDelta.
        assert removed == (len(finished), sum(j["lastSeq"] - 2 for j in finished), 0)
        assert [(await retention_of(api, j["id"]))["logCompacted"] for j in finished] == [True] * 3
        assert await jobql_prune(settings, **compact) == (0, 0, 0)

        delete = {"JOBQL_EVENT_LOG_RETENTION_SECONDS": "1", "JOBQL_JOB_RETENTION_SECONDS": "1"}
        preview = await jobql_prune(settings, "--dry-run", **delete)
        assert preview == (0, 2 * len(finished), len(finished))
        # Two processes at once: each job is deleted by one of them.
        runs = await asyncio.gather(*(jobql_prune(settings, **delete) for _ in range(2)))
        assert tuple(map(sum, zip(*runs, strict=True))) == preview
        for job in finished:
            assert (await api.job(job["id"]))["__typename"] == "V1NotFound"
        still = await retention_of(api, hanging["id"])
        assert (still["status"], still["logCompacted"]) == ("RUNNING", False)
        assert await server.runtime.store.events_after(hanging["id"], 0) == hanging_log
        await api.aclose()


async def test_the_worker_prunes_on_its_own_schedule(settings: Settings) -> None:
    scheduled = settings.model_copy(
        update={
            "event_log_retention_seconds": 1,
            "job_retention_seconds": 3600,
            "prune_every_seconds": 0.1,
        }
    )
    async with serve(scheduled) as server:
        api = await server.client("erin")
        job = await api.submit_ok("echo", {"topic": "scheduled"})
        live = stored(await api.events(job["id"]))
        assert (await retention_of(api, job["id"]))["logCompacted"] is False

        async def compacted() -> bool:
            return bool((await retention_of(api, job["id"]))["logCompacted"])

        await wait_until(compacted, "the worker to compact the log", timeout=10)

        replay = stored(await api.events(job["id"]))
        assert [e["seq"] for e in replay] == [live[-1]["seq"] - 1, live[-1]["seq"]]
        assert text_of(replay) == text_of(live)
        await api.aclose()


async def sqlite_pages(server: Server) -> dict[str, int]:
    async with server.runtime.engine.connect() as conn:
        return {
            name: int((await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one())
            for name in ("auto_vacuum", "page_count", "freelist_count")
        }


async def test_a_new_sqlite_database_hands_pruned_pages_back(databases: Databases) -> None:
    url = databases.sqlite()
    plain = fast_settings(url, "memory://", prune_every_seconds=0)
    async with serve(retention_settings(plain)) as server:
        api = await server.client("frank")
        jobs = [await api.submit_ok("slow", {"topic": f"pages {n}"}) for n in range(8)]
        finished = [await api.wait_finished(job["id"]) for job in jobs]
        grown = await sqlite_pages(server)
        assert grown["auto_vacuum"] == 2  # INCREMENTAL

        last = max(at(job["finishedAt"]) for job in finished)
        counts = await worker_of(server).prune(last + timedelta(seconds=JOB_SECONDS + 1))

        assert counts.jobs_deleted == len(jobs)
        shrunk = await sqlite_pages(server)
        assert shrunk["page_count"] < grown["page_count"]
        assert shrunk["freelist_count"] == 0  # every freed page went back
        await api.aclose()
