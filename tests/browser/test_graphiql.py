"""GraphiQL in a real headless Chromium with no outside network: it renders from the
vendored assets, sends the Headers tab's key over HTTP and in the WebSocket
connection_init payload, and streams a job's events over graphql-transport-ws."""

from __future__ import annotations

import json
from typing import Any

from tests.api import Server
from tests.browser.conftest import Browsing

TIMEOUT_MS = 15_000
PLACEHOLDER = {"Authorization": "Bearer <paste your key>"}
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"
RESULT = ".result-window .CodeMirror"

SUBMIT = """mutation {
  submitJob(input: {task: "slow", input: {topic: "offline explorers"}}) {
    __typename
    ... on V1SubmitJobSuccess { job { id status } }
    ... on V1Error { code message }
  }
}"""

EVENTS = """subscription {
  jobEvents(jobId: "JOB_ID") {
    __typename
    ... on V1JobEvent { seq }
    ... on V1OutputDelta { text }
    ... on V1JobFinished { costUsd usage { outputTokens } model { version } }
    ... on V1JobSucceeded { output }
  }
}"""

# The text of every value the result pane held, in order (a subscription's events each
# replace the one before).
_RECORD_RESULTS = """(selector) => {
  const editor = document.querySelector(selector).CodeMirror;
  window.results = [];
  editor.on("change", () => window.results.push(editor.getValue()));
}"""


async def open_graphiql(browsing: Browsing) -> Any:
    page = browsing.page
    await page.goto(f"{browsing.origin}/v1/graphql")
    await page.wait_for_selector(QUERY_EDITOR, timeout=TIMEOUT_MS)
    await page.wait_for_selector(HEADERS_EDITOR, timeout=TIMEOUT_MS)
    return page


async def editor_text(page: Any, selector: str) -> str:
    text: str = await page.evaluate(
        "(selector) => document.querySelector(selector).CodeMirror.getValue()", selector
    )
    return text


async def replace_text(page: Any, selector: str, text: str) -> None:
    """Click into a CodeMirror editor, select everything and paste ``text`` over it."""
    await page.click(f"{selector} .CodeMirror-lines")
    await page.keyboard.press("ControlOrMeta+A")
    await page.keyboard.insert_text(text)
    assert await editor_text(page, selector) == text


async def run(page: Any, operation: str) -> None:
    """Run the query editor's document once GraphiQL has parsed it (it parses a moment
    after each change, and picks HTTP or the WebSocket by the parsed operation)."""
    await page.wait_for_function(
        "([selector, operation]) => document.querySelector(selector).CodeMirror"
        ".operations?.[0]?.operation === operation",
        arg=[QUERY_EDITOR, operation],
        timeout=TIMEOUT_MS,
    )
    await page.evaluate(_RECORD_RESULTS, RESULT)
    await page.click(".graphiql-execute-button")


async def result_once(page: Any, needle: str) -> dict[str, Any]:
    """The result pane's JSON, once it contains ``needle``."""
    await page.wait_for_function(
        "([selector, needle]) => document.querySelector(selector).CodeMirror"
        ".getValue().includes(needle)",
        arg=[RESULT, needle],
        timeout=TIMEOUT_MS,
    )
    result: dict[str, Any] = json.loads(await editor_text(page, RESULT))
    return result


async def assert_offline_and_clean(browsing: Browsing) -> None:
    assert browsing.blocked == [], f"requests to other origins: {browsing.blocked}"
    ws_origin = browsing.origin.replace("http://", "ws://", 1)
    assert all(url.startswith(ws_origin + "/") for url in browsing.sockets), browsing.sockets
    assert await browsing.page.evaluate("window.cspViolations") == []


