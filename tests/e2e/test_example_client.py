"""examples/stream_job.py, run as a user would, against a live server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from jobql.settings import Settings
from tests.api import serve

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "stream_job.py"


async def run_example(url: str, key: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        env={**os.environ, "JOBQL_URL": url, "JOBQL_KEY": key},
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
