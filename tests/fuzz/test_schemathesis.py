"""Schemathesis (GraphQL mode) against the live server, with a valid key.

For each query and mutation, generated documents (valid ones and ones with a schema violation)
go to a real uvicorn server. Every answer must be below 500, carry an X-Request-ID header and
hold no internal error: no trace, SQL, driver or exception class name in an error, and no
masked INTERNAL error at all (each one is a bug). The test collects every problem and reports
each with the shortest queries that showed it.

Schemathesis and Hypothesis are synchronous and the server runs in the test's event loop, so
the fuzzing runs on a worker thread. Generation is derandomized: every run sends the same
requests. Besides random values, dictionaries feed in real task names, job ids and cursors,
cursor-shaped variants, and edge values (NUL bytes, huge and tiny floats, 32-bit bounds).

Knobs for a deeper local hunt: JOBQL_FUZZ_SCALE (multiplies the number of examples),
JOBQL_FUZZ_SEED (random instead of derandomized), JOBQL_FUZZ_LOG (a file to log every exchange).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import graphql
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.graphql import nodes

from jobql.settings import Settings
from tests.api import Api, serve
from tests.backends import BACKENDS, Backend

SCALE = float(os.environ.get("JOBQL_FUZZ_SCALE", "1"))
SEED = int(os.environ["JOBQL_FUZZ_SEED"]) if os.environ.get("JOBQL_FUZZ_SEED") else None
LOG = os.environ.get("JOBQL_FUZZ_LOG")

# Examples per operation and backend (about 200 per backend): most where the arguments are.
OPERATIONS = {
    "Query.job": 30,
    "Query.jobs": 40,
    "Query.tasks": 5,
    "Query.viewer": 5,
    "Mutation.submitJob": 80,
    "Mutation.cancelJob": 40,
}
MASKED = "Internal error; quote the request id when reporting it."
# Execution errors (with a `path`) the resolvers raise on purpose; any other is a bug.
# Field errors raised on purpose: a bad argument, and a job's eventsUrl on a server that
# issues no stream tickets (the field is null and the error says which setting is missing).
DELIBERATE_CODES = {"BAD_USER_INPUT", "STREAM_TICKETS_UNAVAILABLE"}
# Extensions besides `code` that the limits' errors carry: the numbers a client acts on.
LIMIT_EXTENSIONS = {
    "QUERY_TOO_COSTLY": {"cost", "maxCost"},
    "TOO_MANY_DIRECTIVES": {"directives", "limit"},
    "RESPONSE_TOO_LARGE": {"bytes", "maxBytes", "requestId"},
}
# A trace, SQL or a database driver named in an error.
LEAKS = re.compile(
    r"traceback|stacktrace|File \"|sqlalchemy|asyncpg|aiosqlite|sqlite3|psycopg|SELECT |INSERT ",
    re.IGNORECASE,
)
# An exception class name in an error (our GraphQL types V1…Error are fine).
CLASS_NAME = re.compile(r"\b(?!V1)[A-Z][A-Za-z0-9]*(?:Error|Exception)\b")

# Edge values, used type-wide: for any String/ID, Float or Int argument now and then.
# (Hypothesis draws dictionary entries with a bias towards the first ones.)
ODD_STRINGS = ["a\x00b", "", " ", "\x00", "\u202e", "\U0001f600", "'; --", "%s%n", "\\", "null"]
BAD_IDS = ["a\x00b", "", "1" * 300]
KEYS = ["retry-1", "retry-2"]
ODD_FLOATS = [1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0, 1e-9, 9007199254740993.0]
ODD_INTS = [2147483647, -2147483648, 0, -1, 1]


# --- the JSON scalar (`input`, `metadata`): task-shaped objects and arbitrary JSON -------------

_names = st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,7}", fullmatch=True)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_names, children, max_size=3),
    max_leaves=8,
)
_task_inputs = st.fixed_dictionaries({"topic": st.text(min_size=1, max_size=40)}) | (
    st.fixed_dictionaries({"text": st.text(min_size=1, max_size=40)})
)


def _node(value: Any) -> graphql.ValueNode:
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([_node(v) for v in value])
    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=_node(v))
            for k, v in value.items()
        ]
    )


schemathesis.graphql.scalar("JSON", (_task_inputs | _json).map(_node))


# --- checking one answer -----------------------------------------------------------------------


def leaks(text: str, sent: str) -> list[str]:
    """Trace, SQL, driver or exception-class words in `text` that the request did not send
    itself (messages may quote a bad value back)."""
    words = [m.group(0) for m in LEAKS.finditer(text)]
    words += [m.group(0) for m in CLASS_NAME.finditer(text)]
    return [word for word in words if word.lower() not in sent.lower()]


def problems_of(status: int, headers: Mapping[str, list[str]], text: str, sent: str) -> list[str]:
    """What is wrong with one answer to the document `sent`, one line per kind of problem
    (without request ids, so that the lines group the same bug)."""
    found: list[str] = []
    if status >= 500:
        found.append(f"HTTP {status}")
    if not any(headers.get("x-request-id", [])):
        found.append(f"no X-Request-ID header (HTTP {status})")
    try:
        body = json.loads(text)
    except ValueError:
        return [*found, f"a body that is not JSON (HTTP {status}, leaks {leaks(text, sent)})"]
    errors = body.get("errors") if isinstance(body, dict) else None
    for error in errors or []:
        if not isinstance(error, dict):
            found.append(f"an error that is not an object: {error!r}")
            continue
        message = error.get("message")
        extensions = error.get("extensions") or {}
        code = extensions.get("code") if isinstance(extensions, dict) else None
        where = f"at {error.get('path')}"
        leaked = leaks(f"{message} {extensions!r}", sent)
        if leaked:
            found.append(f"an error leaks {leaked} {where}: {message!r}")
        if message == MASKED and code == "INTERNAL":
            found.append(f"an internal error (masked) {where}")
        elif message == MASKED or code == "INTERNAL":
            found.append(f"a badly masked internal error {where}: {error!r}")
        elif "path" in error and code not in DELIBERATE_CODES:
            found.append(f"an unexpected execution error {where}: {message!r} ({code})")
        allowed = {"code"} | LIMIT_EXTENSIONS.get(str(code), set())
        if not isinstance(extensions, dict) or set(extensions) - allowed:
            found.append(f"unexpected error extensions {where}: {extensions!r}")
    return found


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    with_data: int = 0
    seconds: float = 0.0
    # A problem -> each (document, answer) that showed it, and how often
    problems: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)

    def add(self, problem: str, document: str, answer: str) -> None:
        self.problems.setdefault(problem, Counter())[(document, answer)] += 1

    def report(self, label: str) -> str:
        """Each problem with the three shortest queries that showed it."""
        lines = []
        for problem, seen in sorted(self.problems.items()):
            lines.append(f"{label}: {problem} ({seen.total()} times); the shortest queries:")
            for document, answer in sorted(seen, key=lambda pair: len(pair[0]))[:3]:
                lines += ["--- query:", document, "--- answer:", answer]
        return "\n".join(lines)


@dataclass
class Fixtures:
    """What the server holds before the fuzzing starts, fed to it through dictionaries."""

    tasks: list[str]
    ids: list[str]
    cursors: list[str]

    def config(self) -> SchemathesisConfig:
        def values(items: list[Any]) -> dict[str, Any]:
            return {"values": items}

        return SchemathesisConfig.from_dict(
            {
                "dictionaries": {
                    "tasks": values(self.tasks),
                    "ids": values([*self.ids[:1], *BAD_IDS, *self.ids[1:]]),
                    "keys": values(KEYS),
                    "reasons": values(ODD_STRINGS),
                    "cursors": values(self.cursors),
                    "strings": values(ODD_STRINGS),
                    "floats": values(ODD_FLOATS),
                    "ints": values(ODD_INTS),
                },
                "parameters": {
                    "Mutation.submitJob.input.task": {"dictionary": "tasks", "probability": 0.6},
                    "Query.job.id": {"dictionary": "ids", "probability": 0.5},
                    "Mutation.cancelJob.id": {"dictionary": "ids", "probability": 0.6},
                    "Mutation.cancelJob.reason": {"dictionary": "reasons", "probability": 0.5},
                    "Mutation.submitJob.input.maxCostUsd": {
                        "dictionary": "floats",
                        "probability": 0.5,
                    },
                    "Mutation.submitJob.input.wait": {"dictionary": "floats", "probability": 0.3},
                    "Mutation.submitJob.idempotencyKey": {"dictionary": "keys", "probability": 0.5},
                    "Query.jobs.after": {"dictionary": "cursors", "probability": 0.7},
                },
                "generation": {
                    "dictionaries": {
                        "string": {"dictionary": "strings", "probability": 0.15},
                        "number": {"dictionary": "floats", "probability": 0.3},
                        "integer": {"dictionary": "ints", "probability": 0.2},
                    }
                },
            }
        )


def cursor_variants(cursor: str) -> list[str]:
    """A real `jobs` cursor and cursor-shaped variants of it (base64 of `created|id`)."""
    created, _, job_id = base64.urlsafe_b64decode(cursor).decode().partition("|")

    def encode(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode()

    return [
        cursor,
        encode(f"{created[:19]}|{job_id}"),  # no UTC offset
        encode(f"{created[:10]}|{job_id}"),  # a date only
        encode(f"0001-01-01T00:00:00+14:00|{job_id}"),  # before year 1 in UTC
        encode(f"9999-12-31T23:59:59-14:00|{job_id}"),  # after year 9999 in UTC
        encode(f"{created}|"),
        encode(f"{created}|\x00"),
        encode(f"{created}|{job_id}|{job_id}"),
        encode("|"),
        cursor.rstrip("="),
        "",
    ]


async def prepare(api: Api) -> Fixtures:
    """Jobs in every state the fuzzer can reach by id: finished, running (several, so that more
    than one cancel succeeds) and cancelled."""
    done = await api.submit_ok("echo", {"topic": "done"})
    await api.wait_finished(done["id"])
    running = [(await api.submit_ok("hang", {"topic": f"running {i}"}))["id"] for i in range(4)]
    cancelled = await api.submit_ok("hang", {"topic": "cancelled"})
    await api.cancel(cancelled["id"])
    tasks = [t["name"] for t in (await api.execute("{ tasks { name } }"))["tasks"]]
    page = await api.execute("{ jobs(first: 1) { edges { cursor } } }")
    return Fixtures(
        tasks=tasks,
        ids=[done["id"], *running, cancelled["id"]],
        cursors=cursor_variants(page["jobs"]["edges"][0]["cursor"]),
    )


NUL = "a\\u0000b"  # a NUL byte, as a GraphQL string escape
SUBMIT = (
    'mutation {{ submitJob(input: {{task: "echo", input: {{topic: "x"}}, {}}}) {{ __typename }} }}'
)


def seeds(fixtures: Fixtures, label: str) -> list[str]:
    """Documents sent before the generated ones: edge cases that random generation reaches
    only by luck at this budget (so what this fuzzer once found stays covered)."""
    running = fixtures.ids[1]  # a `hang` job: it runs until cancelled
    by_label = {
        "Query.job": [f'{{ job(id: "{NUL}") {{ __typename }} }}'],
        "Query.jobs": [
            f"{{ jobs(after: {json.dumps(cursor)}) {{ edges {{ cursor }} }} }}"
            for cursor in fixtures.cursors
        ],
        "Mutation.submitJob": [
            SUBMIT.format(argument)
            for argument in [
                "maxCostUsd: 1e13",
                "maxCostUsd: 1e308",
                "wait: 1e308",
                "deadlineSeconds: 2147483647",
                f'metadata: {{k: "{NUL}"}}',
            ]
        ],
        "Mutation.cancelJob": [
            f'mutation {{ cancelJob(id: "{NUL}") {{ __typename }} }}',
            f'mutation {{ cancelJob(id: "{running}", reason: "{NUL}") {{ __typename }} }}',
        ],
    }
    return by_label.get(label, [])


def fuzz(url: str, key: str, fixtures: Fixtures, label: str, examples: int) -> Outcome:
    """On a worker thread: load the schema from the server, then fuzz one operation."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.graphql.from_url(
        url, config=fixtures.config(), headers=headers, timeout=30
    )
    root, name = label.split(".")
    operation = schema[root][name]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    outcome = Outcome()
    session = requests.Session()

    # Nothing fails inside: every problem is collected, so there is nothing to shrink.
    @hypothesis.settings(
        max_examples=examples,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def one(case: schemathesis.Case) -> None:
        exchange(case)

    def exchange(case: schemathesis.Case) -> None:
        document = str(case.body)
        try:
            response = case.call(base_url=url, session=session, headers=headers, timeout=20)
        except requests.RequestException as exc:
            outcome.add(f"no answer ({exc.__class__.__name__})", document, str(exc))
            return
        text = response.content.decode("utf-8", "replace")
        outcome.statuses[response.status_code] += 1
        outcome.with_data += '"data":{' in text
        for problem in problems_of(response.status_code, response.headers, text, document):
            outcome.add(problem, document, text[:800])
        if LOG:
            with open(LOG, "a") as log:
                print(
                    label,
                    response.status_code,
                    repr(document),
                    repr(text[:300]),
                    sep="\t",
                    file=log,
                )

    if SEED is not None:
        one = hypothesis.seed(SEED)(one)
    try:
        for document in seeds(fixtures, label):
            exchange(operation.Case(body=document, media_type="application/json"))
        one()
    finally:
        session.close()
    outcome.seconds = time.monotonic() - started
    return outcome


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS], indirect=True)
@pytest.mark.parametrize("label", list(OPERATIONS))
async def test_no_internal_errors(settings: Settings, backend: Backend, label: str) -> None:
    examples = max(1, round(OPERATIONS[label] * SCALE))
    # Generated submits start `hang` jobs too; enough worker slots keep `wait` answers prompt.
    # Generated documents select every field of every page: the cost limit would refuse most
    # of them before the resolvers this test is about ever ran.
    fuzzing = settings.model_copy(update={"worker_concurrency": 200, "max_query_cost": 10**9})
    async with serve(fuzzing) as server:
        api = await server.client("fuzzer")
        fixtures = await prepare(api)
        url = f"{server.http_url}/v1/graphql"
        async with asyncio.timeout(300):
            outcome = await asyncio.to_thread(fuzz, url, api.key, fixtures, label, examples)
        await api.aclose()
    print(
        f"{label}: {dict(outcome.statuses)}, {outcome.with_data} with data, {outcome.seconds:.1f}s"
    )
    if outcome.problems:
        pytest.fail(outcome.report(label), pytrace=False)
    assert sum(outcome.statuses.values()) == examples + len(seeds(fixtures, label))
    assert outcome.with_data > 0, "the fuzzer never got past validation"


