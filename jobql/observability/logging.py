"""Structured logs: one JSON object per line, with the request id and job id in scope.

`configure_logging()` installs one handler on the root logger. Each line carries `ts` (ISO 8601,
UTC), `level`, `logger`, `message`, then `request_id` and `job_id` when known, then the `extra`
fields of the log call that are JSON-serialisable, then `exc` (`type` and `traceback`) when the
call had `exc_info`. Example::

    log.info("job claimed", extra={"attempt": 2})
    {"ts": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "jobql.worker",
     "message": "job claimed", "request_id": "9f...", "job_id": "01H...", "attempt": 2}

Request and job ids come from context variables, which every asyncio task copies when it is
created: bind them with `bind_request_id(...)` / `bind_job_id(...)` around the work (in the
ASGI middleware, in the task that runs one job) and every log call inside, including in tasks
started from there, carries them, while concurrently running tasks keep their own. An explicit
`extra={"job_id": ...}` on a call wins over the context.

Content never goes to the logs. Prompts, job inputs, model output and provider response bodies
are the users' data: callers must not put them in log messages or `extra` fields. As a second
line of defence, `extra` keys in `CONTENT_KEYS` (at any depth of a dict or list value) are
dropped unless `configure_logging(include_content=True)` was called, which is meant for local
debugging only. Without it, also:

- database errors (SQLAlchemy's, asyncpg's, sqlite3's) are logged by type and SQLSTATE only,
  in tracebacks and in message arguments: their text quotes SQL parameters and the values a
  statement choked on (an idempotency key, a prompt in a JSON column);
- uvicorn's access and connection lines carry the path without its query string (a GET
  query carries the whole GraphQL document and its variables), and WebSocket frames are
  not logged at DEBUG;
- graphql-core's errors are logged by type only (their text quotes the document), and
  asyncio's "Task exception was never retrieved" keeps its first line only.

Whatever the setting, failures a client causes below the application (invalid UTF-8 in a
WebSocket text frame) are logged by uvicorn at INFO without a traceback, not at ERROR.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

request_id_var: ContextVar[str | None] = ContextVar("jobql_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("jobql_job_id", default=None)

CONTENT_KEYS: frozenset[str] = frozenset({"prompt", "output", "input", "body", "text", "result"})
"""`extra` keys dropped (case-insensitively) unless content logging was opted into."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_CORE_KEYS = ("ts", "level", "logger", "message", "request_id", "job_id", "exc")

# The handler installed by configure_logging, replaced when it is called again.
_installed: logging.Handler | None = None

# Exceptions from these packages quote what they choke on in their text: SQL parameters and
# values (the database drivers), the GraphQL document around an error (graphql-core).
QUOTING_MODULES = ("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite", "psycopg", "graphql")


def _quotes_data(exc: BaseException) -> bool:
    module = type(exc).__module__
    return any(module == m or module.startswith(m + ".") for m in QUOTING_MODULES)


def _type_name(exc_type: type[BaseException]) -> str:
    if exc_type.__module__ == "builtins":
        return exc_type.__qualname__
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def scrubbed_text(exc: BaseException) -> str:
    """``str(exc)`` for logs without content: a database (or GraphQL) error by its driver's
    type and SQLSTATE only."""
    if not _quotes_data(exc):
        return str(exc)
    inner = getattr(exc, "orig", None)
    driver = inner if isinstance(inner, BaseException) else exc
    code = getattr(driver, "sqlstate", None) or getattr(driver, "pgcode", None)
    detail = f"{type(driver).__name__}" + (f", SQLSTATE {code}" if code else "")
    return f"({detail}) [text hidden: it may quote data; JOBQL_LOG_CONTENT=true shows it]"


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_exception(exc: BaseException, *, include_content: bool) -> str:
    """A traceback like `traceback.format_exception`'s (causes and contexts included);
    without content, database errors' text is replaced by `scrubbed_text`."""
    if include_content:
        return "".join(traceback.format_exception(exc))
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for item, link in reversed(chain):
        if item.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(item.__traceback__))
        text = scrubbed_text(item)
        name = _type_name(type(item))
        parts.append(f"{name}: {text}\n" if text else f"{name}\n")
        if link:
            parts.append(link)
    return "".join(parts)


def _scrub_args(record: logging.LogRecord) -> logging.LogRecord:
    """The record, or a copy whose exception arguments are scrubbed (``%s`` of an exc).
    asyncio's "Task exception was never retrieved" writes the exception's repr into the
    message itself: only its first line is kept (the traceback follows, scrubbed)."""
    args = record.args
    if record.name == "asyncio" and record.exc_info and isinstance(record.msg, str):
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg = (record.msg % args if args else record.msg).split("\n", 1)[0]
        copy.args = None
        return copy
    if not isinstance(args, tuple) or not any(
        isinstance(a, BaseException) and _quotes_data(a) for a in args
    ):
        return record
    copy = logging.makeLogRecord(record.__dict__)
    copy.args = tuple(
        scrubbed_text(a) if isinstance(a, BaseException) and _quotes_data(a) else a for a in args
    )
    return copy


class PathOnlyFilter(logging.Filter):
    """Cuts the query string off the paths uvicorn logs (access lines, WebSocket
    connections): `GET /v1/graphql?query=...` can carry a whole prompt."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_path_with_query(a) for a in record.args):
            record.args = tuple(_path_only_of(a) for a in record.args)
        return True


def _is_path_with_query(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "?" in value


def _path_only_of(value: object) -> object:
    return value.partition("?")[0] if isinstance(value, str) and value.startswith("/") else value


class NoWebSocketFramesFilter(logging.Filter):
    """Drops the frames the websockets library logs at DEBUG (through uvicorn's logger):
    their text is the message a client sent or the data it was sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.DEBUG
            and isinstance(record.msg, str)
            and record.msg.startswith(("< ", "> "))
        )


