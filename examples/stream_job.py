"""Submit a jobql job and stream its output: the client contract in one small script.

    JOBQL_URL=http://127.0.0.1:8000 JOBQL_KEY=jq_... \\
        python examples/stream_job.py summarize '{"text": "Tides come in twice a day."}'

- submits with an idempotency key, so retrying after a network error never runs (or
  bills) the job twice, and waits `retryAfterSeconds` when rate limited;
- follows `jobEvents` over graphql-transport-ws and prints output as it streams;
- if the connection drops, subscribes again with `after: <last seq>`: nothing is lost or
  repeated, and the job kept running meanwhile;
- prints the terminal event's cost, tokens, time and model version (or the typed error);
- gives up with a clear message when the server cannot be reached after a few tries, or
  refuses the key.

JOBQL_URL defaults to http://127.0.0.1:8000 (what `make serve` listens on); JOBQL_KEY is the
key `make serve` printed (or `.venv/bin/jobql keys create --name me`); JOBQL_TRIES (default
6) is how many network errors in a row it takes before giving up.
Needs httpx and websockets (both installed with jobql).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# Network errors in a row before giving up (waits 1, 2, 4, 4, 4 … seconds between tries).
MAX_TRIES = int(os.environ.get("JOBQL_TRIES", "6"))

SUBMIT = """
mutation Submit($input: V1SubmitJobInput!, $key: String) {
  submitJob(input: $input, idempotencyKey: $key) {
    __typename
    ... on V1SubmitJobSuccess { deduplicated job { id status } }
    ... on V1Error { code message retryable requestId }
    ... on V1RateLimited { retryAfterSeconds }
  }
}"""

EVENTS = """
subscription Events($id: ID!, $after: Int) {
  jobEvents(jobId: $id, after: $after) {
    __typename
    ... on V1JobEvent { seq }
    ... on V1OutputDelta { text }
    ... on V1Progress { phase message }
    ... on V1JobStarted { attempt }
    ... on V1JobFinished { costUsd durationMs usage { inputTokens outputTokens }
                           model { provider name version } }
    ... on V1JobFailed { error { code message retryable } }
    ... on V1JobCancelled { reason }
    ... on V1Error { code message }
  }
}"""


async def backoff(failures: int, what: str, error: BaseException) -> None:
    """Wait before try number ``failures + 1``, or give up after MAX_TRIES."""
    if failures >= MAX_TRIES:
        raise SystemExit(
            f"gave up: {what} failed {failures} times in a row ({error!r}); is the server "
            "running, and is JOBQL_URL right?"
        )
    wait = min(2 ** (failures - 1), 4)
    print(f"[{what} failed ({error!r}); try {failures + 1} in {wait} s]", file=sys.stderr)
    await asyncio.sleep(wait)


async def submit(http: httpx.AsyncClient, task: str, job_input: dict[str, Any]) -> str:
    key = f"example-{uuid.uuid4()}"  # one key for every retry of this submit
    variables = {"input": {"task": task, "input": job_input}, "key": key}
    failures = 0
    while True:
        try:
            response = await http.post(
                "/v1/graphql", json={"query": SUBMIT, "variables": variables}
            )
        except httpx.TransportError as error:
            failures += 1
            await backoff(failures, f"submitting to {http.base_url} (same idempotency key)", error)
            continue
        failures = 0
        if response.status_code == 503:  # the service is briefly down: wait as told
            wait = int(response.headers.get("retry-after", "1"))
            print(f"[service unavailable: retrying in {wait} s]", file=sys.stderr)
            await asyncio.sleep(wait)
            continue
        body = response.json()
        if body.get("errors"):
            raise SystemExit(f"request refused: {body['errors'][0]['message']}")
        result = body["data"]["submitJob"]
        if result["__typename"] == "V1SubmitJobSuccess":
            return str(result["job"]["id"])
        if result.get("retryable"):
            wait = result.get("retryAfterSeconds") or 1
            print(f"[{result['code']}: retrying in {wait} s]", file=sys.stderr)
            await asyncio.sleep(wait)
            continue
        raise SystemExit(f"{result['code']}: {result['message']} (request {result['requestId']})")


async def follow(ws_url: str, api_key: str, job_id: str) -> int:
    """Print the job's output as it streams; resume after the last seq on a dropped link."""
    last_seq = 0
    status: int | None = None
    failures = 0
    while True:
        try:
            async with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
                payload = {"Authorization": f"Bearer {api_key}"}
                await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
                ack = json.loads(await ws.recv())
                if ack.get("type") != "connection_ack":
                    raise SystemExit(f"not accepted: {ack}")
                variables = {"id": job_id, "after": last_seq}
                await ws.send(
                    json.dumps(
                        {
                            "id": "1",
                            "type": "subscribe",
                            "payload": {"query": EVENTS, "variables": variables},
                        }
                    )
                )
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "complete":  # sent after the terminal event
                        return status if status is not None else 1
                    if message["type"] == "error":
                        raise SystemExit(f"subscription refused: {message['payload']}")
                    if message["type"] != "next":
                        continue
                    event = message["payload"]["data"]["jobEvents"]
                    failures = 0
                    last_seq = event.get("seq") or last_seq
                    status = show(event)
        except ConnectionClosed as error:
            if error.rcvd is not None and error.rcvd.code == 4403:  # the key: retrying won't help
                raise SystemExit(f"not accepted: {error.rcvd.reason}") from None
            failures += 1
            await backoff(failures, f"the stream (resuming after seq {last_seq})", error)
        except OSError as error:
            failures += 1
            await backoff(failures, f"connecting to {ws_url}", error)


def show(event: dict[str, Any]) -> int | None:
    """Print one event; the exit status once the job is over."""
    kind = event["__typename"]
    if kind == "V1OutputDelta":
        print(event["text"], end="", flush=True)
    elif kind == "V1Progress":
        print(f"[{event['phase']}] {event['message']}", file=sys.stderr)
    elif kind == "V1JobStarted" and event["attempt"] > 1:
        print(f"\n[attempt {event['attempt']}: output starts again]", file=sys.stderr)
    elif kind in ("V1JobSucceeded", "V1JobFailed", "V1JobCancelled"):
        if kind == "V1JobCancelled" and event["reason"]:
            print(f"\n[cancelled: {event['reason']}]", file=sys.stderr)
        usage, model = event["usage"], event["model"]
        print(
            f"\n{kind[5:].upper()}: ${event['costUsd']:.6f}, {usage['inputTokens']} in / "
            f"{usage['outputTokens']} out tokens, {event['durationMs']} ms, "
            f"{model['provider']}/{model['name']} {model['version']}"
        )
        if kind == "V1JobFailed":
            error = event["error"]
            retry = "retryable" if error["retryable"] else "not retryable"
            print(f"{error['code']}: {error['message']} ({retry})")
        return 0 if kind == "V1JobSucceeded" else 1
    elif kind.endswith("NotFound"):
        raise SystemExit(f"{event['code']}: {event['message']}")
    return None


async def main() -> int:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    base = os.environ.get("JOBQL_URL", "http://127.0.0.1:8000").rstrip("/")
    api_key = os.environ.get("JOBQL_KEY") or sys.exit("set JOBQL_KEY to your API key")
    task, job_input = sys.argv[1], json.loads(sys.argv[2])
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        job_id = await submit(http, task, job_input)
    print(f"[job {job_id}]", file=sys.stderr)
    ws_url = base.replace("http", "ws", 1) + "/v1/graphql"
    return await follow(ws_url, str(api_key), job_id)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
