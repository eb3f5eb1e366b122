"""A partial index on active jobs per caller, for the limit checks at submit.

Revision ID: 0004_active_jobs_index
Revises: 0003_job_flags
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_active_jobs_index"
down_revision: str | None = "0003_job_flags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status IN ('QUEUED', 'RUNNING')")


def upgrade() -> None:
    op.create_index(
        "ix_jobs_active_principal_id",
        "jobs",
        ["principal_id"],
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_active_principal_id", table_name="jobs")
