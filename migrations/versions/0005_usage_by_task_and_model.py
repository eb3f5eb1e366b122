"""Usage per caller, UTC day, task and model, with finished jobs by terminal status, rebuilt
from the finished jobs (so that usage reports outlive the job rows later pruned).

The usage table held one row per caller and day; its numbers are the sums of the new rows.
Jobs cancelled before they started are not usage (nothing ran): a queued job's cancel sets
its cancel_requested_at to its finished_at, which no other path does.

Revision ID: 0005_usage_by_task_and_model
Revises: 0004_active_jobs_index
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_usage_by_task_and_model"
down_revision: str | None = "0004_active_jobs_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ("principal_id", "day", "api_version", "task", "provider", "model_name", "model_version")

# The UTC day a job finished on: SQLite stores UTC datetimes as naive text.
_DAY = {
    "sqlite": "date(finished_at)",
    "postgresql": "CAST(finished_at AT TIME ZONE 'UTC' AS date)",
}
_BACKFILL = """
INSERT INTO usage (principal_id, day, api_version, task, provider, model_name, model_version,
    succeeded, failed, cancelled, input_tokens, output_tokens, cost_micros)
SELECT principal_id, {day}, api_version, task, provider, model_name, model_version,
    sum(CASE WHEN status = 'SUCCEEDED' THEN 1 ELSE 0 END),
    sum(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END),
    sum(CASE WHEN status = 'CANCELLED' THEN 1 ELSE 0 END),
    coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
    coalesce(sum(cost_micros), 0)
FROM jobs
WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AND finished_at IS NOT NULL
    AND NOT (status = 'CANCELLED'
             AND (started_at IS NULL OR cancel_requested_at = finished_at))
GROUP BY principal_id, {day}, api_version, task, provider, model_name, model_version
"""


def _old_usage_table() -> None:
    op.create_table(
        "usage",
        sa.Column("principal_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_usage_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("principal_id", "day", name=op.f("pk_usage")),
    )


def upgrade() -> None:
    # Every number in the old table is a sum over the finished jobs, which are all still
    # there: the new table is rebuilt from them rather than split from the old one.
    op.drop_table("usage")
    op.create_table(
        "usage",
        sa.Column("principal_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("api_version", sa.String(length=10), nullable=False),
        sa.Column("task", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_usage_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*_KEY, name=op.f("pk_usage")),
    )
    dialect = op.get_bind().dialect.name
    op.execute(sa.text(_BACKFILL.format(day=_DAY[dialect])))


def downgrade() -> None:
    op.rename_table("usage", "usage_by_task_and_model")
    if op.get_bind().dialect.name == "postgresql":
        # The primary key's index keeps its name through the rename; free it.
        op.execute(
            sa.text(
                "ALTER TABLE usage_by_task_and_model "
                "RENAME CONSTRAINT pk_usage TO pk_usage_by_task_and_model"
            )
        )
    _old_usage_table()
    op.execute(
        sa.text(
            "INSERT INTO usage (principal_id, day, jobs, input_tokens, output_tokens, "
            "cost_micros) SELECT principal_id, day, sum(succeeded + failed + cancelled), "
            "sum(input_tokens), sum(output_tokens), sum(cost_micros) "
            "FROM usage_by_task_and_model GROUP BY principal_id, day"
        )
    )
    op.drop_table("usage_by_task_and_model")
