"""What a caller can learn about itself: tier, limits, today's usage, active jobs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.models.base import utcnow
from jobql.repositories.principals import PrincipalRepository
from jobql.repositories.usage import UsageRepository
from jobql.services.auth import Caller
from jobql.services.limits import Limits, effective_limits
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

    async def usage_today(self, caller: Caller) -> ViewerUsage:
        today = utcnow().date()
        async with self.sessions() as session:
            usage = await UsageRepository(session).get(caller.id, today)
            load = await PrincipalRepository(session).load(caller.id, today)
        return ViewerUsage(
            day=today.isoformat(),
            jobs=usage.jobs if usage else 0,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_micros=usage.cost_micros if usage else 0,
            reserved_micros=load.reserved_micros,
            active_jobs=load.active,
            limits=effective_limits(self.settings.limits_for(caller.tier), caller.overrides),
        )
