"""What a caller can learn about itself: tier, limits, today's usage, active jobs, usage
reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.errors import InvalidInput, ServiceUnavailable
from jobql.models.base import utcnow
from jobql.repositories.principals import PrincipalRepository
from jobql.repositories.usage import UsageRepository
from jobql.services.auth import Caller
from jobql.services.limits import Limits, effective_limits
from jobql.services.usage_report import UsageGroup, UsageReport, UsageReportService
from jobql.settings import Settings


@dataclass(frozen=True)
class ViewerUsage:
    day: str
    jobs: int
    input_tokens: int
    output_tokens: int
    cost_micros: int
    reserved_micros: int
    active_jobs: int
    limits: Limits

    @property
    def remaining_micros(self) -> int:
        return max(0, self.limits.daily_cost_cap_micros - self.cost_micros - self.reserved_micros)


class ViewerService:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.reports = UsageReportService(sessions)

    async def usage_today(self, caller: Caller) -> ViewerUsage:
        today = utcnow().date()
        async with self.sessions() as session:
            usage = await UsageRepository(session).day_totals(caller.id, today)
            load = await PrincipalRepository(session).load(caller.id, today)
        return ViewerUsage(
            day=today.isoformat(),
            jobs=usage.jobs,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_micros=usage.cost_micros,
            reserved_micros=load.reserved_micros,
            active_jobs=load.active,
            limits=effective_limits(self.settings.limits_for(caller.tier), caller.overrides),
        )

    async def usage_report(
        self, caller: Caller, first: date, last: date, group_by: Iterable[UsageGroup]
    ) -> UsageReport | InvalidInput | ServiceUnavailable:
        """The caller's usage from day ``first`` to day ``last`` (UTC, both included)."""
        return await self.reports.report(caller.id, first, last, group_by)
