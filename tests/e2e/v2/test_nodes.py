"""Global ids and node(id:) on v2, what a caller sees of other callers' jobs, and what each
API version sees of the other's jobs."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.api import Api, Server
from tests.e2e.v2.client import V2Api

MALFORMED = [
    "",
    "not-an-id",
    str(uuid.uuid4()),  # a bare uuid: v1's ids are not v2's
    base64.b64encode(b"V2Job:not-a-uuid").decode(),
    base64.b64encode(b"V2Task:" + str(uuid.uuid4()).encode()).decode(),
    base64.b64encode(b"Nope:x").decode(),
    "%%%",
]


def global_id(type_name: str, key: str) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


async def test_node_round_trips_jobs_tasks_and_the_viewer(v2: V2Api) -> None:
    job = await v2.submit_ok("echo", {"topic": "nodes"})
    node = await v2.node(job["id"])
    assert node is not None
    assert (node["__typename"], node["id"], node["task"]) == ("V2Job", job["id"], "echo")
    assert node["contract"]["apiVersion"] == "v2"

    tasks = (await v2.execute("{ tasks { id name promptVersion } }"))["tasks"]
    for task in tasks:
        found = await v2.node(task["id"])
        assert found is not None
        assert (found["__typename"], found["id"], found["name"]) == (
            "V2Task",
            task["id"],
            task["name"],
        )
        assert found["promptVersion"] == task["promptVersion"]

    viewer = (await v2.execute("{ viewer { id name plan } }"))["viewer"]
    found = await v2.node(viewer["id"])
    assert found == {"__typename": "V2Viewer", **viewer}


async def test_ids_that_stand_for_nothing(v2: V2Api) -> None:
    for bad in [*MALFORMED, global_id("V2Job", str(uuid.uuid4())), global_id("V2Task", "hang2")]:
        assert await v2.node(bad) is None, bad
        looked_up = await v2.job(bad)
        assert looked_up["__typename"] == "V2NotFound", bad
        assert (looked_up["code"], looked_up["retryable"]) == ("NOT_FOUND", False)
        assert (await v2.cancel(bad))["__typename"] == "V2NotFound"
    # A v1 task's name is no v2 task.
    assert await v2.node(global_id("V2Task", "stall")) is None


@pytest.mark.parametrize("bad", MALFORMED[:3])
async def test_job_events_of_a_malformed_id_is_not_found(v2: V2Api, bad: str) -> None:
    events = await v2.events(bad)
    assert [e["__typename"] for e in events] == ["V2NotFound"]


async def test_another_callers_job_is_not_found(server: Server, v2: V2Api) -> None:
    job = await v2.submit_ok("echo", {"topic": "mine"})
    mallory = V2Api(server, await server.new_key("mallory"))
    try:
        assert (await mallory.job(job["id"]))["__typename"] == "V2NotFound"
        assert await mallory.node(job["id"]) is None
        assert (await mallory.cancel(job["id"]))["__typename"] == "V2NotFound"
        assert [e["__typename"] for e in await mallory.events(job["id"])] == ["V2NotFound"]
        assert (await mallory.jobs(first=10))["edges"] == []
    finally:
        await mallory.aclose()


async def test_v1_jobs_are_not_found_on_v2(server: Server) -> None:
    """Their contracts differ (params, errors, money), so v2 does not show v1 jobs."""
    v1 = await server.client("both")
    v2 = V2Api(server, v1.key)  # the same caller
    try:
        old = await v1.submit_ok("echo", {"topic": "from v1"})
        as_v2 = global_id("V2Job", old["id"])
        assert (await v2.job(as_v2))["__typename"] == "V2NotFound"
        assert await v2.node(as_v2) is None
        assert (await v2.cancel(as_v2))["__typename"] == "V2NotFound"
        assert [e["__typename"] for e in await v2.events(as_v2)] == ["V2NotFound"]
        new = await v2.submit_ok("echo", {"topic": "from v2"})
        listed = await v2.jobs(first=10)
        assert [e["node"]["id"] for e in listed["edges"]] == [new["id"]]
        # The v1 job is untouched: still there on v1, and it runs to its end.
        assert (await v1.wait_finished(old["id"]))["status"] == "SUCCEEDED"
    finally:
        await v2.aclose()


async def test_v2_jobs_are_not_found_on_v1(server: Server) -> None:
    """The same rule the other way: a v1 client never meets a job in v2's shapes (its
    result follows v2's output schema), so v1 reads, lists, cancels and streams v1 jobs only."""
    v1: Api = await server.client("both")
    v2 = V2Api(server, v1.key)
    try:
        old = await v1.submit_ok("echo", {"topic": "from v1"})
        new = await v2.submit_ok("slow", {"topic": "from v2"})
        job_id = base64.b64decode(new["id"]).decode().split(":", 1)[1]
        assert (await v1.job(job_id))["__typename"] == "V1NotFound"
        assert (await v1.cancel(job_id))["__typename"] == "V1NotFound"
        assert [e["__typename"] for e in await v1.events(job_id)] == ["V1NotFound"]
        listed = (await v1.execute("{ jobs(first: 10) { edges { node { id } } } }"))["jobs"]
        assert [e["node"]["id"] for e in listed["edges"]] == [old["id"]]
        # v1's ids are the bare uuids; v2's global id means nothing there.
        assert (await v1.job(new["id"]))["__typename"] == "V1NotFound"
        # Untouched by v1's refused cancel: the v2 job runs to its end on v2.
        assert (await v2.wait_finished(new["id"]))["status"] == "SUCCEEDED"
    finally:
        await v2.aclose()
