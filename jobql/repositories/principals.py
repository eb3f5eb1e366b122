"""SQL for principals and their API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import BindParameter, and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobql.models import ApiKey, Job, JobStatus, Principal, UsageDay
from jobql.models.base import utcnow


@dataclass(frozen=True)
class CallerLoad:
    active: int  # queued + running jobs
    reserved_micros: int  # held by those jobs
    spent_micros: int  # by jobs that finished today


# Built once: this runs on every submit, and building the expression costs more than the
# query itself (the compiled form is cached by SQLAlchemy either way).
_CALLER: BindParameter[str] = bindparam("principal_id")
_ACTIVE = and_(
    Job.principal_id == _CALLER,
    Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
)
_LOCK = select(Principal.id).where(Principal.id == _CALLER).with_for_update()
_LOAD = select(
    select(func.count()).where(_ACTIVE).scalar_subquery(),
    select(func.coalesce(func.sum(Job.reserved_micros), 0)).where(_ACTIVE).scalar_subquery(),
    select(func.coalesce(func.sum(UsageDay.cost_micros), 0))
    .where(UsageDay.principal_id == _CALLER, UsageDay.day == bindparam("day"))
    .scalar_subquery(),
)


class PrincipalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, principal: Principal, key: ApiKey) -> None:
        self.session.add_all([principal, key])
        await self.session.flush()

    async def by_key_hash(self, key_hash: str) -> Principal | None:
        stmt = (
            select(Principal)
            .join(ApiKey, ApiKey.principal_id == Principal.id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def get(self, principal_id: str) -> Principal | None:
        return await self.session.get(Principal, principal_id)

    async def count_keys(self) -> int:
        return int((await self.session.execute(select(func.count(ApiKey.id)))).scalar_one())

    async def list_keys(self) -> list[tuple[ApiKey, Principal]]:
        stmt = (
            select(ApiKey, Principal)
            .join(Principal, ApiKey.principal_id == Principal.id)
            .order_by(ApiKey.created_at)
        )
        return [(row.ApiKey, row.Principal) for row in await self.session.execute(stmt)]

    async def lock_and_load(self, principal_id: str, day: date) -> CallerLoad:
        """Lock the caller's row, then read what its limits are checked against.

        The lock is a statement of its own: under READ COMMITTED, a statement that waited
        for a row lock still reads everything else from the snapshot it started with, and
        would miss the jobs the previous lock holder just committed. SQLite needs no lock
        (its transactions are serial already), so there it is one statement.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(_LOCK, {"principal_id": principal_id})
        return await self.load(principal_id, day)

    async def load(self, principal_id: str, day: date) -> CallerLoad:
        """The caller's active jobs, their reservations and the day's spending."""
        params = {"principal_id": principal_id, "day": day}
        count, reserved, spent = (await self.session.execute(_LOAD, params)).one()
        return CallerLoad(active=int(count), reserved_micros=int(reserved), spent_micros=int(spent))

    async def set_limits(self, key_prefix: str, values: dict[str, int | None]) -> int:
        """Update the limit columns of the principal owning the key with this prefix."""
        owner = select(ApiKey.principal_id).where(ApiKey.prefix == key_prefix)
        stmt = (
            update(Principal)
            .where(Principal.id.in_(owner))
            .values(**values)
            .returning(Principal.id)
            .execution_options(synchronize_session=False)
        )
        return len(list(await self.session.scalars(stmt)))

    async def revoke(self, key_prefix: str) -> int:
        stmt = (
            update(ApiKey)
            .where(ApiKey.prefix == key_prefix, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKey.id)
        )
        return len(list(await self.session.scalars(stmt)))
