"""What clients get through real outages: PostgreSQL crashed under submit load (and under a
followed stream and a cancel) and started again; the rate limiter's Redis stopped and started.
Real jobql processes and clients on loopback, and only servers this test started (see
servers.py)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.api import EVENTS, GRAPHQL_TRANSPORT_WS
from tests.faults.conftest import Processes, create_key, migrate
from tests.faults.servers import JobqlProcess, PostgresServer, RedisServer, free_port, jobql_env

SUBMIT = """
mutation Submit($input: V1SubmitJobInput!, $key: String) {
  submitJob(input: $input, idempotencyKey: $key) {
    __typename
    ... on V1SubmitJobSuccess { deduplicated job { id status } }
    ... on V1Error { code retryable }
    ... on V1ServiceUnavailable { retryAfterSeconds }
  }
}"""
ECHO = {"task": "echo", "input": {"topic": "outages"}}
CLIENTS = 4
OUTAGE_SECONDS = 5.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
TERMINAL_EVENTS = {"V1JobSucceeded", "V1JobFailed", "V1JobCancelled"}


@dataclass(frozen=True)
class Answer:
    """One submit as the client saw it."""

    key: str
    sent: float  # time.monotonic()
    seconds: float
    http_status: int
    kind: str  # success | unavailable (V1ServiceUnavailable) | 503 | anything else: a failure
    job_id: str | None = None
    deduplicated: bool = False
    retry_after: str | None = None
    rate_limit: str | None = None


async def submit(
    http: httpx.AsyncClient, key: str | None, headers: dict[str, str] | None = None
) -> Answer:
    sent = time.monotonic()
    response = await http.post(
        "/v1/graphql",
        json={"query": SUBMIT, "variables": {"input": ECHO, "key": key}},
        headers=headers,
    )
    seconds = time.monotonic() - sent
    body = response.json()
    common: dict[str, Any] = {
        "key": key or "",
        "sent": sent,
        "seconds": seconds,
        "http_status": response.status_code,
        "retry_after": response.headers.get("retry-after"),
        "rate_limit": response.headers.get("ratelimit"),
    }
    if body.get("errors"):
        codes = {(e.get("extensions") or {}).get("code") for e in body["errors"]}
        unavailable = codes == {"SERVICE_UNAVAILABLE"} and response.status_code == 503
        return Answer(**common, kind="503" if unavailable else f"error:{sorted(map(str, codes))}")
    result = body["data"]["submitJob"]
    if result["__typename"] == "V1SubmitJobSuccess":
        job = result["job"]
        return Answer(
            **common, kind="success", job_id=job["id"], deduplicated=result["deduplicated"]
        )
    if result["__typename"] == "V1ServiceUnavailable":
        assert result["retryable"] is True
        assert result["retryAfterSeconds"] >= 1
        return Answer(**common, kind="unavailable")
    return Answer(**common, kind=f"{result['__typename']}:{result.get('code')}")


async def cancel(http: httpx.AsyncClient, job_id: str) -> str:
    """cancelJob's answer: its __typename, or "503" when the whole request failed."""
    query = "mutation($id: ID!) { cancelJob(id: $id) { __typename } }"
    response = await http.post("/v1/graphql", json={"query": query, "variables": {"id": job_id}})
    if response.status_code == 503:
        return "503"
    typename: str = response.json()["data"]["cancelJob"]["__typename"]
    return typename


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition that other processes make true (nothing here to await)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@dataclass
class Load:
    """Clients that submit one job after another, each with its own idempotency key, and
    retry the same key after ServiceUnavailable until they get the job (as a client that
    must not lose or double a job does). Retries wait 0.1 s rather than Retry-After, so the
    answers show when the service came back to within a tenth of a second."""

    http: httpx.AsyncClient
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> job id
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"client{n}-{i}"
            while True:  # a key is retried until it is answered for good, also after stop
                answer = await submit(self.http, key)
                self.answers.append(answer)
                if answer.kind not in ("unavailable", "503"):
                    break
                await asyncio.sleep(0.1)
            if answer.kind == "success":
                assert answer.job_id is not None
                assert self.acknowledged.setdefault(key, answer.job_id) == answer.job_id
            i += 1

    def successes_after(self, moment: float) -> set[str]:
        """The clients that got a job from a submit sent after ``moment``."""
        return {
            a.key.split("-")[0] for a in self.answers if a.sent >= moment and a.kind == "success"
        }


