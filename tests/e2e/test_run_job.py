"""runJob (API v2) against a real server: submit and stream in one subscription; the job
belongs to the subscription that created it, so unsubscribing or losing the connection
before the end cancels it and closes the provider stream; detach keeps it running; an
idempotency key re-attaches to the same job without taking it over."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest
from sqlalchemy import func, select

from jobql.models import Job
from jobql.providers.simulated import StreamRecord
from jobql.resolvers.v2 import ids
from jobql.services.limits import LimitOverrides
from jobql.services.run import CLIENT_DISCONNECTED
from jobql.settings import Settings
from tests.api import Server, serve
from tests.ws import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, RawSocket

RUN = """
subscription Run($input: V2SubmitJobInput!, $detach: Boolean) {
  runJob(input: $input, detach: $detach) {
    __typename
    ... on V2RunJobAccepted { deduplicated owned job { id status idempotencyKey } }
    ... on V2JobEvent { jobId seq }
    ... on V2JobStarted { attempt }
    ... on V2OutputDelta { text }
    ... on V2Heartbeat { jobId status }
    ... on V2JobFinished { job { id status } }
    ... on V2JobCancelled { reason }
    ... on V2Error { code message retryable }
    ... on V2InvalidInput { field }
    ... on V2IdempotencyKeyReused { jobId }
    ... on V2ConcurrencyLimitExceeded { limit active }
  }
}"""

EVENTS = """
subscription Events($id: ID!, $after: Int) {
  jobEvents(id: $id, afterSeq: $after) {
    __typename
    ... on V2JobEvent { jobId seq }
    ... on V2OutputDelta { text }
    ... on V2JobFinished { job { id status output } }
    ... on V2JobCancelled { reason }
    ... on V2Error { code message }
  }
}"""

TERMINAL = {"V2JobSucceeded", "V2JobFailed", "V2JobCancelled"}
GUARD_SECONDS = 20.0
_ids = itertools.count(1)


class Completed(Exception):
    """The server completed the subscription."""


class Subscription:
    """One subscription on a WebSocket of its own, message by message, so a test can leave
    it exactly as a client would: `complete`/`stop`, or by dropping the connection."""

    def __init__(self, socket: RawSocket, operation_id: str, field: str) -> None:
        self.socket = socket
        self.id = operation_id
        self.field = field
        self.items: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls,
        server: Server,
        key: str,
        query: str,
        variables: dict[str, Any],
        *,
        field: str,
        protocol: str = GRAPHQL_TRANSPORT_WS,
    ) -> Subscription:
        url = f"ws://127.0.0.1:{server.port}/v2/graphql"
        socket = await RawSocket.connected(url, protocol, key)
        operation_id = str(next(_ids))
        kind = "subscribe" if protocol == GRAPHQL_TRANSPORT_WS else "start"
        payload = {"query": query, "variables": variables}
        await socket.send({"id": operation_id, "type": kind, "payload": payload})
        return cls(socket, operation_id, field)

    async def next(self) -> dict[str, Any]:
        """The next item; raises Completed when the server completed the subscription."""
        message = await self.socket.receive_for(self.id)
        if message["type"] == "complete":
            raise Completed()
        assert message["type"] in ("next", "data"), message
        assert "errors" not in message["payload"], message
        item: dict[str, Any] = message["payload"]["data"][self.field]
        self.items.append(item)
        return item

    async def until(self, typename: str) -> dict[str, Any]:
        async with asyncio.timeout(GUARD_SECONDS):
            while (item := await self.next())["__typename"] != typename:
                pass
        return item

    async def rest(self) -> list[dict[str, Any]]:
        """Every item until the server completes the subscription."""
        start = len(self.items)
        async with asyncio.timeout(GUARD_SECONDS):
            while True:
                try:
                    await self.next()
                except Completed:
                    return self.items[start:]

    async def unsubscribe(self) -> None:
        kind = "complete" if self.socket.protocol == GRAPHQL_TRANSPORT_WS else "stop"
        await self.socket.send({"id": self.id, "type": kind})

    def drop(self) -> None:
        """Lose the connection: the TCP connection goes, with no WebSocket close."""
        self.socket.ws.transport.abort()

    async def aclose(self) -> None:
        await self.socket.aclose()


async def run_job(
    server: Server,
    key: str,
    task: str,
    params: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    detach: bool | None = None,
    max_cost: str | None = None,
    protocol: str = GRAPHQL_TRANSPORT_WS,
) -> Subscription:
    submit: dict[str, Any] = {"task": task, "params": params, "idempotencyKey": idempotency_key}
    if max_cost is not None:
        submit["maxCost"] = max_cost
    variables: dict[str, Any] = {"input": submit}
    if detach is not None:
        variables["detach"] = detach
    return await Subscription.open(server, key, RUN, variables, field="runJob", protocol=protocol)


async def job_events(server: Server, key: str, job_id: str) -> list[dict[str, Any]]:
    """The job's whole stream from jobEvents, to its completion."""
    follow = await Subscription.open(
        server, key, EVENTS, {"id": job_id, "after": None}, field="jobEvents"
    )
    try:
        return await follow.rest()
    finally:
        await follow.aclose()


