"""SQL for principals and their API keys."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobql.models import ApiKey, Principal
from jobql.models.base import utcnow


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

    async def lock(self, principal_id: str) -> None:
        """Serialise one caller's submits (limits are checked and reserved under it).
        PostgreSQL locks the row; SQLite transactions are serial already."""
        await self.session.execute(
            select(Principal.id).where(Principal.id == principal_id).with_for_update()
        )

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
