"""Per-caller limit overrides and cost reservations.

Revision ID: 0002_limits
Revises: 0001_initial
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_limits"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("principals") as batch:
        batch.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_window_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("daily_cost_cap_micros", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_active_jobs", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("reserved_micros", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reserved_micros")
    with op.batch_alter_table("principals") as batch:
        batch.drop_column("max_active_jobs")
        batch.drop_column("daily_cost_cap_micros")
        batch.drop_column("rate_window_seconds")
        batch.drop_column("rate_limit")
