"""Engine and session factory for SQLite (embedded) and PostgreSQL (scaled)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry


def create_engine(url: str, *, hide_parameters: bool = True, **kwargs: Any) -> AsyncEngine:
    """``hide_parameters``: SQLAlchemy's errors (and their log lines) leave out a statement's
    parameters, which hold prompts and idempotency keys; off only when content is logged."""
    kwargs["hide_parameters"] = hide_parameters
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer at a time anyway, and waiting for it in
        # the pool's asyncio queue is first-come first-served, where SQLite's own busy
        # handler polls with sleeps of up to 100 ms and lets some callers wait seconds.
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            **kwargs,
        )
        _tune_sqlite(engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, **kwargs)


def _tune_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SERIALIZABLE semantics;
    # take it over (SQLAlchemy's documented recipe) and start every transaction with
    # BEGIN IMMEDIATE, so other processes on the same file (`jobql keys create` next to a
    # running server) queue on the busy timeout instead of failing with "database is
    # locked" when a read transaction tries to upgrade.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Takes effect only on a new database (before its first table): pruning then hands
        # freed pages back with PRAGMA incremental_vacuum. An existing database keeps its
        # mode until a one-off VACUUM (docs/deploy.md).
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            return  # each statement is its own (implicit, deferred) transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY = "jobql_read_only"


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for single-statement reads. On SQLite they skip BEGIN IMMEDIATE (a round
    trip, and the write lock) and run each statement on its own; elsewhere they are the
    same as any session."""
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