def record_of(server: Server, job_id: str) -> StreamRecord:
    """The provider's record of the job's first attempt (its request id is <uuid>:1)."""
    uuid = ids.job_id(job_id)
    assert uuid is not None, job_id
    return server.provider.records[f"{uuid}:1"]


async def provider_closed_within_a_second(server: Server, job_id: str) -> StreamRecord:
    """Measured from the moment the client left: the provider stream stops within 1 s, and it
    stopped because it was closed, not because it finished."""
    record = record_of(server, job_id)
    async with asyncio.timeout(1.0):
        await record.stopped.wait()
    assert record.closed
    assert not record.finished
    return record


async def statuses(server: Server) -> dict[str, int]:
    """How many jobs the server stored, by status."""
    async with server.runtime.sessions() as db:
        rows = await db.execute(select(Job.status, func.count()).group_by(Job.status))
        return {status: int(n) for status, n in rows}


def seqs(items: list[dict[str, Any]]) -> list[int]:
    return [i["seq"] for i in items if i.get("seq") is not None]


def text_of(items: list[dict[str, Any]]) -> str:
    return "".join(i["text"] for i in items if i["__typename"] == "V2OutputDelta")


async def test_run_job_streams_the_job_to_completion(server: Server) -> None:
    key = await server.new_key("alice")
    run = await run_job(server, key, "echo", {"topic": "tides"}, idempotency_key="run-1")
    try:
        first = await run.next()
        items = await run.rest()
    finally:
        await run.aclose()

    # The client learns the job before any event.
    assert first["__typename"] == "V2RunJobAccepted"
    assert first["owned"] is True
    assert first["deduplicated"] is False
    assert first["job"]["status"] == "QUEUED"
    assert first["job"]["idempotencyKey"] == "run-1"
    job_id = first["job"]["id"]
    # Then every event in order, exactly once, ending with the terminal event and its job.
    assert items[0]["__typename"] == "V2JobQueued"
    assert seqs(items) == list(range(1, len(seqs(items)) + 1))
    assert all(i["jobId"] == job_id for i in items)
    final = items[-1]
    assert final["__typename"] == "V2JobSucceeded"
    assert final["job"] == {"id": job_id, "status": "SUCCEEDED"}
    # What was streamed is the job, as jobEvents replays it.
    replay = await job_events(server, key, job_id)
    assert seqs(replay) == seqs(items)
    assert text_of(replay) == text_of(items) != ""
    assert replay[-1]["job"]["output"] == text_of(items)
    assert record_of(server, job_id).finished


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
async def test_unsubscribing_mid_stream_cancels_the_job_and_closes_the_provider_stream(
    server: Server, protocol: str
) -> None:
    key = await server.new_key("alice")
    run = await run_job(server, key, "slow", {"topic": "stop me"}, protocol=protocol)
    try:
        job_id = (await run.next())["job"]["id"]
        await run.until("V2OutputDelta")
        await run.unsubscribe()
        record = await provider_closed_within_a_second(server, job_id)
    finally:
        await run.aclose()

    replay = await job_events(server, key, job_id)
    final = replay[-1]
    assert final["__typename"] == "V2JobCancelled"
    assert final["reason"] == CLIENT_DISCONNECTED
    assert final["job"]["status"] == "CANCELLED"
    # The partial output is kept: every token the provider produced before it was closed.
    assert final["job"]["output"] == text_of(replay)
    assert record.tokens_emitted < 120


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
async def test_a_dropped_connection_cancels_the_job_and_closes_the_provider_stream(
    server: Server, protocol: str
) -> None:
    key = await server.new_key("alice")
    run = await run_job(server, key, "slow", {"topic": "pull the plug"}, protocol=protocol)
    try:
        job_id = (await run.next())["job"]["id"]
        await run.until("V2OutputDelta")
        run.drop()  # no `complete`, no close frame
        await provider_closed_within_a_second(server, job_id)
    finally:
        await run.aclose()

    final = (await job_events(server, key, job_id))[-1]
    assert final["__typename"] == "V2JobCancelled"
    assert final["reason"] == CLIENT_DISCONNECTED


