"""`jobql serve` stopped while an HTTP stream is open: the stream ends within the shutdown
grace with a resumable error, and the process exits (an open SSE response used to hold the
shutdown until its client left)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx

from tests.api import EVENTS
from tests.faults.conftest import Processes, create_key, migrate
from tests.faults.servers import free_port, jobql_env

SUBMIT = """mutation($input: V1SubmitJobInput!) {
  submitJob(input: $input) { ... on V1SubmitJobSuccess { job { id } } }
}"""


async def test_an_open_sse_stream_does_not_hold_the_shutdown(
    tmp_path: Path, processes: Processes
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'shutdown.db'}"
    migrate(database)
    key = create_key(database)
    env = jobql_env(database, "memory://", port=free_port(), shutdown_grace_seconds=1)
    api = processes.start("serve", env, "api")
    await asyncio.to_thread(api.wait_ready)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as http:
        submitted = await http.post(
            "/v1/graphql",
            json={
                "query": SUBMIT,
                "variables": {"input": {"task": "hang", "input": {"topic": "x"}}},
            },
        )
        job_id = submitted.json()["data"]["submitJob"]["job"]["id"]
        request = http.build_request(
            "POST",
            "/v1/graphql",
            json={"query": EVENTS, "variables": {"id": job_id}},
            headers={"Accept": "text/event-stream"},
        )
        async with asyncio.timeout(30):
            response = await http.send(request, stream=True)
            lines = response.aiter_lines()
            ids: list[int] = []
            async for line in lines:  # up to the first stored event
                if line.startswith("id: "):
                    ids.append(int(line.removeprefix("id: ")))
                    break
            stopping = time.monotonic()
            exit_code = asyncio.create_task(asyncio.to_thread(api.terminate, 20))
            rest = [line async for line in lines]
            code = await exit_code
            took = time.monotonic() - stopping
            await response.aclose()
    # A clean exit (uvicorn re-raises the SIGTERM it handled, so the status names it).
    assert code in (0, -signal.SIGTERM), api.log()
    # Within the grace (1 s) and the worker's own stop, not when the client leaves.
    assert took < 10, f"the process took {took:.1f} s to exit"
    # The stream ends as the protocol says: the error as its last `next`, then `complete`.
    events = [line.removeprefix("event: ") for line in rest if line.startswith("event: ")]
    assert events[-2:] == ["next", "complete"], rest
    data = [line.removeprefix("data: ") for line in rest if line.startswith("data: ")]
    last = json.loads([d for d in data if d][-1])
    assert "errors" in last, rest
    [error] = last["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["retryable"] is True
    assert error["extensions"]["resumeAfter"] >= ids[0]
