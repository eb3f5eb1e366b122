"""The jobs table: one row per job, and the queue workers claim from.

States (see docs/jobs.md):
    QUEUED --claim--> RUNNING --> SUCCEEDED | FAILED | CANCELLED
    QUEUED --cancel--> CANCELLED;  RUNNING --lease expired--> QUEUED (attempt+1) | FAILED
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from jobql.models.base import Base, utcnow
from jobql.states import ACTIVE, TERMINAL, JobStatus

__all__ = ["ACTIVE", "TERMINAL", "Job", "JobStatus", "is_job_id"]


def is_job_id(value: str) -> bool:
    """Job ids are UUIDs; anything else can be answered as "not found" without a query."""
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("principal_id", "idempotency_key"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_principal_id_created_at", "principal_id", "created_at"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        # Active jobs per caller, for the concurrency and cost checks at every submit.
        Index(
            "ix_jobs_active_principal_id",
            "principal_id",
            postgresql_where=text("status IN ('QUEUED', 'RUNNING')"),
            sqlite_where=text("status IN ('QUEUED', 'RUNNING')"),
        ),
        # Finished jobs by age, for pruning (services/retention.py): those whose log is
        # still whole, and all of them.
        Index(
            "ix_jobs_uncompacted_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL AND log_compacted_at IS NULL"),
            sqlite_where=text("finished_at IS NOT NULL AND log_compacted_at IS NULL"),
        ),
        Index(
            "ix_jobs_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)

    # The contract the job runs under, pinned at submit.
    task: Mapped[str] = mapped_column(String(100))
    api_version: Mapped[str] = mapped_column(String(10))
    tier: Mapped[str] = mapped_column(String(20))
    prompt_version: Mapped[str] = mapped_column(String(50))
    provider: Mapped[str] = mapped_column(String(50))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))

    input: Mapped[dict[str, Any]]
    input_fingerprint: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)

    output: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    phase: Mapped[str | None] = mapped_column(String(100), default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # Prompt-injection findings of a task whose policy is "flag": [{rule, path, score}].
    flags: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)

    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    # Money is kept in millionths of a dollar so sums are exact.
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    max_cost_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The worst-case cost held against the caller's daily cap while the job is active.
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_reason: Mapped[str | None] = mapped_column(String(500), default=None)

    # The seq of the newest event in job_events; the next event gets last_seq + 1.
    last_seq: Mapped[int] = mapped_column(default=0)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    deadline_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the finished job's log was compacted to its terminal event (and one OutputDelta
    # with the whole output); None while the log is whole.
    log_compacted_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.job_status in TERMINAL
