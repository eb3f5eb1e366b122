"""The curl commands of docs/clients.md, run as written against a live jobql."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.clients.conftest import Live
from tests.clients.node import run

SUBMIT = r"""
curl -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: application/graphql-response+json' \
  -w '\nHTTP %{http_code}\n' \
  -d '{"query": "mutation($input: V1SubmitJobInput!) { submitJob(input: $input) { __typename ... on V1SubmitJobSuccess { job { id status } } ... on V1Error { code message } } }",
       "variables": {"input": {"task": "echo", "input": {"topic": "curl"}, "wait": 10}}}'
"""  # noqa: E501

JOB = r"""
curl -s "$JOBQL_URL/v1/graphql" \
  -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -H 'Accept: application/graphql-response+json' \
  -w '\nHTTP %{http_code}\n' \
  -d '{"query": "query($id: ID!) { job(id: $id) { __typename ... on V1Job { id status cancelRequested output } ... on V1Error { code message } } }",
       "variables": {"id": "'"$JOB"'"}}'
"""  # noqa: E501


async def curl(command: str, **env: str) -> tuple[dict[str, Any], int]:
    """Run a documented command with bash; its JSON body and HTTP status."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed to run the documented curl commands")
    finished = await run("bash", "-c", command, env=env, timeout=30)
    assert finished.code == 0, finished.output
    body, status = finished.output.strip().rsplit("\n", 1)
    assert status.startswith("HTTP "), finished.output
    answer: dict[str, Any] = json.loads(body)
    return answer, int(status.removeprefix("HTTP "))


async def test_the_documented_curl_commands(live: Live) -> None:
    url = live.server.http_url
    submitted, status = await curl(SUBMIT, JOBQL_URL=url, KEY=live.key)
    assert status == 200
    assert submitted["data"]["submitJob"]["__typename"] == "V1SubmitJobSuccess"
    job = submitted["data"]["submitJob"]["job"]
    assert job["status"] == "SUCCEEDED"  # wait: 10 held the answer until the job finished

    read, status = await curl(JOB, JOBQL_URL=url, KEY=live.key, JOB=job["id"])
    assert status == 200
    assert read["data"]["job"]["status"] == "SUCCEEDED"
    assert read["data"]["job"]["cancelRequested"] is False

    refused, status = await curl(SUBMIT, JOBQL_URL=url, KEY="jq_not-a-key")
    assert status == 401
    assert refused["data"] is None
    [error] = refused["errors"]
    assert error["message"] == "Missing or invalid API key: send `Authorization: Bearer <key>`."
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
