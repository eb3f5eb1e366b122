"""Relay paging of v2 jobs over real HTTP: forwards and backwards over 250 jobs, each seen
exactly once, with pageInfo in both directions; on every backend."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from jobql.models import Job, JobStatus
from tests.api import Server
from tests.e2e.v2.client import V2Api

STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def finished_job(principal_id: str, created_at: datetime, api_version: str, status: str) -> Job:
    """A finished job as the store holds it (the worker has nothing to do with it)."""
    return Job(
        id=str(uuid.uuid4()),
        principal_id=principal_id,
        status=status,
        task="echo",
        api_version=api_version,
        tier="generative",
        prompt_version="t2",
        provider="simulated",
        model_name="sim-fast",
        model_version="sim-fast-2",
        input={"topic": "paging"},
        input_fingerprint="f" * 64,
        max_attempts=3,
        reserved_micros=0,
        created_at=created_at,
        finished_at=created_at,
        deadline_at=created_at + timedelta(seconds=60),
        output="",
    )


async def add_jobs(server: Server, api: V2Api, v2: int, v1: int) -> list[Job]:
    """``v2`` v2 jobs and ``v1`` v1 jobs interleaved, stored through the job store; five at
    a time share their creation time (the id breaks the tie). Answers the v2 ones."""
    caller = await server.services.keys.authenticate(api.key)
    assert caller is not None
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    store = server.services.jobs.store
    step = (v2 + v1) // v1
    v1_positions = set(range(0, v1 * step, step))  # spread through the list
    made: list[Job] = []
    for i in range(v2 + v1):
        job = finished_job(
            caller.id,
            base + timedelta(milliseconds=i // 5),
            "v1" if i in v1_positions else "v2",
            STATUSES[i % len(STATUSES)].value,
        )
        async with store.admission(caller.id, day=None, key=None) as admit:
            await admit.insert(job)
        made.append(job)
    assert sum(j.api_version == "v1" for j in made) == v1
    return [j for j in made if j.api_version == "v2"]


def newest_first(jobs: list[Job]) -> list[str]:
    return [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]


def raw_ids(page: dict[str, Any]) -> list[str]:
    """The job uuids of a page's edges (the global ids, decoded)."""
    return [base64.b64decode(e["node"]["id"]).decode().split(":", 1)[1] for e in page["edges"]]


async def test_250_jobs_forwards_then_backwards_each_exactly_once(
    server: Server, v2: V2Api
) -> None:
    jobs = await add_jobs(server, v2, v2=250, v1=20)
    expected = newest_first(jobs)

    forwards: list[str] = []
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        page = await v2.jobs(first=40, after=after)
        pages.append(page)
        forwards += raw_ids(page)
        info = page["pageInfo"]
        assert info["hasPreviousPage"] is (after is not None)
        assert info["startCursor"] == page["edges"][0]["cursor"]
        assert info["endCursor"] == page["edges"][-1]["cursor"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert forwards == expected  # every v2 job once, in order; no v1 job
    assert [len(p["edges"]) for p in pages] == [40] * 6 + [10]

    backwards: list[str] = []
    before = None
    while True:
        page = await v2.jobs(last=40, before=before)
        backwards = raw_ids(page) + backwards
        info = page["pageInfo"]
        assert info["hasNextPage"] is (before is not None)
        if not info["hasPreviousPage"]:
            break
        before = info["startCursor"]
    assert backwards == expected

    # Turning round mid-list: back from a forward page's start gives what preceded it.
    third = pages[2]
    previous = await v2.jobs(last=40, before=third["pageInfo"]["startCursor"])
    assert raw_ids(previous) == raw_ids(pages[1])
    assert previous["pageInfo"]["hasPreviousPage"] is True
    assert previous["pageInfo"]["hasNextPage"] is True


async def test_paging_by_status_both_ways(server: Server, v2: V2Api) -> None:
    jobs = await add_jobs(server, v2, v2=60, v1=6)
    failed = newest_first([j for j in jobs if j.status == JobStatus.FAILED.value])
    seen: list[str] = []
    after = None
    while True:
        page = await v2.jobs(first=7, after=after, status=["FAILED"])
        assert {e["node"]["status"] for e in page["edges"]} <= {"FAILED"}
        seen += raw_ids(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == failed
    tail = await v2.jobs(last=7, status=["FAILED"])
    assert raw_ids(tail) == failed[-7:]
    assert tail["pageInfo"]["hasPreviousPage"] is True
    assert tail["pageInfo"]["hasNextPage"] is False


async def test_an_empty_list_and_bad_arguments(v2: V2Api) -> None:
    page = await v2.jobs(first=10)
    assert page == {
        "edges": [],
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
    }
    for arguments in ({"first": 1, "last": 1}, {"last": -1}, {"before": "nope"}):
        response = await v2.post(
            "query($first: Int, $last: Int, $before: String) "
            "{ jobs(first: $first, last: $last, before: $before) { edges { cursor } } }",
            arguments,
        )
        body = response.json()
        assert body["data"] is None, arguments
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
