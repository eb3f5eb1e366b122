"""Bad input never 500s: malformed JSON, huge numbers, NaN and lone surrogates are answered
400 BAD_REQUEST over HTTP, close the WebSocket with 4400, or come back as V1InvalidInput,
with and without a key; none of them logs above INFO, and the server keeps serving."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from jobql.settings import Settings
from tests.api import GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS, SUBMIT, Api, Server
from tests.log_capture import Logs, all_logs, serve_logged

# Raw JSON values that Python's json module chokes on or lets through.
BAD_VALUES: dict[str, bytes] = {
    "deep-nesting": b"[" * 5000 + b"]" * 5000,
    "invalid-utf8": b'"caf\xe9"',
    "5000-digit-integer": b"1" * 5000,
    "nan": b"NaN",
    "infinity": b"Infinity",
    "minus-infinity": b"-Infinity",
    "float-overflow": b"1e999",
    "lone-surrogate": b'"\\ud800"',
}
REASONS = {
    "deep-nesting": "nest",
    "invalid-utf8": "UTF-8",
    "5000-digit-integer": "digits",
    "nan": "NaN",
    "infinity": "NaN and Infinity",
    "minus-infinity": "NaN and Infinity",
    "float-overflow": "finite",
    "lone-surrogate": "surrogate",
}
VIEWER = "{ viewer { id } }"


def submit_body(value: bytes) -> bytes:
    """A submitJob request whose task input holds ``value``."""
    variables = {"input": {"task": "echo", "input": {"topic": "@@"}}}
    return json.dumps({"query": SUBMIT, "variables": variables}).encode().replace(b'"@@"', value)


def assert_bad_request(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert reason in error["message"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]


def assert_quiet(logs: Logs) -> None:
    """Nothing above INFO, and no traceback at any level."""
    assert logs.at_least(logging.WARNING) == []
    assert not [line for line in logs.lines() if "exc" in line]


async def assert_serves(server: Server, key: str) -> None:
    """A new connection, with a good request, works."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
        response = await client.post(
            "/v1/graphql", json={"query": VIEWER}, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 200
    assert response.json()["data"]["viewer"]["id"]


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
async def test_bad_http_bodies_are_400(settings: Settings, with_key: bool) -> None:
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            key = await server.new_key()
            headers = {"content-type": "application/json"}
            if with_key:
                headers["Authorization"] = f"Bearer {key}"
            for name, value in BAD_VALUES.items():
                async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
                    response = await client.post(
                        "/v1/graphql", content=submit_body(value), headers=headers
                    )
                assert_bad_request(response, REASONS[name])
                await assert_serves(server, key)
            # Invalid UTF-8 outside any string, and in GET variables.
            async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
                response = await client.post(
                    "/v1/graphql", content=b'{"query": "{ viewer { id } }"\xff}', headers=headers
                )
                assert_bad_request(response, "UTF-8")
                for name in ("nan", "5000-digit-integer", "deep-nesting", "lone-surrogate"):
                    response = await client.get(
                        "/v1/graphql",
                        params={
                            "query": VIEWER,
                            "variables": '{"a": ' + BAD_VALUES[name].decode() + "}",
                        },
                        headers={k: v for k, v in headers.items() if k == "Authorization"},
                    )
                    assert_bad_request(response, REASONS[name])
            await assert_serves(server, key)
            api = Api(server, key)
            jobs = await api.execute("{ jobs(first: 10) { edges { node { id } } } }")
            assert jobs["jobs"]["edges"] == []  # nothing was stored
            await api.aclose()
    assert_quiet(logs)


async def ws_close_code(
    server: Server, frames: list[str | bytes], protocol: str
) -> tuple[int, str, list[dict[str, Any]]]:
    """Send ``frames`` (bytes as text frames, unvalidated) and read until the server closes."""
    received: list[dict[str, Any]] = []
    async with websockets.connect(
        server.ws_url,
        subprotocols=[protocol],  # type: ignore[list-item]
    ) as ws:
        for frame in frames:
            await ws.send(frame, text=True)
        while True:
            try:
                received.append(json.loads(await ws.recv()))
            except ConnectionClosed as exc:
                close = exc.rcvd
                break
    assert close is not None, "closed without a close frame"
    return close.code, close.reason, received


async def assert_ws_serves(server: Server, key: str, protocol: str) -> None:
    async with websockets.connect(
        server.ws_url,
        subprotocols=[protocol],  # type: ignore[list-item]
    ) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
async def test_bad_websocket_messages_close_4400(settings: Settings, protocol: str) -> None:
    subscribe = "subscribe" if protocol == GRAPHQL_TRANSPORT_WS else "start"
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            key = await server.new_key()
            init = json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}
            )
            for name, value in BAD_VALUES.items():
                body = submit_body(value)
                with_key: list[str | bytes] = [
                    init,
                    b'{"type": "' + subscribe.encode() + b'", "id": "1", "payload": ' + body + b"}",
                ]
                # Without a key: the bad value is in the very first message.
                without_key: list[str | bytes] = [
                    b'{"type": "connection_init", "payload": {"x": ' + value + b"}}"
                ]
                for frames in (with_key, without_key):
                    code, reason, received = await ws_close_code(server, frames, protocol)
                    if name == "invalid-utf8":
                        # The WebSocket layer refuses a text frame that is not UTF-8 itself.
                        assert code == 1007
                    else:
                        assert (code, REASONS[name] in reason) == (4400, True), (code, reason)
                    assert all(m["type"] in ("connection_ack", "ka") for m in received)
                    await assert_ws_serves(server, key, protocol)
            await assert_serves(server, key)
    assert_quiet(logs)


