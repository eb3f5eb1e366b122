"""SQL for principals and their API keys."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from sqlalchemy import BindParameter, String, bindparam, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobql.models import ApiKey, Job, JobStatus, Principal, UsageDay
from jobql.models.base import utcnow
from jobql.repositories.store import CallerLoad

# Built once: this runs on every submit, and building the expression costs more than the
# query itself (the compiled form is cached by SQLAlchemy either way).
_CALLER: BindParameter[str] = bindparam("principal_id")
# The statuses are written into the SQL, not bound: a planner can use the partial index
# ix_jobs_active_principal_id only for a predicate it can see is the index's own. With bound
# values, SQLite (and PostgreSQL's generic plans) read every job the caller ever had instead.
_IS_ACTIVE = Job.status.in_(
    [literal_column(f"'{JobStatus.QUEUED.value}'"), literal_column(f"'{JobStatus.RUNNING.value}'")]
)
_LOCK = select(Principal.id).where(Principal.id == _CALLER).with_for_update()
# One statement, one round trip: the active jobs and their reservations (one pass over the
# partial index), the day's spending and the job holding the idempotency key, if any.
_LOAD = select(
    func.count(),
    func.coalesce(func.sum(Job.reserved_micros), 0),
    select(func.coalesce(func.sum(UsageDay.cost_micros), 0))
    .where(UsageDay.principal_id == _CALLER, UsageDay.day == bindparam("day"))
    .scalar_subquery(),
    select(Job.id)
    .where(Job.principal_id == _CALLER, Job.idempotency_key == bindparam("key", type_=String))
    .correlate(None)
    .scalar_subquery(),
).where(Job.principal_id == _CALLER, _IS_ACTIVE)


class PrincipalRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, principal: Principal, key: ApiKey) -> None:
        self.session.add_all([principal, key])
        await self.session.flush()

    async def by_key_hash(self, key_hash: str) -> tuple[Principal, str] | None:
        """The principal owning the active key with this hash, and the key's id."""
        stmt = (
            select(Principal, ApiKey.id)
            .join(ApiKey, ApiKey.principal_id == Principal.id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
        row = (await self.session.execute(stmt)).one_or_none()
        return None if row is None else (row[0], row[1])

    async def inactive_among(self, key_ids: Collection[str]) -> set[str]:
        """Which of these keys are revoked (or gone)."""
        if not key_ids:
            return set()
        stmt = select(ApiKey.id).where(ApiKey.id.in_(list(key_ids)), ApiKey.revoked_at.is_(None))
        active = set(await self.session.scalars(stmt))
        return set(key_ids) - active

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

    async def lock_and_load(
        self, principal_id: str, day: date, idempotency_key: str | None = None
    ) -> CallerLoad:
        """Lock the caller's row, then read what its limits are checked against (and which
        job holds ``idempotency_key``).

        The lock is a statement of its own: under READ COMMITTED, a statement that waited
        for a row lock still reads everything else from the snapshot it started with, and
        would miss the jobs the previous lock holder just committed. SQLite needs no lock
        (its transactions are serial already), so there it is one statement.
        """
        connection = await self.session.connection()  # Core statements: skip the ORM layer
        if connection.dialect.name == "postgresql":
            await connection.execute(_LOCK, {"principal_id": principal_id})
        return await self.load(principal_id, day, idempotency_key)

    async def load(
        self, principal_id: str, day: date, idempotency_key: str | None = None
    ) -> CallerLoad:
        """The caller's active jobs, their reservations, the day's spending and the job
        holding ``idempotency_key``."""
        params = {"principal_id": principal_id, "day": day, "key": idempotency_key}
        connection = await self.session.connection()
        count, reserved, spent, keyed = (await connection.execute(_LOAD, params)).one()
        return CallerLoad(
            active=int(count),
            reserved_micros=int(reserved),
            spent_micros=int(spent),
            keyed_job_id=keyed,
        )

    async def set_limits(self, key_prefix: str, values: dict[str, int | None]) -> list[str]:
        """Update the limit columns of the principal owning the key with this prefix; the
        ids of the principals updated."""
        owner = select(ApiKey.principal_id).where(ApiKey.prefix == key_prefix)
        stmt = (
            update(Principal)
            .where(Principal.id.in_(owner))
            .values(**values)
            .returning(Principal.id)
            .execution_options(synchronize_session=False)
        )
        return list(await self.session.scalars(stmt))

    async def revoke(self, key_prefix: str) -> list[str]:
        """Revoke the active keys with this prefix; their ids."""
        stmt = (
            update(ApiKey)
            .where(ApiKey.prefix == key_prefix, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKey.id)
        )
        return list(await self.session.scalars(stmt))
