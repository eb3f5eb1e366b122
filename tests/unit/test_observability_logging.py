"""JSON logs: parseable lines, ids from context vars per task, content redaction, exceptions."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from jobql.observability import logging as obs_logging
from jobql.observability.logging import (
    CONTENT_KEYS,
    JsonFormatter,
    TextFormatter,
    bind_job_id,
    bind_request_id,
    configure_logging,
    job_id_var,
    request_id_var,
)
from tests.log_capture import all_logs


@pytest.fixture
def restore_root_logger() -> Iterator[logging.Logger]:
    """Whatever configure_logging does to the root logger is undone after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    installed = obs_logging._installed
    try:
        yield root
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        obs_logging._installed = installed


class Capture:
    """A private logger whose records are formatted into a buffer, one line each."""

    def __init__(self, name: str, formatter: logging.Formatter) -> None:
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(formatter)
        self.logger = logging.getLogger(name)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = True
        self.logger.setLevel(logging.NOTSET)


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[Capture]:
    c = Capture(f"test.observability.{request.node.name}", JsonFormatter())
    yield c
    c.close()


@pytest.fixture
def capture_with_content(request: pytest.FixtureRequest) -> Iterator[Capture]:
    c = Capture(
        f"test.observability.content.{request.node.name}", JsonFormatter(include_content=True)
    )
    yield c
    c.close()


# -- the line ------------------------------------------------------------------------------


def test_each_record_is_one_line_of_json_with_the_core_fields(capture: Capture) -> None:
    capture.logger.info("job %s claimed", "j1")
    capture.logger.warning("multi\nline")
    first, second = capture.lines()

    assert first["level"] == "INFO"
    assert first["logger"] == capture.logger.name
    assert first["message"] == "job j1 claimed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "request_id" not in first
    assert "job_id" not in first
    assert "exc" not in first
    assert list(first)[:4] == ["ts", "level", "logger", "message"]
    assert second["message"] == "multi\nline"
    assert second["level"] == "WARNING"


def test_serialisable_extras_are_kept_and_others_dropped(capture: Capture) -> None:
    capture.logger.info(
        "claimed",
        extra={
            "attempt": 2,
            "ratio": 0.5,
            "ok": True,
            "none": None,
            "tags": ["a", "b"],
            "nested": {"a": {"b": [1, 2]}},
            "obj": object(),
            "nan": float("nan"),
            "bad_keys": {1: "x"},
        },
    )
    (line,) = capture.lines()
    assert line["attempt"] == 2
    assert line["ratio"] == 0.5
    assert line["ok"] is True
    assert line["none"] is None
    assert line["tags"] == ["a", "b"]
    assert line["nested"] == {"a": {"b": [1, 2]}}
    for dropped in ("obj", "nan", "bad_keys"):
        assert dropped not in line


def test_extras_cannot_overwrite_the_core_fields(capture: Capture) -> None:
    capture.logger.info("real", extra={"level": "FAKE", "ts": "x", "logger": "y", "exc": "z"})
    (line,) = capture.lines()
    assert line["level"] == "INFO"
    assert line["ts"] != "x"
    assert line["logger"] == capture.logger.name
    assert "exc" not in line


def test_output_is_strict_json_even_for_unusual_text(capture: Capture) -> None:
    capture.logger.info('quotes " and \\ and unicode \u00e9 \u2603 \u2028 and control \x00')
    raw = capture.buffer.getvalue()
    assert len(raw.splitlines()) == 1  # str.splitlines also splits on U+2028
    assert json.loads(raw)["message"] == (
        'quotes " and \\ and unicode \u00e9 \u2603 \u2028 and control \x00'
    )


# -- request and job ids -------------------------------------------------------------------


def test_ids_come_from_the_context_and_are_reset_after_the_block(capture: Capture) -> None:
    with bind_request_id("req-1"):
        capture.logger.info("in request")
        with bind_job_id("job-1"):
            capture.logger.info("in job")
        capture.logger.info("job done")
    capture.logger.info("outside")

    in_request, in_job, job_done, outside = capture.lines()
    assert in_request["request_id"] == "req-1"
    assert "job_id" not in in_request
    assert (in_job["request_id"], in_job["job_id"]) == ("req-1", "job-1")
    assert "job_id" not in job_done
    assert "request_id" not in outside
    assert request_id_var.get() is None
    assert job_id_var.get() is None


