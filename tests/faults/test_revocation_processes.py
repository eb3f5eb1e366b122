"""`jobql keys revoke` against two running `jobql serve` processes (PostgreSQL, Redis bus):
the key's subscriptions close with 4403 on both within a second, and HTTP answers 401."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.backends import REDIS_URL, Databases, check_redis
from tests.faults.conftest import Processes, create_key
from tests.faults.servers import TESTS, JobqlProcess, free_port, jobql_env, wait_until
from tests.ws import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, RawSocket

SUBMIT = """mutation($input: V1SubmitJobInput!) { submitJob(input: $input) {
  ... on V1SubmitJobSuccess { job { id } } } }"""


@pytest.fixture
def database_url(databases: Databases) -> Iterator[str]:
    check_redis()
    yield from databases.postgres()


def _serve(processes: Processes, database_url: str, name: str) -> JobqlProcess:
    env = jobql_env(database_url, REDIS_URL, port=free_port(), migrate_on_start=False)
    return processes.start("serve", env, name)


async def test_revoking_closes_the_keys_websockets_on_every_process_within_a_second(
    processes: Processes, database_url: str
) -> None:
    key = create_key(database_url)
    servers = [_serve(processes, database_url, f"api-{n}") for n in range(2)]
    for server in servers:
        server.wait_ready()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=auth, timeout=10) as http:
        answer = await http.post(
            servers[0].base_url + "/v1/graphql",
            json={
                "query": SUBMIT,
                "variables": {"input": {"task": "hang", "input": {"topic": "x"}}},
            },
        )
        job_id = answer.json()["data"]["submitJob"]["job"]["id"]
        sockets = []
        for server, protocol in zip(
            servers, [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS], strict=True
        ):
            url = server.base_url.replace("http://", "ws://") + "/v1/graphql"
            socket = await RawSocket.connected(url, protocol, key)
            await socket.subscribe("events", job_id)
            assert (await socket.receive_for("events"))["type"] in ("next", "data")
            sockets.append(socket)
        for server in servers:  # the key is in both processes' caches
            response = await http.post(
                server.base_url + "/v1/graphql", json={"query": "{ viewer { id } }"}
            )
            assert response.status_code == 200

        async def closed_at(socket: RawSocket) -> tuple[int | None, float]:
            closed = await socket.closed()
            return closed.code, time.monotonic()

        watchers = [asyncio.create_task(closed_at(s)) for s in sockets]
        revoke = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jobql.cli",
            "keys",
            "revoke",
            key[:10],
            env={**jobql_env(database_url, REDIS_URL), "PATH": "/usr/bin:/bin"},
            cwd=TESTS.parent,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await revoke.communicate()
        revoked = time.monotonic()
        assert revoke.returncode == 0, stderr
        assert b"told through the event bus" in stderr
        async with asyncio.timeout(5):
            results = await asyncio.gather(*watchers)
        for code, at in results:
            assert code == 4403
            assert at - revoked < 1.0

        for server in servers:

            async def refused(base: str = server.base_url) -> bool:
                response = await http.post(
                    base + "/v1/graphql", json={"query": "{ viewer { id } }"}
                )
                return response.status_code == 401

            assert time.monotonic() - revoked + await wait_until(refused, "401", 1.0) < 1.0
        for socket in sockets:
            await socket.aclose()