# uvicorn's ERROR lines (with a traceback) for failures a client causes on purpose.
CLIENT_FAILURES = frozenset({"Invalid UTF-8 sequence received from client."})


class ClientFailuresAtInfoFilter(logging.Filter):
    """Logs uvicorn's errors for bad client input at INFO, one line: anyone can send them,
    and an ERROR with a traceback per request would flood the logs and page operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and record.msg in CLIENT_FAILURES:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


_path_only = PathOnlyFilter()
_no_frames = NoWebSocketFramesFilter()
_client_failures_at_info = ClientFailuresAtInfoFilter()


@contextlib.contextmanager
def bind_request_id(value: str | None) -> Iterator[None]:
    """Logs in this block (and in tasks started from it) carry `request_id=value`."""
    token = request_id_var.set(value)
    try:
        yield
    finally:
        request_id_var.reset(token)


@contextlib.contextmanager
def bind_job_id(value: str | None) -> Iterator[None]:
    """Logs in this block (and in tasks started from it) carry `job_id=value`."""
    token = job_id_var.set(value)
    try:
        yield
    finally:
        job_id_var.reset(token)


class _Unserialisable(Exception):
    pass


def _clean(value: Any, include_content: bool) -> Any:
    """`value` with content keys removed from nested dicts; raises if not JSON data."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unserialisable  # NaN and infinities are not JSON
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Unserialisable
            if include_content or k.lower() not in CONTENT_KEYS:
                out[k] = _clean(v, include_content)
        return out
    if isinstance(value, list | tuple):
        return [_clean(v, include_content) for v in value]
    raise _Unserialisable


def _context_value(record: logging.LogRecord, name: str, var: ContextVar[str | None]) -> Any:
    explicit = record.__dict__.get(name)
    return explicit if explicit is not None else var.get()


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def __init__(self, *, include_content: bool = False) -> None:
        super().__init__()
        self.include_content = include_content

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        payload: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": (record if self.include_content else _scrub_args(record)).getMessage(),
        }
        for name, var in (("request_id", request_id_var), ("job_id", job_id_var)):
            value = _context_value(record, name, var)
            if value is not None:
                with contextlib.suppress(_Unserialisable):
                    payload[name] = _clean(value, include_content=True)

        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key in _CORE_KEYS:
                continue
            if not self.include_content and key.lower() in CONTENT_KEYS:
                continue
            with contextlib.suppress(_Unserialisable):
                payload[key] = _clean(value, self.include_content)

        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, _ = record.exc_info
            assert exc is not None
            payload["exc"] = {
                "type": _type_name(exc_type),
                "traceback": format_exception(exc, include_content=self.include_content),
            }
        if record.stack_info:
            payload["stack"] = record.stack_info
        # ASCII-only: a U+2028 in a message must not split the line for any reader.
        return json.dumps(payload, allow_nan=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for local use; appends the request and job ids when known."""

    def __init__(self, *, include_content: bool = False) -> None:
        super().__init__(TEXT_FORMAT)
        self.include_content = include_content

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        _, exc, _ = ei
        if exc is None:
            return super().formatException(ei)
        return format_exception(exc, include_content=self.include_content).rstrip("\n")

    def format(self, record: logging.LogRecord) -> str:
        if not self.include_content:
            # A copy: another handler's formatter may have cached the full traceback on the
            # record (exc_text), and ours must not be cached for it either.
            record = logging.makeLogRecord({**_scrub_args(record).__dict__, "exc_text": None})
        line = super().format(record)
        ids = [
            f"{name}={value}"
            for name, var in (("request_id", request_id_var), ("job_id", job_id_var))
            if (value := _context_value(record, name, var)) is not None
        ]
        if not ids:
            return line
        first, newline, rest = line.partition("\n")  # keep ids on the message line
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


CHATTY_LOGGERS = ("alembic.runtime.plugins",)

CONTENT_ECHOING_LOGGERS = (
    "aiosqlite",
    "sqlalchemy.engine",
    "asyncpg",
    "websockets",
    "uvicorn.protocols",
    "broadcaster",
    "redis",
)


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    include_content: bool = False,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Install jobql's handler on the root logger and set the root level.

    Calling it again replaces the handler it installed before; other handlers on the root
    logger are left alone (so do not also call `logging.basicConfig`). `stream` defaults to
    stderr. Returns the handler, e.g. to remove it again.
    """
    global _installed
    if isinstance(level, str):
        levels = logging.getLevelNamesMapping()
        if level.upper() not in levels:
            raise ValueError(f"unknown log level {level!r}")
        level = levels[level.upper()]

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter(include_content=include_content)
        if json
        else TextFormatter(include_content=include_content)
    )
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(level)
    # These libraries' debug logs echo SQL parameters or wire frames, i.e. prompts and
    # outputs (SQLAlchemy logs statements with parameters at INFO): keep them at WARNING
    # unless content logging was asked for.
    for name in CONTENT_ECHOING_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if include_content else max(level, logging.WARNING)
        )
    # alembic lists every plugin it loads at INFO on each start; the migrations it runs
    # ("Running upgrade ...") stay visible.
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        for content_filter in (_path_only, _no_frames):
            if include_content:
                logger.removeFilter(content_filter)
            else:
                logger.addFilter(content_filter)  # no-op when it is there already
    logging.getLogger("uvicorn.error").addFilter(_client_failures_at_info)
    _installed = handler
    return handler