def test_bindings_are_reset_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), bind_request_id("req-x"), bind_job_id("job-x"):
        raise RuntimeError
    assert request_id_var.get() is None
    assert job_id_var.get() is None


def test_an_explicit_extra_job_id_wins_over_the_context(capture: Capture) -> None:
    with bind_job_id("from-context"):
        capture.logger.info("rescued", extra={"job_id": "from-extra"})
    capture.logger.info("worker", extra={"job_id": "only-extra"})
    first, second = capture.lines()
    assert first["job_id"] == "from-extra"
    assert second["job_id"] == "only-extra"


async def test_ids_do_not_leak_between_concurrent_tasks(capture: Capture) -> None:
    both_bound = asyncio.Barrier(3)

    async def handle(request_id: str, job_id: str) -> None:
        with bind_request_id(request_id), bind_job_id(job_id):
            await both_bound.wait()  # every task has bound its ids before anyone logs
            for i in range(3):
                capture.logger.info("step", extra={"who": request_id, "i": i})
                await asyncio.sleep(0)

    async def unbound() -> None:
        await both_bound.wait()
        for _ in range(3):
            capture.logger.info("step", extra={"who": None})
            await asyncio.sleep(0)

    await asyncio.gather(handle("req-a", "job-a"), handle("req-b", "job-b"), unbound())

    lines = capture.lines()
    assert len(lines) == 9
    whos = [line["who"] for line in lines]
    assert len(set(whos[:3])) > 1  # the tasks really interleaved
    for line in lines:
        if line["who"] is None:
            assert "request_id" not in line
            assert "job_id" not in line
        else:
            assert line["request_id"] == line["who"]
            assert line["job_id"] == line["who"].replace("req", "job")
    assert request_id_var.get() is None


async def test_tasks_started_inside_a_binding_inherit_it(capture: Capture) -> None:
    async def child() -> None:
        capture.logger.info("child")

    with bind_request_id("req-parent"):
        task = asyncio.create_task(child())
    await task
    (line,) = capture.lines()
    assert line["request_id"] == "req-parent"


# -- redaction -----------------------------------------------------------------------------


def test_content_keys_are_the_documented_deny_list() -> None:
    assert {"prompt", "output", "input", "body", "text", "result"} == CONTENT_KEYS


def test_content_extras_are_dropped_by_default(capture: Capture) -> None:
    extra: dict[str, Any] = {key: f"secret {key}" for key in CONTENT_KEYS}
    extra |= {
        "Prompt": "secret Prompt",
        "attempt": 1,
        "provider": {"name": "simulated", "body": "secret body", "items": [{"text": "secret"}]},
    }
    capture.logger.info("finished", extra=extra)
    raw = capture.buffer.getvalue()
    assert "secret" not in raw
    (line,) = capture.lines()
    assert line["attempt"] == 1
    assert line["provider"] == {"name": "simulated", "items": [{}]}


def test_content_extras_are_kept_with_include_content(capture_with_content: Capture) -> None:
    extra: dict[str, Any] = {key: f"kept {key}" for key in CONTENT_KEYS}
    extra |= {"provider": {"body": "kept body"}}
    capture_with_content.logger.info("finished", extra=extra)
    (line,) = capture_with_content.lines()
    for key in CONTENT_KEYS:
        assert line[key] == f"kept {key}"
    assert line["provider"] == {"body": "kept body"}


# -- exceptions ----------------------------------------------------------------------------


def test_exceptions_are_serialised_under_exc(capture: Capture) -> None:
    try:
        raise ValueError("broken thing")
    except ValueError:
        capture.logger.exception("job failed unexpectedly", extra={"job_id": "j9"})
    (line,) = capture.lines()
    assert line["level"] == "ERROR"
    assert line["job_id"] == "j9"
    assert line["exc"]["type"] == "ValueError"
    assert line["exc"]["traceback"].startswith("Traceback (most recent call last):")
    assert "ValueError: broken thing" in line["exc"]["traceback"]
    assert "test_exceptions_are_serialised_under_exc" in line["exc"]["traceback"]


