"""JobService.list on the in-memory store: pages both ways, pageInfo at the edges, windows
between two cursors, one API version's jobs. No database (the store contract covers SQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobql.events.bus import BroadcastBus
from jobql.models import Job
from jobql.repositories.memory import MemoryJobStore
from jobql.services.auth import Caller
from jobql.services.jobs import InvalidCursor, JobPage, JobService, SubmitRequest, Submitted
from jobql.settings import Settings
from jobql.tasks import load_tasks
from tests.conftest import TEST_TASKS

CALLER = Caller("caller-1", "tests", "standard")


@pytest.fixture
async def service() -> AsyncIterator[JobService]:
    config = Settings(  # type: ignore[call-arg]
        tasks_file=TEST_TASKS, enforce_limits=False, max_page_size=50, _env_file=None
    )
    bus = BroadcastBus("memory://")
    await bus.connect()
    yield JobService(config, store=MemoryJobStore(), bus=bus, tasks=load_tasks(TEST_TASKS))
    await bus.disconnect()


async def submit(service: JobService, version: str, n: int) -> list[Job]:
    jobs = []
    for i in range(n):
        outcome = await service.submit(
            CALLER, SubmitRequest(api_version=version, task="echo", input={"topic": f"t{i}"})
        )
        assert isinstance(outcome, Submitted)
        jobs.append(outcome.job)
    return jobs


def ids(page: JobPage) -> list[str]:
    return [j.id for j in page.jobs]


def flags(page: JobPage) -> tuple[bool, bool]:
    return page.has_previous_page, page.has_next_page


async def test_forwards_and_backwards_with_page_info(service: JobService) -> None:
    made = await submit(service, "v2", 7)
    await submit(service, "v1", 3)
    newest_first = [j.id for j in sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)]

    async def page(**kw: Any) -> JobPage:
        return await service.list(CALLER, statuses=None, api_version="v2", **kw)

    first = await page(first=3, after=None)
    assert (ids(first), flags(first)) == (newest_first[:3], (False, True))
    second = await page(first=3, after=JobPage.cursor(first.jobs[-1]))
    assert (ids(second), flags(second)) == (newest_first[3:6], (True, True))
    third = await page(first=3, after=JobPage.cursor(second.jobs[-1]))
    assert (ids(third), flags(third)) == (newest_first[6:], (True, False))

    last = await page(first=None, after=None, last=3)
    assert (ids(last), flags(last)) == (newest_first[4:], (True, False))
    before = await page(first=None, after=None, last=3, before=JobPage.cursor(last.jobs[0]))
    assert (ids(before), flags(before)) == (newest_first[1:4], (True, True))
    top = await page(first=None, after=None, last=3, before=JobPage.cursor(before.jobs[0]))
    assert (ids(top), flags(top)) == (newest_first[:1], (False, True))

    window = await page(
        first=10,
        after=JobPage.cursor(first.jobs[0]),
        before=JobPage.cursor(third.jobs[0]),
    )
    assert ids(window) == newest_first[1:6]

    everything = await service.list(CALLER, first=50, after=None, statuses=None)
    assert len(everything.jobs) == 10  # no version asked for: v1 and v2 (what v1 lists)


async def test_page_sizes_are_capped_and_cursors_checked(service: JobService) -> None:
    await submit(service, "v2", 3)
    empty = await service.list(CALLER, first=0, after=None, statuses=None, api_version="v2")
    assert (ids(empty), empty.has_next_page) == ([], True)
    capped = await service.list(
        CALLER, first=None, after=None, last=10_000, statuses=None, api_version="v2"
    )
    assert len(capped.jobs) == 3
    with pytest.raises(InvalidCursor):
        await service.list(CALLER, first=None, after=None, before="bm9wZQ==", statuses=None)
