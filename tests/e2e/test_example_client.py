"""examples/stream_job.py, run as a user would, against a live server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from jobql.settings import Settings
from tests.api import serve
from tests.faults.servers import free_port

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "stream_job.py"


async def run_example(
    url: str, key: str, *args: str, extra_env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        env={**os.environ, "JOBQL_URL": url, "JOBQL_KEY": key, **(extra_env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_example_streams_a_job_to_its_end(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        code, out, err = await run_example(
            server.http_url, api.key, "echo", '{"topic": "the example"}'
        )
        assert code == 0, err
        job_id = err.split("[job ")[1].split("]")[0]
        job = await api.job(job_id)
        assert job["status"] == "SUCCEEDED"
        *_, output, summary = out.splitlines()
        assert output == job["output"]
        assert summary.startswith("SUCCEEDED: $")
        assert f"{job['usage']['outputTokens']} out tokens" in summary
        assert "simulated/sim-fast sim-fast-1" in summary


async def test_the_example_reports_a_failed_job_and_exits_1(settings: Settings) -> None:
    async with serve(settings) as server:
        api = await server.client()
        code, out, err = await run_example(
            server.http_url, api.key, "fail-timeout", '{"topic": "x"}'
        )
        assert code == 1, err
        assert "FAILED: $" in out
        assert "PROVIDER_TIMEOUT" in out
        assert "(retryable)" in out


async def test_the_example_gives_up_when_nothing_listens() -> None:
    # A port nobody listens on: the example stops after JOBQL_TRIES tries and says why.
    closed = free_port()
    code, out, err = await run_example(
        f"http://127.0.0.1:{closed}", "jq_unused", "echo", "{}", extra_env={"JOBQL_TRIES": "2"}
    )
    assert code == 1
    assert out == ""
    assert err.count("try 2 in 1 s") == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"gave up: submitting to http://127.0.0.1:{closed}")
    assert "failed 2 times in a row" in last
    assert "JOBQL_URL" in last


async def test_the_example_says_when_the_key_is_refused(settings: Settings) -> None:
    async with serve(settings) as server:
        code, out, err = await run_example(server.http_url, "jq_not_a_key", "echo", "{}")
    assert code == 1
    assert out == ""
    assert err.strip().startswith("request refused:")
    assert "API key" in err
    assert "Traceback" not in err
