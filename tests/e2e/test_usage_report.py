"""Usage reports against a running server, on every backend: the v2 `usage` query, the
`jobql usage` command and the token and cost counters on /metrics, each checked against the
jobs as stored (tokens, cost, status, finish time), never against numbers written here."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from jobql.models import Job, UsageDay
from jobql.resolvers.v2.ids import job_id as v2_job_id
from jobql.settings import Settings
from tests.api import Api, Server

GROUPS = ("DAY", "TASK", "MODEL")
TOTALS = """
  jobs { total succeeded failed cancelled }
  inputTokens outputTokens cost { amount currency }
"""
USAGE = """
query Usage($from: String!, $to: String!, $groupBy: [V2UsageGroup!]) {
  usage(from: $from, to: $to, groupBy: $groupBy) {
    __typename
    ... on V2UsageReport {
      from to groupBy
      rows { day task { name apiVersion } model { provider name version } TOTALS }
      total { TOTALS }
    }
    ... on V2InvalidInput { code message retryable field violations { path message } }
    ... on V2ServiceUnavailable { code retryAfterSeconds }
  }
}""".replace("TOTALS", TOTALS)
VIEWER = """
query { viewer { usageToday { day jobs inputTokens outputTokens cost { amount currency } } } }
"""
V2_SUBMIT = """
mutation Submit($input: V2SubmitJobInput!) {
  submitJob(input: $input) {
    __typename
    ... on V2SubmitJobSuccess { job { id status } }
    ... on V2Error { code message }
  }
}"""


@dataclass
class Usage:
    """Two callers whose jobs ran on this server, as the store holds them."""

    alice: Api
    bob: Api
    alice_jobs: list[Job]
    bob_jobs: list[Job]

    @property
    def window(self) -> tuple[date, date]:
        days = [finished_day(job) for job in self.alice_jobs + self.bob_jobs]
        return min(days), max(days)


def finished_day(job: Job) -> date:
    assert job.finished_at is not None
    return job.finished_at.date()


async def v2_post(api: Api, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await api.http.post("/v2/graphql", json={"query": query, "variables": variables})
    body: dict[str, Any] = response.json()
    return body


async def usage(
    api: Api, first: date | str, last: date | str, group_by: Sequence[str] | None = None
) -> dict[str, Any]:
    body = await v2_post(api, USAGE, {"from": str(first), "to": str(last), "groupBy": group_by})
    assert "errors" not in body, body
    answer: dict[str, Any] = body["data"]["usage"]
    return answer


async def run_v1(api: Api, task: str, input: dict[str, Any]) -> str:
    job = await api.submit_ok(task, input)
    await api.wait_finished(job["id"])
    return str(job["id"])


async def run_v2(api: Api, task: str, params: dict[str, Any]) -> str:
    body = await v2_post(
        api, V2_SUBMIT, {"input": {"task": task, "params": params, "waitSeconds": 10}}
    )
    result = body["data"]["submitJob"]
    assert result["__typename"] == "V2SubmitJobSuccess", body
    assert result["job"]["status"] == "SUCCEEDED", result
    found = v2_job_id(result["job"]["id"])
    assert found is not None
    return found


async def cancel_while_running(api: Api, task: str, input: dict[str, Any]) -> str:
    job = await api.submit_ok(task, input)
    await api.wait_for_event(job["id"], "V1Progress")  # it runs
    cancelled = await api.cancel(job["id"], "enough")
    assert cancelled["__typename"] == "V1CancelJobSuccess", cancelled
    await api.wait_finished(job["id"])
    return str(job["id"])


async def stored(server: Server, ids: Iterable[str]) -> list[Job]:
    jobs = [await server.runtime.store.get(job_id) for job_id in ids]
    assert all(job is not None and job.is_terminal for job in jobs), jobs
    return [job for job in jobs if job is not None]


async def run_jobs(server: Server) -> Usage:
    """Alice: several tasks and models over v1 and v2, one failed and one cancelled while
    running; Bob: tasks Alice ran too, so that a report counting his jobs would be off."""
    alice, bob = await server.client("alice"), await server.client("bob")
    alice_ids = await asyncio.gather(
        run_v1(alice, "echo", {"topic": "a"}),
        run_v1(alice, "echo", {"topic": "a longer topic, for more input tokens"}),
        run_v1(alice, "classify", {"text": "I love it"}),
        run_v1(alice, "research", {"topic": "tides"}),
        run_v1(alice, "fail-unavailable", {"topic": "x"}),
        run_v2(alice, "echo", {"topic": "v2"}),
        run_v2(alice, "classify", {"text": "fine"}),
        cancel_while_running(alice, "hang", {"topic": "forever"}),
    )
    bob_ids = await asyncio.gather(
        run_v1(bob, "echo", {"topic": "b"}),
        run_v1(bob, "classify", {"text": "meh"}),
        run_v2(bob, "echo", {"topic": "b2"}),
    )
    return Usage(alice, bob, await stored(server, alice_ids), await stored(server, bob_ids))


def usd(micros: int) -> str:
    return f"{Decimal(micros) / 1_000_000:.6f}"


def expected_report(
    jobs: Sequence[Job], first: date, last: date, group_by: Sequence[str]
) -> dict[str, Any]:
    """The report the jobs make, computed here from the stored jobs."""
    groups: defaultdict[tuple[Any, ...], list[Job]] = defaultdict(list)
    for job in jobs:
        if not first <= finished_day(job) <= last:
            continue
        key = (
            finished_day(job).isoformat() if "DAY" in group_by else None,
            (job.api_version, job.task) if "TASK" in group_by else None,
            (job.provider, job.model_name, job.model_version) if "MODEL" in group_by else None,
        )
        groups[key].append(job)

    def totals(members: Sequence[Job]) -> dict[str, Any]:
        statuses = [job.status for job in members]
        return {
            "jobs": {
                "total": len(members),
                "succeeded": statuses.count("SUCCEEDED"),
                "failed": statuses.count("FAILED"),
                "cancelled": statuses.count("CANCELLED"),
            },
            "inputTokens": sum(job.input_tokens for job in members),
            "outputTokens": sum(job.output_tokens for job in members),
            "cost": {"amount": usd(sum(job.cost_micros for job in members)), "currency": "USD"},
        }

    rows = [
        {
            "day": day,
            "task": None if task is None else {"name": task[1], "apiVersion": task[0]},
            "model": None
            if model is None
            else {"provider": model[0], "name": model[1], "version": model[2]},
            **totals(members),
        }
        for (day, task, model), members in sorted(groups.items())
    ]
    return {
        "__typename": "V2UsageReport",
        "from": first.isoformat(),
        "to": last.isoformat(),
        "groupBy": [group for group in GROUPS if group in group_by],
        "rows": rows,
        "total": totals([job for members in groups.values() for job in members]),
    }


def every_grouping() -> list[tuple[str, ...]]:
    return [c for n in range(len(GROUPS) + 1) for c in itertools.combinations(GROUPS, n)]


async def test_usage_is_the_sum_of_the_callers_jobs_grouped_every_way(server: Server) -> None:
    jobs = await run_jobs(server)
    first, last = jobs.window
    statuses = {job.status for job in jobs.alice_jobs}
    assert statuses == {"SUCCEEDED", "FAILED", "CANCELLED"}
    assert {job.api_version for job in jobs.alice_jobs} == {"v1", "v2"}
    assert sum(job.cost_micros for job in jobs.alice_jobs) > 0

    for group_by in every_grouping():
        for api, own in ((jobs.alice, jobs.alice_jobs), (jobs.bob, jobs.bob_jobs)):
            answer = await usage(api, first, last, group_by)
            assert answer == expected_report(own, first, last, group_by), group_by

    # viewer.usageToday and the report of today read the same rows.
    for api in (jobs.alice, jobs.bob):
        body = await v2_post(api, VIEWER, {})
        today = body["data"]["viewer"]["usageToday"]
        report = await usage(api, today["day"], today["day"])
        assert {
            "jobs": today["jobs"],
            "inputTokens": today["inputTokens"],
            "outputTokens": today["outputTokens"],
            "cost": today["cost"],
        } == {**report["total"], "jobs": report["total"]["jobs"]["total"]}

    # The order of groupBy does not matter; each group counts once.
    reversed_twice = await usage(jobs.alice, first, last, ["MODEL", "TASK", "MODEL", "DAY"])
    assert reversed_twice == expected_report(jobs.alice_jobs, first, last, GROUPS)
    # TASK tells the API versions apart: v1 and v2 both have an `echo`.
    by_task = await usage(jobs.alice, first, last, ["TASK"])
    echo_versions = [row["task"]["apiVersion"] for row in by_task["rows"]]
    assert [
        v
        for v, row in zip(echo_versions, by_task["rows"], strict=True)
        if row["task"]["name"] == "echo"
    ] == ["v1", "v2"]


async def test_window_edges_and_bad_windows(server: Server) -> None:
    jobs = await run_jobs(server)
    first, last = jobs.window
    day = timedelta(days=1)
    everything = expected_report(jobs.alice_jobs, first, last, ["DAY"])
    assert everything["total"]["jobs"]["total"] == len(jobs.alice_jobs)

    # `from` and `to` are both included.
    for start, end in ((first, last), (last - 365 * day, last)):
        answer = await usage(jobs.alice, start, end, ["DAY"])
        assert answer["rows"] == everything["rows"]
        assert answer["total"] == everything["total"]
    for start, end in ((first, first), (last, last)):
        assert await usage(jobs.alice, start, end, ["DAY"]) == expected_report(
            jobs.alice_jobs, start, end, ["DAY"]
        )
    # Windows that end the day before, or start the day after: nothing.
    for start, end in ((first - 3 * day, first - day), (last + day, last + 3 * day)):
        answer = await usage(jobs.alice, start, end, ["DAY", "TASK"])
        assert answer == expected_report(jobs.alice_jobs, start, end, ["DAY", "TASK"])
        assert answer["rows"] == []
        assert answer["total"]["jobs"]["total"] == 0
        assert answer["total"]["cost"] == {"amount": "0.000000", "currency": "USD"}

    # Bad windows are typed errors, as data.
    for start, end in ((last + day, last), (last - 366 * day, last)):
        answer = await usage(jobs.alice, start, end)
        assert answer["__typename"] == "V2InvalidInput", answer
        assert answer["code"] == "INVALID_INPUT"
        assert answer["retryable"] is False
        assert answer["field"] == "to"
        assert answer["violations"][0]["path"] == "to"
    # Days that are not days, or not written YYYY-MM-DD, name their argument.
    for bad_from, bad_to, field in (
        ("2026-02-30", "2026-03-01", "from"),
        ("2026-02-01", "1 March", "to"),
        ("20260201", "2026-03-01", "from"),
    ):
        answer = await usage(jobs.alice, bad_from, bad_to)
        assert answer["__typename"] == "V2InvalidInput", answer
        assert (answer["field"], answer["violations"][0]["path"]) == (field, field)
        assert answer["message"] == f"`{field}` must be a day written YYYY-MM-DD."


async def test_token_sums_past_32_bits_are_exact(server: Server) -> None:
    caller, key = await server.services.keys.create("heavy")
    api = Api(server, key)
    server.clients.append(api)
    day = date(2026, 6, 1)
    big = 2**31 + 1  # one more than GraphQL's Int holds
    async with server.runtime.sessions() as session, session.begin():
        session.add_all(
            UsageDay(
                principal_id=caller.id,
                day=day + timedelta(days=n),
                api_version="v2",
                task="echo",
                provider="simulated",
                model_name="sim-fast",
                model_version="sim-fast-2",
                succeeded=1,
                input_tokens=big,
                output_tokens=2 * big,
                cost_micros=10**15 + n,  # a billion dollars, to the micro-dollar
            )
            for n in range(3)
        )

    answer = await usage(api, day, day + timedelta(days=2), ["DAY"])
    assert [row["inputTokens"] for row in answer["rows"]] == [big] * 3
    assert answer["total"]["inputTokens"] == 3 * big
    assert answer["total"]["outputTokens"] == 6 * big
    assert answer["total"]["cost"]["amount"] == "3000000000.000003"


async def test_usage_needs_a_key(server: Server) -> None:
    today = date.today().isoformat()
    async with httpx.AsyncClient(base_url=server.http_url) as anonymous:
        response = await anonymous.post(
            "/v2/graphql", json={"query": USAGE, "variables": {"from": today, "to": today}}
        )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def jobql_usage(settings: Settings | str, *args: str) -> tuple[int, str, str]:
    url = settings if isinstance(settings, str) else settings.database_url
    env = {
        **os.environ,
        "JOBQL_DATABASE_URL": url,
        "JOBQL_MIGRATE_ON_START": "false",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobql.cli",
        "usage",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_jobql_usage_answers_what_the_query_answers(
    server: Server, settings: Settings
) -> None:
    jobs = await run_jobs(server)
    first, last = jobs.window
    window = ["--from", first.isoformat(), "--to", last.isoformat()]
    prefix = jobs.alice.key[:10]
    for group_by in (["DAY", "TASK", "MODEL"], ["TASK"], []):
        code, out, err = await jobql_usage(
            settings, "--key", prefix, *window, "--group-by", ",".join(group_by).lower(), "--json"
        )
        assert code == 0, err
        answer = await usage(jobs.alice, first, last, group_by)
        assert {"__typename": "V2UsageReport", **json.loads(out)} == answer

    code, table, err = await jobql_usage(
        settings, "--key", prefix + "…", *window, "--group-by", "task"
    )
    assert code == 0, err
    answer = await usage(jobs.alice, first, last, ["TASK"])
    lines = table.splitlines()
    assert lines[0] == f"usage {first.isoformat()} .. {last.isoformat()} (UTC)"
    assert lines[1].split() == [
        "task",
        "jobs",
        "succeeded",
        "failed",
        "cancelled",
        "input",
        "output",
        "cost_usd",
    ]
    for line, row in zip(lines[2:-1], answer["rows"], strict=True):
        assert line.split() == [
            f"{row['task']['apiVersion']}.{row['task']['name']}",
            str(row["jobs"]["total"]),
            str(row["jobs"]["succeeded"]),
            str(row["jobs"]["failed"]),
            str(row["jobs"]["cancelled"]),
            f"{row['inputTokens']:.0f}",
            f"{row['outputTokens']:.0f}",
            row["cost"]["amount"],
        ]
    assert lines[-1].split()[0] == "total"
    assert lines[-1].split()[-1] == answer["total"]["cost"]["amount"]

    code, out, err = await jobql_usage(settings, "--key", "jq_nothing", *window)
    assert (code, out) == (1, "")
    assert "no key has the prefix" in err
    after = (last + timedelta(days=1)).isoformat()
    code, out, err = await jobql_usage(
        settings, "--key", prefix, "--from", after, "--to", last.isoformat()
    )
    assert (code, out) == (2, "")
    assert "`to` must not be before `from`" in err


async def test_jobql_usage_says_when_the_database_cannot_be_reached() -> None:
    nowhere = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"  # the discard port
    code, out, err = await jobql_usage(
        nowhere, "--key", "jq_any", "--from", "2026-01-01", "--to", "2026-01-31"
    )
    assert (code, out) == (1, "")
    assert err.strip() == "jobql: the database cannot be reached (ConnectionRefusedError)"


async def test_metrics_count_tokens_and_cost_by_task_and_model(server: Server) -> None:
    jobs = await run_jobs(server)
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples = [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]

    def value(name: str, **labels: str) -> float:
        found = [s.value for s in samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels)
        return float(found[0])

    by_series: defaultdict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs.alice_jobs + jobs.bob_jobs:
        by_series[(job.task, job.model_name)].append(job)
    for (task, model), members in by_series.items():
        labels = {"task": task, "model": model}
        assert value("jobql_tokens_total", **labels, direction="input") == sum(
            job.input_tokens for job in members
        )
        assert value("jobql_tokens_total", **labels, direction="output") == sum(
            job.output_tokens for job in members
        )
        cost = value("jobql_cost_usd_total", **labels)
        assert round(cost * 1_000_000) == sum(job.cost_micros for job in members)
    # Nothing else was counted.
    counted = {
        (s.labels["task"], s.labels["model"]) for s in samples if s.name == "jobql_cost_usd_total"
    }
    assert counted == set(by_series)
    assert sum(job.output_tokens for job in jobs.alice_jobs) > 0