def test_the_checks_catch_internal_errors() -> None:
    """The checks themselves: a masked error, a leak, a 5xx and a missing request id all count."""
    ok = {"x-request-id": ["r1"]}
    masked = {"message": MASKED, "path": ["jobs"], "extensions": {"code": "INTERNAL"}}
    leak = {"message": "(sqlite3.IntegrityError) UNIQUE constraint failed", "path": ["job"]}
    assert problems_of(200, ok, '{"data": {"viewer": {"id": "1"}}}', "{ viewer { id } }") == []
    bad_cursor = {"message": "Invalid `after` cursor.", "path": ["jobs"]}
    bad_cursor["extensions"] = {"code": "BAD_USER_INPUT"}
    assert problems_of(200, ok, json.dumps({"errors": [bad_cursor]}), "{}") == []
    quoted = {"message": "Value 'KeyError' does not exist in 'V1JobStatus' enum."}
    assert (
        problems_of(200, ok, json.dumps({"errors": [quoted]}), "{ jobs(status: KeyError) }") == []
    )
    assert problems_of(200, ok, json.dumps({"errors": [masked]}), "{}") == [
        "an internal error (masked) at ['jobs']"
    ]
    assert len(problems_of(200, ok, json.dumps({"errors": [leak]}), "{}")) == 2
    costly = {
        "message": "The query's cost (7103) is above the limit (5000): ...",
        "extensions": {"code": "QUERY_TOO_COSTLY", "cost": 7103, "maxCost": 5000},
    }
    assert problems_of(200, ok, json.dumps({"errors": [costly]}), "{}") == []
    assert problems_of(502, {}, "Bad Gateway", "{}") == [
        "HTTP 502",
        "no X-Request-ID header (HTTP 502)",
        "a body that is not JSON (HTTP 502, leaks [])",
    ]
