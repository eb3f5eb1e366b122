"""The job store contract runs on every implementation: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.repositories.database import (
    create_engine,
    create_read_session_factory,
    create_session_factory,
)
from jobql.repositories.jobs import SqlJobStore
from jobql.repositories.memory import MemoryJobStore
from jobql.repositories.store import JobStore
from jobql.services.auth import KeyService
from tests.backends import Databases

NewCaller = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Backing:
    store: JobStore
    sessions: async_sessionmaker[AsyncSession] | None  # None: the store needs no principals


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backing(request: pytest.FixtureRequest, databases: Databases) -> AsyncIterator[Backing]:
    kind: str = request.param
    if kind == "memory":
        yield Backing(MemoryJobStore(), None)
        return
    # A fresh database per test; PostgreSQL skips when missing, and fails under CI=true.
    urls = iter([databases.sqlite()]) if kind == "sqlite" else databases.postgres()
    url = next(urls)
    engine = create_engine(url)
    try:
        sessions = create_session_factory(engine)
        yield Backing(SqlJobStore(sessions, create_read_session_factory(engine)), sessions)
    finally:
        await engine.dispose()
        for _ in urls:  # drops the PostgreSQL database
            pass


@pytest.fixture
def store(backing: Backing) -> JobStore:
    return backing.store


@pytest.fixture
def new_caller(backing: Backing) -> NewCaller:
    """Makes a caller id the store accepts (SQL stores need the principal to exist)."""

    async def make() -> str:
        if backing.sessions is None:
            return str(uuid.uuid4())
        caller, _ = await KeyService(backing.sessions).create("contract")
        return caller.id

    return make