@pytest.mark.parametrize("leave", ["unsubscribe", "drop"])
async def test_a_detached_run_survives_its_client_and_is_read_with_job_events(
    server: Server, leave: str
) -> None:
    key = await server.new_key("alice")
    run = await run_job(server, key, "slow", {"topic": "keep going"}, detach=True)
    first = await run.next()
    assert first["owned"] is False
    assert first["deduplicated"] is False
    job_id = first["job"]["id"]
    await run.until("V2OutputDelta")
    seen = list(run.items)
    if leave == "unsubscribe":
        await run.unsubscribe()
    else:
        run.drop()
    replay = await job_events(server, key, job_id)
    await run.aclose()

    final = replay[-1]
    assert final["__typename"] == "V2JobSucceeded"
    assert final["job"]["status"] == "SUCCEEDED"
    assert record_of(server, job_id).finished
    # The run's items are a prefix of the job's log.
    assert seqs(replay)[: len(seqs(seen))] == seqs(seen)


async def test_the_same_key_re_attaches_and_leaving_it_does_not_stop_the_owner(
    server: Server,
) -> None:
    key = await server.new_key("alice")
    owner = await run_job(server, key, "slow", {"topic": "shared"}, idempotency_key="same")
    follower: Subscription | None = None
    try:
        created = await owner.next()
        job_id = created["job"]["id"]
        await owner.until("V2OutputDelta")
        follower = await run_job(server, key, "slow", {"topic": "shared"}, idempotency_key="same")
        attached = await follower.next()
        # The same job, not a second one; the follower streams it from the start.
        assert attached["__typename"] == "V2RunJobAccepted"
        assert attached["job"]["id"] == job_id
        assert attached["deduplicated"] is True
        assert attached["owned"] is False
        assert (await follower.until("V2OutputDelta"))["jobId"] == job_id
        await follower.unsubscribe()
        # The owner is still there: the job runs to its end.
        rest = await owner.rest()
    finally:
        await owner.aclose()
        if follower is not None:
            await follower.aclose()
    assert rest[-1]["__typename"] == "V2JobSucceeded"
    assert rest[-1]["job"]["id"] == job_id
    assert record_of(server, job_id).finished
    assert (await statuses(server)) == {"SUCCEEDED": 1}


async def test_concurrent_runs_with_one_key_share_one_job_owned_by_its_creator(
    server: Server,
) -> None:
    key = await server.new_key("alice")
    runs = await asyncio.gather(
        *(
            run_job(server, key, "slow", {"topic": "race"}, idempotency_key="raced")
            for _ in range(4)
        )
    )
    try:
        accepted = await asyncio.gather(*(run.next() for run in runs))
        assert {a["__typename"] for a in accepted} == {"V2RunJobAccepted"}
        assert len({a["job"]["id"] for a in accepted}) == 1
        job_id = accepted[0]["job"]["id"]
        # Exactly one of them made the job, and only that one owns it.
        assert sorted(a["owned"] for a in accepted) == [False, False, False, True]
        assert all(a["owned"] is not a["deduplicated"] for a in accepted)
        owner = next(run for run, a in zip(runs, accepted, strict=True) if a["owned"])
        followers = [run for run in runs if run is not owner]

        await owner.until("V2OutputDelta")
        await owner.unsubscribe()
        await provider_closed_within_a_second(server, job_id)
        # Those who re-attached see why it stopped.
        for follower in followers:
            final = (await follower.rest())[-1]
            assert final["__typename"] == "V2JobCancelled"
            assert final["reason"] == CLIENT_DISCONNECTED
    finally:
        for run in runs:
            await run.aclose()


