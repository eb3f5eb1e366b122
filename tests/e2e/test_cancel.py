"""cancelJob really stops the worker and the inference, and keeps what was produced."""

from __future__ import annotations

import asyncio
from typing import Any

from jobql.models.base import utcnow
from jobql.settings import Settings
from tests.api import Api, Server, events_request, serve, stored, text_of


async def test_cancel_running_job_stops_the_provider_within_a_second(
    server: Server, api: Api
) -> None:
    job = await api.submit_ok("slow", {"topic": "cancel me"})
    events: list[dict[str, Any]] = []
    async with api.ws() as session:
        stream = session.subscribe(events_request(job["id"]))
        async for item in stream:
            events.append(item["jobEvents"])
            if item["jobEvents"]["__typename"] == "V1OutputDelta":
                break
        answer = await api.cancel(job["id"], reason="user pressed stop")
        assert answer["__typename"] == "V1CancelJobSuccess"
        async with asyncio.timeout(1.0):  # the bound: JobCancelled within 1 s
            async for item in stream:
                events.append(item["jobEvents"])

    final = events[-1]
    assert final["__typename"] == "V1JobCancelled"
    assert final["reason"] == "user pressed stop"
    record = server.provider.records[f"{job['id']}:1"]
    # The upstream stream was closed: it did not finish and produced nothing after.
    assert record.closed
    assert not record.finished
    assert record.closed_at_tokens == record.tokens_emitted < 120
    # Partial usage is exact: every token the provider produced is kept and billed.
    assert final["usage"]["outputTokens"] == record.tokens_emitted
    cancelled = await api.job(job["id"])
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["output"] == final_output(events, cancelled)
    assert cancelled["usage"]["outputTokens"] == final["usage"]["outputTokens"]
    assert cancelled["usage"]["costUsd"] == final["usage"]["costUsd"]
    assert cancelled["finishedAt"] is not None
    # Its log is complete and ends with exactly that one terminal event.
    replay = stored(await api.events(job["id"]))
    assert replay[-1] == final
    assert [e["seq"] for e in replay] == list(range(1, len(replay) + 1))


def final_output(events: list[dict[str, Any]], job: dict[str, Any]) -> str:
    streamed = text_of(events)
    # Tokens produced between the last delta and the stop are kept on the job too.
    assert job["output"].startswith(streamed)
    return str(job["output"])


async def test_cancel_queued_job(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"inline_worker": False})) as server:
        api = await server.client()
        job = await api.submit_ok("echo", {"topic": "never runs"})
        answer = await api.cancel(job["id"])
        assert answer["__typename"] == "V1CancelJobSuccess"
        assert answer["job"]["status"] == "CANCELLED"
        events = await api.events(job["id"])
        assert [e["__typename"] for e in events] == ["V1JobQueued", "V1JobCancelled"]
        assert events[-1]["usage"] == {"inputTokens": 0, "outputTokens": 0, "costUsd": 0.0}
        await api.aclose()


async def test_cancel_finished_job_is_not_cancellable(api: Api) -> None:
    job = await api.submit_ok("classify", {"text": "fine"}, wait=10)
    assert job["status"] == "SUCCEEDED"
    answer = await api.cancel(job["id"])
    assert answer["__typename"] == "V1JobNotCancellable"
    assert answer["code"] == "JOB_NOT_CANCELLABLE"
    assert answer["status"] == "SUCCEEDED"
    assert answer["retryable"] is False
    assert (await api.job(job["id"]))["status"] == "SUCCEEDED"


async def test_cancel_twice(api: Api) -> None:
    job = await api.submit_ok("hang", {"topic": "twice"})
    await api.cancel(job["id"])
    finished = await api.wait_finished(job["id"])
    assert finished["status"] == "CANCELLED"
    again = await api.cancel(job["id"])
    assert again["__typename"] == "V1JobNotCancellable"
    assert again["status"] == "CANCELLED"


async def test_missed_cancel_signal_is_seen_on_the_lease_heartbeat(
    server: Server, api: Api
) -> None:
    """The cancel is committed but its pub/sub signal never sent: the worker still stops."""
    job = await api.submit_ok("hang", {"topic": "lost signal"})
    await api.wait_for_event(job["id"], "V1Progress")
    await server.update_job(job["id"], cancel_requested_at=utcnow())
    finished = await api.wait_finished(job["id"], timeout=10)
    assert finished["status"] == "CANCELLED"
    assert server.provider.records[f"{job['id']}:1"].closed
