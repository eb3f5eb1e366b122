"""Usage reports: a caller's finished jobs, tokens and cost over a window of UTC days,
grouped by day, task and model, with the grand total. Read from the usage rows the job
store adds to as jobs finish, so a report still holds after old job rows are pruned."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from jobql.errors import InvalidInput, ServiceUnavailable, Violation
from jobql.repositories.database import create_read_session_factory
from jobql.repositories.usage import (
    ModelKey,
    TaskKey,
    UsageGroup,
    UsageRepository,
    UsageRow,
    UsageTotals,
)
from jobql.services.unavailable import unavailable

__all__ = [
    "MAX_WINDOW_DAYS",
    "ModelKey",
    "TaskKey",
    "UsageGroup",
    "UsageReport",
    "UsageReportService",
    "UsageRow",
    "UsageTotals",
    "UsageWindow",
    "group_order",
    "parse_day",
    "usage_window",
]

# The longest window a report covers, in days (both ends included): a leap year.
MAX_WINDOW_DAYS = 366
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class UsageWindow:
    """UTC days from ``first`` to ``last``, both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def parse_day(field: str, text: str) -> date | InvalidInput:
    """A UTC day written YYYY-MM-DD, or why ``text`` is not one."""
    if _DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    message = f"`{field}` must be a day written YYYY-MM-DD."
    return InvalidInput(field=field, violations=(Violation(field, message),), message=message)


def usage_window(first: date, last: date) -> UsageWindow | InvalidInput:
    """The window from ``first`` to ``last`` (both included), or why it cannot be one."""
    if last < first:
        message = "`to` must not be before `from`."
    elif (last - first).days + 1 > MAX_WINDOW_DAYS:
        message = f"A window covers at most {MAX_WINDOW_DAYS} days (`from` and `to` included)."
    else:
        return UsageWindow(first, last)
    return InvalidInput(field="to", violations=(Violation("to", message),), message=message)


def group_order(groups: Iterable[UsageGroup]) -> tuple[UsageGroup, ...]:
    """The groups asked for, once each, in the order rows are sorted by: day, task, model."""
    wanted = set(groups)
    return tuple(group for group in UsageGroup if group in wanted)


@dataclass(frozen=True)
class UsageReport:
    window: UsageWindow
    group_by: tuple[UsageGroup, ...]
    rows: tuple[UsageRow, ...]  # one per group with any usage, by day, task and model
    total: UsageTotals  # the whole window


class UsageReportService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        bind = sessions.kw["bind"]
        assert isinstance(bind, AsyncEngine)
        # One statement per report: on SQLite it takes no write lock.
        self.reads = create_read_session_factory(bind)

    async def report(
        self, principal_id: str, first: date, last: date, group_by: Iterable[UsageGroup]
    ) -> UsageReport | InvalidInput | ServiceUnavailable:
        """The usage of ``principal_id`` (and nobody else) from day ``first`` to day
        ``last``, both included."""
        window = usage_window(first, last)
        if isinstance(window, InvalidInput):
            return window
        groups = group_order(group_by)
        try:
            async with self.reads() as session:
                rows = await UsageRepository(session).rows(
                    principal_id, window.first, window.last, groups
                )
        except Exception as exc:
            if (answer := unavailable(exc)) is None:
                raise
            return answer
        total = sum((row.totals for row in rows), UsageTotals())
        return UsageReport(window, groups, tuple(rows), total)

    async def principals_with_key_prefix(self, prefix: str) -> list[str]:
        """The callers owning a key with this prefix (as `jobql keys list` shows it)."""
        async with self.reads() as session:
            return await UsageRepository(session).principals_with_key_prefix(prefix)