LITERAL_SUBMIT = (
    'mutation { submitJob(input: {task: "echo", input: {topic: "x"}, FIELDS}) {'
    " __typename ... on V1InvalidInput { field message } } }"
)


async def submit_literal(api: Api, fields: str) -> httpx.Response:
    return await api.http.post(
        "/v1/graphql", json={"query": LITERAL_SUBMIT.replace("FIELDS", fields)}
    )


async def test_bad_graphql_literals_never_internal(settings: Settings) -> None:
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            api = await server.client()
            # An Int argument over 4300 digits (graphql-core raises ValueError on it).
            response = await submit_literal(api, "deadlineSeconds: " + "1" * 5000)
            assert_bad_request(response, "digits")
            # The same inside the JSON scalar (graphql-core turns it into NaN).
            for digits in (5000, 101):
                response = await submit_literal(api, "metadata: {a: " + "9" * digits + "}")
                assert_bad_request(response, "digits")
            for fields, field in [
                ("metadata: {a: 1e999}", "metadata"),
                ("metadata: {a: -1e999}", "metadata"),
                ('metadata: {a: ["x", {b: 1e400}]}', "metadata"),
                ("maxCostUsd: 1e999", "maxCostUsd"),
            ]:
                response = await submit_literal(api, fields)
                assert response.status_code == 200
                result = response.json()["data"]["submitJob"]
                assert result["__typename"] == "V1InvalidInput", (fields, result)
                assert result["field"] == field
            # Input literal nested past the limit: 70 levels of objects.
            nested = "input: " + "{a: " * 70 + "1" + "}" * 70
            query = LITERAL_SUBMIT.replace('input: {topic: "x"}, FIELDS', nested)
            response = await api.http.post("/v1/graphql", json={"query": query})
            assert response.status_code == 200
            result = response.json()["data"]["submitJob"]
            assert (result["__typename"], result["field"]) == ("V1InvalidInput", "input")
            # A lone surrogate written as a GraphQL escape is a syntax error.
            response = await submit_literal(api, 'metadata: {a: "\\ud800"}')
            assert response.status_code == 200
            errors = response.json()["errors"]
            assert "Invalid Unicode escape sequence" in errors[0]["message"]
            # Nothing was stored, and the jobs list is valid JSON.
            jobs = await api.execute("{ jobs(first: 10) { edges { node { id metadata } } } }")
            assert jobs["jobs"]["edges"] == []
            await assert_serves(server, api.key)
    assert_quiet(logs)


@pytest.mark.parametrize("value", [1e-300, 1e-7, 0.0000004, 0.0, -1.0])
async def test_max_cost_below_a_micro_dollar_is_refused(api: Api, value: float) -> None:
    result = await api.submit("echo", {"topic": "x"}, maxCostUsd=value)
    assert result["__typename"] == "V1InvalidInput", result
    assert result["field"] == "maxCostUsd"


async def test_max_cost_of_one_micro_dollar_is_accepted(api: Api) -> None:
    job = await api.submit_ok("echo", {"topic": "x"}, maxCostUsd=0.000001)
    assert job["status"] in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED")


@pytest.mark.parametrize("protocol", [GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS])
async def test_a_subscription_that_does_not_parse_is_answered_quietly(
    settings: Settings, protocol: str
) -> None:
    """As any invalid document: graphql-transport-ws closes with 4400 and the syntax error
    (as the protocol's library does), legacy graphql-ws answers it as the operation's error
    and the connection goes on; neither logs above INFO."""
    subscribe = "subscribe" if protocol == GRAPHQL_TRANSPORT_WS else "start"
    broken = {"query": "subscription { jobEvents(jobId: "}
    with all_logs() as logs:
        async with serve_logged(settings) as server:
            key = await server.new_key()
            async with websockets.connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
                init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}
                await ws.send(json.dumps(init))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                await ws.send(json.dumps({"type": subscribe, "id": "1", "payload": broken}))
                if protocol == GRAPHQL_TRANSPORT_WS:
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 4400
                    assert "Syntax Error" in closed.value.rcvd.reason
                else:
                    answer = json.loads(await ws.recv())
                    while answer["type"] == "ka":
                        answer = json.loads(await ws.recv())
                    assert (answer["type"], answer["id"]) == ("error", "1"), answer
                    assert "Syntax Error" in json.dumps(answer["payload"])
                    # The connection goes on; a query on it (this protocol carries
                    # subscriptions only) is told so, also without an ERROR log line.
                    await ws.send(
                        json.dumps({"type": "start", "id": "2", "payload": {"query": VIEWER}})
                    )
                    answer = json.loads(await ws.recv())
                    while answer.get("id") != "2":  # keep-alives, the first one's complete
                        answer = json.loads(await ws.recv())
                    assert answer["type"] == "error", answer
                    assert answer["payload"]["extensions"]["code"] == "OPERATION_NOT_SUPPORTED"
            await assert_ws_serves(server, key, protocol)
    assert_quiet(logs)
