"""Outages are told apart from bugs by what raised them, however deeply wrapped."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from jobql.outages import is_outage


def wrapped(orig: BaseException, *, invalidated: bool = False) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)


def raised_from(cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("while writing events") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        PoolTimeoutError("QueuePool limit reached"),
        RedisConnectionError("Connection closed by server."),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        wrapped(Exception("server closed the connection"), invalidated=True),
        OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused")),
        OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked")),
        raised_from(asyncpg.exceptions.AdminShutdownError("terminating connection")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unreachable_servers_are_outages(error: BaseException) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bug"),
        KeyError("job"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: jobs")),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.exceptions.UndefinedTableError('relation "jobs" does not exist'),
        raised_from(ValueError("bug")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_are_not_outages(error: BaseException) -> None:
    assert not is_outage(error)
