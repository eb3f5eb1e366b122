"""What a caller can learn about itself: tier, today's usage, active jobs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.models.base import utcnow
from jobql.repositories.jobs import JobRepository
from jobql.repositories.usage import UsageRepository
from jobql.services.auth import Caller


@dataclass(frozen=True)
class ViewerUsage:
    day: str
    jobs: int
    input_tokens: int
    output_tokens: int
    cost_micros: int
    active_jobs: int


class ViewerService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def usage_today(self, caller: Caller) -> ViewerUsage:
        today = utcnow().date()
        async with self.sessions() as session:
            usage = await UsageRepository(session).get(caller.id, today)
            active = await JobRepository(session).count_active(caller.id)
        return ViewerUsage(
            day=today.isoformat(),
            jobs=usage.jobs if usage else 0,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_micros=usage.cost_micros if usage else 0,
            active_jobs=active,
        )
