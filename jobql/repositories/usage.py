"""SQL for per-caller daily usage."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from jobql.models import UsageDay


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        principal_id: str,
        day: date,
        *,
        input_tokens: int,
        output_tokens: int,
        cost_micros: int,
    ) -> None:
        """Add one finished job's usage to the caller's day (an atomic upsert)."""
        insert = (
            postgresql.insert
            if self.session.get_bind().dialect.name == "postgresql"
            else sqlite.insert
        )
        # A Core insert on the table: through the ORM entity it takes the bulk-insert path,
        # which costs more than the statement (this runs for every finished job).
        table = UsageDay.metadata.tables[UsageDay.__tablename__]
        stmt = insert(table).values(
            principal_id=principal_id,
            day=day,
            jobs=1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_micros=cost_micros,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.principal_id, table.c.day],
            set_={
                "jobs": table.c.jobs + 1,
                "input_tokens": table.c.input_tokens + input_tokens,
                "output_tokens": table.c.output_tokens + output_tokens,
                "cost_micros": table.c.cost_micros + cost_micros,
            },
        )
        await self.session.execute(stmt)

    async def get(self, principal_id: str, day: date) -> UsageDay | None:
        stmt = select(UsageDay).where(UsageDay.principal_id == principal_id, UsageDay.day == day)
        return (await self.session.scalars(stmt)).one_or_none()