def test_exception_type_is_qualified_outside_builtins(capture: Capture) -> None:
    capture.logger.error("bus", exc_info=asyncio.InvalidStateError("x"))
    (line,) = capture.lines()
    assert line["exc"]["type"] == "asyncio.exceptions.InvalidStateError"


def test_exc_info_without_an_active_exception_adds_nothing(capture: Capture) -> None:
    capture.logger.info("no error here", exc_info=True)
    (line,) = capture.lines()
    assert "exc" not in line


# -- configure_logging ---------------------------------------------------------------------


def test_configure_logging_installs_one_json_handler_on_root(
    restore_root_logger: logging.Logger,
) -> None:
    before = len(restore_root_logger.handlers)
    stream = io.StringIO()
    handler = configure_logging("debug", stream=stream)
    assert restore_root_logger.level == logging.DEBUG
    assert handler in restore_root_logger.handlers
    assert isinstance(handler.formatter, JsonFormatter)

    # Calling it again replaces its handler rather than adding a second one.
    stream2 = io.StringIO()
    handler2 = configure_logging("INFO", stream=stream2)
    assert handler not in restore_root_logger.handlers
    assert len(restore_root_logger.handlers) == before + 1

    with bind_request_id("req-cfg"):
        logging.getLogger("jobql.test").info("hello", extra={"prompt": "secret"})
    logging.getLogger("jobql.test").debug("below the level")
    assert stream.getvalue() == ""
    (line,) = [json.loads(raw) for raw in stream2.getvalue().splitlines()]
    assert line["message"] == "hello"
    assert line["request_id"] == "req-cfg"
    assert "prompt" not in line
    assert handler2.formatter is not None


