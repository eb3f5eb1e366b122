"""job, jobs (pagination and filters), tasks and viewer."""

from __future__ import annotations

from jobql.settings import Settings
from tests.api import Api, serve

PAGE = """
query Page($first: Int, $after: String, $status: [V1JobStatus!]) {
  jobs(first: $first, after: $after, status: $status) {
    edges { cursor node { id status } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def test_jobs_paginate_newest_first_without_duplicates(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"max_page_size": 3})) as server:
        api = await server.client()
        submitted = [(await api.submit_ok("echo", {"topic": f"t{i}"}))["id"] for i in range(7)]
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            data = (await api.execute(PAGE, {"first": 1000, "after": after}))["jobs"]
            assert len(data["edges"]) <= 3  # the page size is capped
            seen += [edge["node"]["id"] for edge in data["edges"]]
            pages += 1
            if not data["pageInfo"]["hasNextPage"]:
                break
            after = data["pageInfo"]["endCursor"]
        assert pages == 3
        assert seen == list(reversed(submitted))
        await api.aclose()


async def test_jobs_status_filter(api: Api) -> None:
    done = await api.submit_ok("classify", {"text": "a"}, wait=10)
    running = await api.submit_ok("hang", {"topic": "b"})
    data = (await api.execute(PAGE, {"status": ["SUCCEEDED"]}))["jobs"]
    assert [e["node"]["id"] for e in data["edges"]] == [done["id"]]
    data = (await api.execute(PAGE, {"status": ["QUEUED", "RUNNING"]}))["jobs"]
    assert [e["node"]["id"] for e in data["edges"]] == [running["id"]]
    await api.cancel(running["id"])


async def test_bad_cursor_is_a_client_error(api: Api) -> None:
    response = await api.post(PAGE, {"after": "!!not-a-cursor"})
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_tasks_describe_the_contract(api: Api) -> None:
    data = await api.execute(
        """{ tasks { name tier promptVersion deadlineSeconds maxWaitSeconds inputSchema
             outputSchema model { provider name version }
             pricing { inputPer1kTokensUsd outputPer1kTokensUsd } } }"""
    )
    tasks = {t["name"]: t for t in data["tasks"]}
    assert tasks["classify"]["tier"] == "SIMPLE"
    assert tasks["classify"]["deadlineSeconds"] == 15
    assert tasks["classify"]["outputSchema"]["required"] == ["label", "confidence"]
    assert tasks["echo"]["tier"] == "GENERATIVE"
    assert tasks["echo"]["deadlineSeconds"] == 60
    assert tasks["hang"]["tier"] == "AGENT"
    assert tasks["hang"]["maxWaitSeconds"] == 0
    assert tasks["echo"]["model"] == {
        "provider": "simulated",
        "name": "sim-fast",
        "version": "sim-fast-1",
    }
    assert tasks["echo"]["pricing"] == {"inputPer1kTokensUsd": 1.0, "outputPer1kTokensUsd": 2.0}
    assert "prompt" not in str(tasks["echo"]).lower().replace("promptversion", "")


async def test_viewer_usage_matches_the_sum_of_job_costs(api: Api) -> None:
    ids = [(await api.submit_ok("echo", {"topic": f"cost {i}"}))["id"] for i in range(3)]
    costs = [(await api.wait_finished(i))["usage"]["costUsd"] for i in ids]
    viewer = (
        await api.execute(
            "{ viewer { name tier activeJobs usageToday { jobs outputTokens costUsd } } }"
        )
    )["viewer"]
    assert viewer["name"] == "alice"
    assert viewer["tier"] == "standard"
    assert viewer["activeJobs"] == 0
    assert viewer["usageToday"]["jobs"] == 3
    assert viewer["usageToday"]["outputTokens"] == 120
    assert round(viewer["usageToday"]["costUsd"], 6) == round(sum(costs), 6)
