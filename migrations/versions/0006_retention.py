"""Retention of finished jobs: when a job's log was compacted, and the indexes pruning reads.

Revision ID: 0006_retention
Revises: 0005_usage_by_task_and_model
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_retention"
down_revision: str | None = "0005_usage_by_task_and_model"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = sa.text("finished_at IS NOT NULL")
UNCOMPACTED = sa.text("finished_at IS NOT NULL AND log_compacted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("log_compacted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_uncompacted_finished_at",
        "jobs",
        ["finished_at"],
        postgresql_where=UNCOMPACTED,
        sqlite_where=UNCOMPACTED,
    )
    op.create_index(
        "ix_jobs_finished_at",
        "jobs",
        ["finished_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_uncompacted_finished_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("log_compacted_at")
