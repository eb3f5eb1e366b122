"""Session factories on SQLite: writers take the write lock at BEGIN, readers never do."""

from __future__ import annotations

from sqlalchemy import text

from jobql.repositories.database import (
    create_engine,
    create_read_session_factory,
    create_session_factory,
)
from tests.backends import Databases


async def test_reads_hold_no_transaction_and_writes_take_the_lock(databases: Databases) -> None:
    engine = create_engine(databases.sqlite())
    try:
        async with create_read_session_factory(engine)() as session:
            assert (await session.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 0
            raw = await (await session.connection()).get_raw_connection()
            # Autocommit: the statement ran on its own, nothing holds SQLite's write lock.
            assert raw.driver_connection is not None
            assert not raw.driver_connection.in_transaction
        async with create_session_factory(engine)() as session, session.begin():
            await session.execute(text("SELECT count(*) FROM jobs"))
            raw = await (await session.connection()).get_raw_connection()
            assert raw.driver_connection is not None
            assert raw.driver_connection.in_transaction  # BEGIN IMMEDIATE: the write lock
    finally:
        await engine.dispose()