def test_configure_logging_include_content(restore_root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(stream=stream, include_content=True)
    logging.getLogger("jobql.test").info("hello", extra={"prompt": "debugging"})
    assert json.loads(stream.getvalue())["prompt"] == "debugging"


def test_configure_logging_text_mode(restore_root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", json=False, stream=stream)
    assert isinstance(handler.formatter, TextFormatter)
    with bind_request_id("req-t"), bind_job_id("job-t"):
        logging.getLogger("jobql.test").info("plain", extra={"prompt": "secret"})
    logging.getLogger("jobql.test").info("no ids")
    with_ids, without = stream.getvalue().splitlines()
    assert with_ids.endswith("INFO jobql.test plain [request_id=req-t job_id=job-t]")
    assert without.endswith("INFO jobql.test no ids")
    assert "secret" not in stream.getvalue()


def test_configure_logging_rejects_an_unknown_level(restore_root_logger: logging.Logger) -> None:
    handlers = restore_root_logger.handlers[:]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD")
    assert restore_root_logger.handlers == handlers


def test_the_fixture_restored_the_root_logger() -> None:
    # Runs after the configure_logging tests in file order: nothing of theirs is left.
    assert not any(
        isinstance(h.formatter, JsonFormatter | TextFormatter) for h in logging.getLogger().handlers
    )


def test_alembic_plugin_chatter_is_held_back_but_migrations_show(
    restore_root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.x")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade a -> b")
    assert [json.loads(raw)["message"] for raw in stream.getvalue().splitlines()] == [
        "Running upgrade a -> b"
    ]


# -- content in exceptions, uvicorn's lines --------------------------------------------------

SECRET = "prompt-canary-5b1e"


async def _failed_insert(hide_parameters: bool) -> BaseException:
    """A real SQLAlchemy error from SQLite whose parameters and message hold SECRET."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("sqlite+aiosqlite://", hide_parameters=hide_parameters)
    try:
        async with engine.begin() as db:
            await db.execute(text("CREATE TABLE t (v TEXT CHECK (v NOT LIKE '%canary%'))"))
            await db.execute(text("INSERT INTO t VALUES (:v)"), {"v": SECRET})
    except DBAPIError as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("the insert did not fail")


async def test_database_errors_are_logged_by_type_without_their_text(capture: Capture) -> None:
    error = await _failed_insert(hide_parameters=False)
    assert SECRET in str(error)  # what SQLAlchemy renders: [parameters: ('prompt-...',)]
    try:
        raise RuntimeError("while saving the job") from error
    except RuntimeError:
        capture.logger.exception("job failed")
    capture.logger.warning("insert failed (%s)", error)
    text_ = capture.buffer.getvalue()
    assert SECRET not in text_
    error_line, warning_line = capture.lines()
    traceback_ = error_line["exc"]["traceback"]
    assert "sqlalchemy.exc.IntegrityError: (IntegrityError) [text hidden" in traceback_
    assert "RuntimeError: while saving the job" in traceback_
    assert "direct cause" in traceback_
    assert warning_line["message"].startswith("insert failed ((IntegrityError) [text hidden")


async def test_database_errors_keep_their_text_with_include_content(
    capture_with_content: Capture,
) -> None:
    error = await _failed_insert(hide_parameters=False)
    capture_with_content.logger.error("job failed", exc_info=error)
    assert SECRET in capture_with_content.lines()[0]["exc"]["traceback"]


async def test_engine_hides_parameters_by_default() -> None:
    from jobql.repositories.database import create_engine

    engine = create_engine("sqlite+aiosqlite://")
    assert engine.sync_engine.hide_parameters
    await engine.dispose()
    assert SECRET not in str(await _failed_insert(hide_parameters=True))


def test_graphql_errors_are_logged_without_the_document(capture: Capture) -> None:
    from graphql import GraphQLError, parse

    try:
        parse(f"{SECRET} {{")
    except GraphQLError as exc:
        capture.logger.error("parse failed", exc_info=exc)
    assert SECRET not in capture.buffer.getvalue()
    assert "GraphQLSyntaxError" in capture.lines()[0]["exc"]["traceback"]


def test_text_format_scrubs_too_and_ignores_a_cached_traceback() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(TextFormatter())
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    error = asyncio.run(_failed_insert(hide_parameters=False))
    record.exc_info = (type(error), error, error.__traceback__)
    record.exc_text = f"another handler's full traceback with {SECRET}"
    handler.emit(record)
    assert SECRET not in buffer.getvalue()
    assert "IntegrityError" in buffer.getvalue()


def _uvicorn_record(name: str, msg: str, args: tuple[object, ...]) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_uvicorn_lines_carry_the_path_without_the_query_string() -> None:
    with all_logs() as logs:
        access = logging.getLogger("uvicorn.access")
        access.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/v1/graphql?q={SECRET}", "1.1", 400
        )
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/v1/graphql?x={SECRET}"
        )
    assert [line["message"] for line in logs.lines()] == [
        '127.0.0.1:5 - "GET /v1/graphql HTTP/1.1" 400',
        '127.0.0.1:5 - "WebSocket /v1/graphql" [accepted]',
    ]
    with all_logs(include_content=True) as logs:
        access.info('"%s %s"', "GET", f"/v1/graphql?query={SECRET}")
    assert SECRET in logs.text


def test_websocket_frames_are_not_logged() -> None:
    with all_logs() as logs:
        logging.getLogger("uvicorn.error").debug("< %s", f"TEXT '{SECRET}' [20 bytes]")
        logging.getLogger("uvicorn.error").debug("= connection is %s", "OPEN")
    assert SECRET not in logs.text
    assert "connection is OPEN" in logs.text


def test_a_client_sending_invalid_utf8_is_logged_at_info_without_a_traceback() -> None:
    with all_logs() as logs:
        try:
            b"\xff".decode()
        except UnicodeDecodeError:
            logging.getLogger("uvicorn.error").exception(
                "Invalid UTF-8 sequence received from client."
            )
    (line,) = logs.lines()
    assert line["level"] == "INFO"
    assert "exc" not in line


def test_asyncio_task_reprs_keep_their_first_line_only(capture: Capture) -> None:
    record = logging.LogRecord(
        "asyncio",
        logging.ERROR,
        __file__,
        1,
        "Task exception was never retrieved\nfuture: <Task exception=Error(%r)>",
        (SECRET,),
        (ValueError, ValueError("x"), None),
    )
    capture.handler.handle(record)
    (line,) = capture.lines()
    assert line["message"] == "Task exception was never retrieved"