@dataclass
class Follower:
    """A client following one job over WebSocket as docs/api.md says: on V1ServiceUnavailable
    (or a connection closed with 1013) it waits a moment and subscribes again with
    ``after`` = the last seq it got, until the terminal event."""

    ws_url: str
    key: str
    job_id: str
    events: list[dict[str, Any]] = field(default_factory=list)  # every stored event, once
    # V1ServiceUnavailable items, or close codes (1013 Try Again Later: key not checkable)
    cuts: list[dict[str, Any] | int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(e["__typename"] == "V1Progress" for e in self.events)

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["__typename"] in TERMINAL_EVENTS

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def take(self, item: dict[str, Any]) -> None:
        if item["__typename"] == "V1ServiceUnavailable":
            assert item["retryable"] is True
            assert item["resumeAfter"] == self.last_seq, (item, self.last_seq)
            self.cuts.append(item)
        elif item["__typename"] != "V1Heartbeat":
            assert item["seq"] == self.last_seq + 1, (item, self.last_seq)
            self.events.append(item)

    async def subscribe_once(self) -> None:
        """One subscription, until it completes."""
        async with websockets.connect(self.ws_url, subprotocols=[GRAPHQL_TRANSPORT_WS]) as ws:  # type: ignore[list-item]
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.key}"}}
            await ws.send(json.dumps(init))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            variables = {"id": self.job_id, "after": self.last_seq}
            payload = {"query": EVENTS, "variables": variables}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            while (message := json.loads(await ws.recv()))["type"] != "complete":
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                self.take(message["payload"]["data"]["jobEvents"])

    async def run(self) -> None:
        while not self.finished:
            try:
                await self.subscribe_once()
            except ConnectionClosed as closed:
                self.cuts.append(closed.rcvd.code if closed.rcvd else 1006)
            if not self.finished:
                await asyncio.sleep(0.2)  # a client would wait retryAfterSeconds


def serve(processes: Processes, env: dict[str, str], name: str = "api") -> JobqlProcess:
    api = processes.start("serve", env, name)
    api.wait_ready()
    return api


