"""Outages, told apart from bugs: a database or an event bus that cannot be reached right now.

An outage is retryable: the client gets ServiceUnavailable with Retry-After, a job's runner
retries within its lease (or hands the job back), a background loop logs it once and tries
again. Anything else is a bug and stays INTERNAL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# Seconds a client is told to wait before it retries after an outage.
RETRY_AFTER_SECONDS = 2

_ALWAYS = (
    OSError,  # refused, reset, unreachable (ConnectionError is one)
    TimeoutError,
    PoolTimeoutError,  # every pooled connection is stuck in a dead server
    RedisConnectionError,
    RedisTimeoutError,
    asyncpg.PostgresConnectionError,  # connection failed or dropped mid-statement
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, terminated
    asyncpg.exceptions.TooManyConnectionsError,
)
_SQLITE_BUSY = ("database is locked", "database is busy")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, DBAPIError) and isinstance(current.orig, BaseException):
            yield current.orig
        current = current.__cause__ or current.__context__


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a server could not be reached or dropped
    the connection, so the same operation may well work in a moment."""
    for error in _chain(exc):
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, _ALWAYS):
            return True
        if isinstance(error, asyncpg.InterfaceError) and "closed" in str(error):
            return True
        if isinstance(error, sqlite3.OperationalError) and str(error) in _SQLITE_BUSY:
            return True
    return False


class ServiceUnavailableError(Exception):
    """An outage, as raised to the edges: they answer ServiceUnavailable with Retry-After."""

    def __init__(self, what: str, retry_after_seconds: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(f"{what} is unavailable")
        self.what = what
        self.retry_after_seconds = retry_after_seconds
