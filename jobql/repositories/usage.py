"""SQL for usage: one upsert per finished job into its caller's day, task and model, and
the sums that reports and the viewer read."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from jobql.models import ApiKey, UsageDay
from jobql.states import JobStatus, Usage

_USAGE = UsageDay.metadata.tables[UsageDay.__tablename__]
_U = _USAGE.c
_KEY = ("principal_id", "day", "api_version", "task", "provider", "model_name", "model_version")
_COUNTS = ("succeeded", "failed", "cancelled", "input_tokens", "output_tokens", "cost_micros")
_STATUS_COLUMN = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


class UsageGroup(StrEnum):
    """What a report's rows are grouped by."""

    DAY = "day"
    TASK = "task"  # the task and the API version it belongs to
    MODEL = "model"  # provider, model name and model version


@dataclass(frozen=True)
class JobContract:
    """What a finished job is accounted under: its task and model, as pinned at submit."""

    api_version: str
    task: str
    provider: str
    model_name: str
    model_version: str


@dataclass(frozen=True)
class UsageTotals:
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0

    @property
    def jobs(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.cancelled + other.cancelled,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_micros + other.cost_micros,
        )


@dataclass(frozen=True)
class TaskKey:
    api_version: str
    name: str


@dataclass(frozen=True)
class ModelKey:
    provider: str
    name: str
    version: str


@dataclass(frozen=True)
class UsageRow:
    """The totals of one group; the keys it is not grouped by are None."""

    totals: UsageTotals
    day: date | None = None
    task: TaskKey | None = None
    model: ModelKey | None = None


_SUMS = [func.coalesce(func.sum(_U[name]), 0).label(name) for name in _COUNTS]
_GROUP_COLUMNS: dict[UsageGroup, tuple[str, ...]] = {
    UsageGroup.DAY: ("day",),
    UsageGroup.TASK: ("api_version", "task"),
    UsageGroup.MODEL: ("provider", "model_name", "model_version"),
}
_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO UPDATE adding the new values: built once per dialect, the
    same statement for every job (this runs for every finished job)."""
    if dialect not in _UPSERTS:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(_USAGE)
        _UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=[_U[name] for name in _KEY],
            set_={name: _U[name] + stmt.excluded[name] for name in _COUNTS},
        )
    return _UPSERTS[dialect]


def _totals(row: Any) -> UsageTotals:
    return UsageTotals(*(int(getattr(row, name)) for name in _COUNTS))


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        principal_id: str,
        day: date,
        contract: JobContract,
        status: JobStatus,
        usage: Usage,
    ) -> None:
        """Add one finished job to its caller's day, task and model (one atomic upsert)."""
        values = {
            "principal_id": principal_id,
            "day": day,
            "api_version": contract.api_version,
            "task": contract.task,
            "provider": contract.provider,
            "model_name": contract.model_name,
            "model_version": contract.model_version,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cost_micros": usage.cost_micros,
        }
        values[_STATUS_COLUMN[status]] = 1
        # A Core statement on the table: through the ORM entity it takes the bulk-insert
        # path, which costs more than the statement.
        connection = await self.session.connection()
        await connection.execute(_upsert(connection.dialect.name), values)

    async def day_totals(self, principal_id: str, day: date) -> UsageTotals:
        """Everything the caller's jobs that finished on ``day`` used."""
        stmt = select(*_SUMS).where(_U.principal_id == principal_id, _U.day == day)
        return _totals((await self.session.execute(stmt)).one())

    async def rows(
        self, principal_id: str, first: date, last: date, group_by: Collection[UsageGroup]
    ) -> list[UsageRow]:
        """The caller's usage from day ``first`` to day ``last`` (both included), one row
        per group that has any, ordered by day, task and model."""
        names = [
            name for group in UsageGroup if group in group_by for name in _GROUP_COLUMNS[group]
        ]
        columns: list[ColumnElement[Any]] = [_U[name] for name in names]
        stmt = (
            select(*columns, *_SUMS, func.count().label("n"))
            .where(_U.principal_id == principal_id, _U.day >= first, _U.day <= last)
            .group_by(*columns)
            .order_by(*columns)
        )
        rows = []
        for row in await self.session.execute(stmt):
            if row.n == 0:
                continue  # no grouping and nothing in the window: no row
            rows.append(
                UsageRow(
                    totals=_totals(row),
                    day=row.day if UsageGroup.DAY in group_by else None,
                    task=TaskKey(row.api_version, row.task)
                    if UsageGroup.TASK in group_by
                    else None,
                    model=ModelKey(row.provider, row.model_name, row.model_version)
                    if UsageGroup.MODEL in group_by
                    else None,
                )
            )
        return rows

    async def principals_with_key_prefix(self, prefix: str) -> list[str]:
        """The callers owning a key with this prefix (as `jobql keys list` shows it)."""
        stmt = select(ApiKey.principal_id).where(ApiKey.prefix == prefix).distinct()
        return list(await self.session.scalars(stmt))