async def test_a_job_submitted_and_followed_from_graphiql(
    graphiql_server: Server, browsing: Browsing
) -> None:
    key = await graphiql_server.new_key("browser")
    page = await open_graphiql(browsing)
    assert json.loads(await editor_text(page, HEADERS_EDITOR)) == PLACEHOLDER
    assert await page.locator("#graphiql").inner_text() != "Loading..."

    await replace_text(page, HEADERS_EDITOR, json.dumps({"Authorization": f"Bearer {key}"}))
    await replace_text(page, QUERY_EDITOR, SUBMIT)
    await run(page, "mutation")
    submitted = (await result_once(page, "submitJob"))["data"]["submitJob"]
    assert submitted["__typename"] == "V1SubmitJobSuccess", submitted
    job_id = submitted["job"]["id"]

    await replace_text(page, QUERY_EDITOR, EVENTS.replace("JOB_ID", job_id))
    await run(page, "subscription")
    finished = (await result_once(page, "V1JobSucceeded"))["data"]["jobEvents"]
    assert finished["__typename"] == "V1JobSucceeded"
    assert finished["usage"]["outputTokens"] > 0
    # The pane showed the output streaming in, then the terminal event (it shows one event
    # at a time; rendering may skip some, so the socket's frames are the full record).
    shown = [
        json.loads(text)["data"]["jobEvents"] for text in await page.evaluate("results") if text
    ]
    assert any(e["__typename"] == "V1OutputDelta" for e in shown), shown
    assert shown[-1] == finished
    streamed = [json.loads(frame) for frame in browsing.received_frames]
    events = [m["payload"]["data"]["jobEvents"] for m in streamed if m["type"] == "next"]
    assert [e["seq"] for e in events] == list(range(1, finished["seq"] + 1))
    deltas = [e["text"] for e in events if e["__typename"] == "V1OutputDelta"]
    assert "".join(deltas) == finished["output"]
    assert streamed[0]["type"] == "connection_ack"
    assert streamed[-1]["type"] == "complete"
    await browsing.screenshot("graphiql-subscription.png")

    # The key went in connection_init, and the operation over graphql-transport-ws.
    frames = [json.loads(frame) for frame in browsing.sent_frames]
    assert frames[0] == {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}
    assert frames[1]["type"] == "subscribe"
    # The key stays in the page: GraphiQL keeps its tabs in localStorage, without headers.
    stored = await page.evaluate("JSON.stringify(Object.entries(localStorage))")
    assert "graphiql:" in stored
    assert key not in stored
    await assert_offline_and_clean(browsing)  # (a reload starts a new violation record)
    # After a reload the query is back, and the Headers tab holds the placeholder again.
    await page.reload()
    await page.wait_for_selector(HEADERS_EDITOR, timeout=TIMEOUT_MS)
    assert await editor_text(page, QUERY_EDITOR) == EVENTS.replace("JOB_ID", job_id)
    assert json.loads(await editor_text(page, HEADERS_EDITOR)) == PLACEHOLDER
    await assert_offline_and_clean(browsing)
    assert browsing.errors == []


async def test_a_wrong_key_is_answered_in_the_result_pane(browsing: Browsing) -> None:
    page = await open_graphiql(browsing)
    await replace_text(page, HEADERS_EDITOR, '{"Authorization": "Bearer jq_not_a_key"}')
    await replace_text(page, QUERY_EDITOR, "{ viewer { id name } }")
    await run(page, "query")
    answer = await result_once(page, "UNAUTHENTICATED")
    assert answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert answer["data"] is None

    # A subscription with that key: the socket is refused (4403) and the pane says so.
    await replace_text(page, QUERY_EDITOR, 'subscription { jobEvents(jobId: "1") { __typename } }')
    await run(page, "subscription")
    await page.wait_for_function(
        "(selector) => document.querySelector(selector).CodeMirror.getValue()"
        ".includes('Socket closed with event 4403:')",
        arg=RESULT,
        timeout=TIMEOUT_MS,
    )
    # Tried once: a retry would only spend this address's budget of failed keys.
    assert [json.loads(frame) for frame in browsing.sent_frames] == [
        {"type": "connection_init", "payload": {"Authorization": "Bearer jq_not_a_key"}}
    ]
    await browsing.screenshot("graphiql-wrong-key.png")
    await assert_offline_and_clean(browsing)


async def test_the_page_policy_refuses_other_origins(browsing: Browsing) -> None:
    """What the page's Content-Security-Policy does in the browser: a script that tries
    another origin is stopped before any request, and the violation is seen."""
    page = await open_graphiql(browsing)
    refused = await page.evaluate(
        """async () => {
          const fetched = await fetch("https://example.com/x").then(
            () => "answered", (error) => error.name
          );
          const socket = await new Promise((resolve) => {
            const ws = new WebSocket("ws://example.com/graphql");
            ws.onopen = () => resolve("open");
            ws.onerror = () => resolve("error");
          });
          return [fetched, socket];
        }"""
    )
    assert refused == ["TypeError", "error"]
    await page.wait_for_function("window.cspViolations.length === 2", timeout=TIMEOUT_MS)
    assert await page.evaluate("window.cspViolations") == [
        "connect-src https://example.com/x",
        "connect-src ws://example.com/graphql",
    ]
    assert browsing.blocked == []  # the policy stopped them before the network