async def test_postgres_crash_under_submit_load_loses_no_job_and_answers_service_unavailable(
    pg_server: PostgresServer, processes: Processes
) -> None:
    database_url = pg_server.create_database()
    database = database_url.rsplit("/", 1)[1]
    migrate(database_url)
    key = create_key(database_url)
    # A caller whose key the API has not seen (and cached) before the crash.
    late_key = create_key(database_url, "late-client")
    env = jobql_env(
        database_url,
        "memory://",
        port=free_port(),
        worker_poll_seconds=0.5,
        lease_seconds=5,
        lease_renew_seconds=1,
    )
    api = serve(processes, env)
    pid = api.process.pid

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as http:
        # A long job (it works quietly until cancelled), followed over WebSocket across the
        # crash, and cancelled once PostgreSQL is back.
        streamed = await http.post(
            "/v1/graphql",
            json={
                "query": SUBMIT,
                "variables": {"input": {"task": "hang", "input": {"topic": "x"}}, "key": "s-0"},
            },
        )
        stream_job = streamed.json()["data"]["submitJob"]["job"]["id"]
        ws_url = api.base_url.replace("http://", "ws://") + "/v1/graphql"
        follower = Follower(ws_url, key, stream_job)
        following = asyncio.create_task(follower.run())

        load = Load(http)
        clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
        try:
            await until(lambda: len(load.acknowledged) >= 2 * CLIENTS, "submits before the crash")
            await until(
                lambda: follower.running or (following.done() and bool(following.result())),
                "the followed job to run",
            )
            crashed = time.monotonic()
            await asyncio.to_thread(pg_server.stop, "immediate")
            down = time.monotonic()
            late = {"Authorization": f"Bearer {late_key}"}
            late_during = await submit(http, "late-0", headers=late)
            cancel_during = await cancel(http, stream_job)
            await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - down))  # the outage
            restarting = time.monotonic()
            await asyncio.to_thread(pg_server.start)
            up = time.monotonic()  # pg_ctl saw it accept connections (it polls: a bit late)
            late_after = await submit(http, "late-0", headers=late)
            await until(
                lambda: len(load.successes_after(up)) == CLIENTS, "every client to submit again"
            )
            load.stop.set()
            await asyncio.gather(*clients)
            cancelled = await cancel(http, stream_job)
            async with asyncio.timeout(60):
                await following
        finally:
            load.stop.set()
            for task in [*clients, following]:
                task.cancel()

        # The stream was cut by the outage with a typed answer, and resumed from its last
        # seq: every event once, in order (checked as they came), through the terminal one.
        assert any(isinstance(cut, dict) for cut in follower.cuts), follower.cuts
        assert {cut for cut in follower.cuts if not isinstance(cut, dict)} <= {1013}
        assert follower.events[-1]["__typename"] == "V1JobCancelled"
        # A cancel during the outage was answered as data, and the one after it landed.
        assert cancel_during in ("V1ServiceUnavailable", "503")
        assert cancelled == "V1CancelJobSuccess"

        # The late caller's key could not be checked: the whole request failed, so HTTP 503
        # with Retry-After and SERVICE_UNAVAILABLE (not a 401: the key is fine).
        assert (late_during.kind, late_during.http_status) == ("503", 503), late_during
        assert late_during.retry_after == "2"
        assert late_after.kind == "success", late_after

        answers = load.answers
        kinds = {a.kind for a in answers}
        # Only jobs, or ServiceUnavailable (as data, or as a 503 when the key lookup itself
        # failed): never INTERNAL, never anything else.
        assert kinds <= {"success", "unavailable", "503"}, sorted(kinds)
        # Answered while PostgreSQL was down.
        during = [a for a in answers if down <= a.sent and a.sent + a.seconds < restarting]
        assert during, "no submit was answered during the outage"
        assert {a.kind for a in during} <= {"unavailable", "503"}, [
            (a.kind, a.sent - down, a.seconds) for a in during if a.kind == "success"
        ]
        assert all(a.retry_after is not None for a in answers if a.kind != "success")
        assert all(a.http_status == 200 for a in answers if a.kind == "unavailable")
        first_after = min(
            a.sent + a.seconds for a in answers if a.sent >= restarting and a.kind == "success"
        )

        # Retries with one key made one job: every acknowledged key has exactly its one job
        # (also a key whose first submit committed while the client heard ServiceUnavailable).
        rows = pg_server.psql(
            "SELECT idempotency_key || '=' || id FROM jobs ORDER BY idempotency_key",
            database,
        ).splitlines()
        stored = dict(row.split("=", 1) for row in rows)
        assert stored == load.acknowledged | {"late-0": late_after.job_id, "s-0": stream_job}
        deduplicated = sum(a.deduplicated for a in answers)

        # Every acknowledged job finishes, on the API process's own worker, which (like the
        # API) came through the crash without a restart.
        def unfinished() -> int:
            return int(
                pg_server.psql(
                    f"SELECT count(*) FROM jobs WHERE status NOT IN {TERMINAL!r}", database
                )
            )

        await until(lambda: unfinished() == 0, "every job to finish", timeout=60)
        statuses = pg_server.psql(
            "SELECT status || ':' || count(*) FROM jobs GROUP BY status ORDER BY status", database
        )
        assert api.process.poll() is None
        assert api.process.pid == pid
        assert (await http.get("/readyz")).status_code == 200

        # Stale pooled connections never reach a client: PostgreSQL restarted while nobody
        # submitted, then every connection terminated (as a failover or a pooler restart
        # does); the next submits, side by side on several pooled connections, all succeed.
        def restart() -> None:
            pg_server.stop("immediate")
            pg_server.start()

        for drop in (restart, lambda: pg_server.terminate_connections(database)):
            await asyncio.to_thread(drop)
            again = await asyncio.gather(*(submit(http, None) for _ in range(CLIENTS)))
            assert [a.kind for a in again] == ["success"] * CLIENTS, again

    print(
        f"\npostgres outage: stop took {down - crashed:.2f}s, down {restarting - down:.1f}s; "
        f"{len(answers)} submits by {CLIENTS} clients, {len(load.acknowledged)} jobs "
        f"({deduplicated} answered deduplicated on a retry); during the outage "
        f"{sum(a.kind == 'unavailable' for a in during)} V1ServiceUnavailable, "
        f"{sum(a.kind == '503' for a in during)} HTTP 503 (+1 for the uncached key, in "
        f"{late_during.seconds:.3f}s), slowest answer {max(a.seconds for a in during):.3f}s; "
        f"first job acknowledged {first_after - restarting:.3f}s after PostgreSQL was started "
        f"again (pg_ctl start took {up - restarting:.2f}s); job statuses {statuses.split()}; "
        f"{api.log().count('Traceback')} tracebacks in the API's log; the followed stream: "
        f"{len(follower.events)} events, ended {follower.events[-1]['__typename']}, cut "
        f"{sum(isinstance(c, dict) for c in follower.cuts)} times by V1ServiceUnavailable "
        f"and {sum(c == 1013 for c in follower.cuts)} times by close code 1013"
    )
    # The API logged the outage as such, not as bugs in resolvers.
    assert "unexpected error resolving" not in api.log()