async def test_refused_submits_are_the_only_item(server: Server) -> None:
    key = await server.new_key("alice")
    answers: dict[str, list[dict[str, Any]]] = {}
    cases: dict[str, tuple[str, dict[str, Any], str | None]] = {
        "unknown task": ("nope", {"topic": "x"}, None),
        "bad params": ("echo", {"topic": ""}, None),
        "key reused": ("echo", {"topic": "other"}, "taken"),
    }
    done = await run_job(server, key, "echo", {"topic": "first"}, idempotency_key="taken")
    original = (await done.next())["job"]["id"]
    await done.rest()
    await done.aclose()
    for name, (task, params, idempotency_key) in cases.items():
        run = await run_job(server, key, task, params, idempotency_key=idempotency_key)
        answers[name] = [await run.next(), *await run.rest()]
        await run.aclose()
    # The same maxCost rule as submitJob: a budget below one micro-dollar is refused.
    run = await run_job(server, key, "echo", {"topic": "budget"}, max_cost="0.0000001")
    answers["max cost"] = [await run.next(), *await run.rest()]
    await run.aclose()

    for name, items in answers.items():
        assert len(items) == 1, (name, items)
    assert answers["unknown task"][0]["__typename"] == "V2InvalidInput"
    assert answers["unknown task"][0]["field"] == "task"
    assert answers["bad params"][0]["__typename"] == "V2InvalidInput"
    assert answers["bad params"][0]["field"].startswith("params")
    assert answers["max cost"][0]["__typename"] == "V2InvalidInput"
    assert answers["max cost"][0]["field"] == "maxCost"
    assert 'from "0.000001" (one micro-dollar)' in answers["max cost"][0]["message"]
    reused = answers["key reused"][0]
    assert reused["__typename"] == "V2IdempotencyKeyReused"
    assert reused["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert reused["jobId"] == original
    assert (await statuses(server)) == {"SUCCEEDED": 1}


async def test_a_limit_refusal_is_the_only_item(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"enforce_limits": True})) as server:
        key = await server.new_key("limited")
        await server.services.keys.set_limits(
            key[:10], LimitOverrides(max_active_jobs=1), clear=False
        )
        first = await run_job(server, key, "slow", {"topic": "one"})
        try:
            assert (await first.next())["owned"] is True
            second = await run_job(server, key, "slow", {"topic": "two"})
            refused = [await second.next(), *await second.rest()]
            await second.aclose()
        finally:
            await first.aclose()
    assert len(refused) == 1
    assert refused[0]["__typename"] == "V2ConcurrencyLimitExceeded"
    assert refused[0]["retryable"] is True
    assert (refused[0]["limit"], refused[0]["active"]) == (1, 1)


async def test_a_server_that_stops_cancels_the_jobs_its_runs_own(settings: Settings) -> None:
    """Stopping the server closes its WebSockets: a lost connection like any other. The
    cancel is committed before the server lets its database go; a detached job is handed
    back and runs again on the next start."""
    async with contextlib.AsyncExitStack() as clients:
        async with serve(settings) as server:
            key = await server.new_key("alice")
            owned = await run_job(server, key, "slow", {"topic": "deploy"})
            clients.push_async_callback(owned.aclose)
            detached = await run_job(server, key, "slow", {"topic": "survives"}, detach=True)
            clients.push_async_callback(detached.aclose)
            owned_id = (await owned.next())["job"]["id"]
            detached_id = (await detached.next())["job"]["id"]
            await owned.until("V2OutputDelta")
            await detached.until("V2OutputDelta")
        # The server stopped with both subscriptions open.
        async with serve(settings) as server:
            # The cancel was committed before the stop: a job the stop handed back running
            # ends cancelled as soon as a worker picks it up again.
            stopped = await server.services.jobs.store.get(str(ids.job_id(owned_id)))
            assert stopped is not None
            assert stopped.cancel_reason == CLIENT_DISCONNECTED
            final = (await job_events(server, key, owned_id))[-1]
            assert final["__typename"] == "V2JobCancelled"
            assert final["reason"] == CLIENT_DISCONNECTED
            final = (await job_events(server, key, detached_id))[-1]
            assert final["__typename"] == "V2JobSucceeded"
            assert final["job"]["status"] == "SUCCEEDED"
