"""Outage log lines name the error without quoting any data from it."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError

from jobql.worker.retry import describe


def test_a_database_error_is_told_by_type_and_sqlstate_only() -> None:
    driver = asyncpg.exceptions.CheckViolationError(
        "new row violates check constraint; Failing row contains (secret prompt text)"
    )
    wrapped = DBAPIError("INSERT INTO jobs ...", {"input": "secret prompt text"}, driver)
    told = describe(wrapped)
    assert told == "CheckViolationError (SQLSTATE 23514)"
    assert "secret" not in describe(driver)


def test_a_refused_connection_keeps_its_errno_and_address() -> None:
    told = describe(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"))
    assert told.startswith("ConnectionRefusedError: [Errno 111]")
    assert "5432" in told


def test_an_error_without_sqlstate_is_its_type() -> None:
    assert describe(RuntimeError("the row (secret)")) == "RuntimeError"