# -- the rate limiter's Redis ------------------------------------------------------------


def rate_limited_env(tmp_path: Path, redis_url: str, policy: str) -> tuple[dict[str, str], str]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'jobql.db'}"
    migrate(database_url)
    limits = {"standard": {"rate_limit": 1000, "max_active_jobs": 1000, "daily_cost_cap_usd": 1000}}
    env = jobql_env(
        database_url,
        "memory://",
        port=free_port(),
        enforce_limits=True,
        redis_url=redis_url,
        rate_limit_on_redis_error=policy,
        tier_limits=json.dumps(limits),
    )
    return env, create_key(database_url)


def remaining(answer: Answer) -> int:
    """r= of the RateLimit header: what the rate limiter in Redis counted."""
    assert answer.rate_limit is not None, answer
    found = re.search(r"r=(\d+)", answer.rate_limit)
    assert found is not None, answer.rate_limit
    return int(found.group(1))


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_rate_limiter_redis_outage_follows_the_failure_policy(
    policy: str, redis_server: RedisServer, processes: Processes, tmp_path: Path
) -> None:
    env, key = rate_limited_env(tmp_path, redis_server.url, policy)
    api = serve(processes, env, f"api-{policy}")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as http:
        first = await submit(http, None)
        assert first.kind == "success"
        assert remaining(first) == 999

        # Redis restarts between two submits: the pooled connection is stale, and the next
        # submit still succeeds and is counted (by the new, empty Redis).
        redis_server.stop()
        redis_server.start()
        after_restart = await submit(http, None)
        assert after_restart.kind == "success", after_restart
        assert remaining(after_restart) == 999

        redis_server.stop()
        during = [await submit(http, f"down-{n}") for n in range(3)]
        redis_server.start()
        back = await submit(http, None)

        metrics = (await http.get("/metrics")).text

    if policy == "open":
        assert [a.kind for a in during] == ["success"] * 3
        assert all(a.rate_limit is None for a in during)  # not counted: no headers
        assert 'jobql_rate_limiter_unavailable_total{action="allowed"} 3.0' in metrics
    else:
        assert [a.kind for a in during] == ["unavailable"] * 3
        assert all(a.http_status == 200 and a.retry_after == "2" for a in during)
        assert 'jobql_rate_limiter_unavailable_total{action="refused"} 3.0' in metrics
    assert back.kind == "success", back
    assert remaining(back) == 999
    # One warning for the three submits: an outage does not flood the log.
    warnings = [
        line for line in api.log().splitlines() if "rate limiter: Redis is unreachable" in line
    ]
    assert len(warnings) == 1, warnings
    print(
        f"\nrate limiter Redis down ({policy}): answers {[a.kind for a in during]} in "
        f"{', '.join(f'{a.seconds * 1000:.1f}' for a in during)} ms; first submit after a "
        f"restart {after_restart.seconds * 1000:.1f} ms, after the outage "
        f"{back.seconds * 1000:.1f} ms"
    )
