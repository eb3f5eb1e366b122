"""Usage per caller per UTC day, per task and model: the jobs that finished and the tokens
and dollars they spent. Rows are added to as jobs finish, so reports outlive the job rows."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from jobql.models.base import Base


class UsageDay(Base):
    __tablename__ = "usage"

    principal_id: Mapped[str] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    )
    # The UTC day the jobs finished on.
    day: Mapped[date] = mapped_column(primary_key=True)
    # The task and the model the jobs ran with, as pinned on the job at submit.
    api_version: Mapped[str] = mapped_column(String(10), primary_key=True)
    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(50), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)

    # Finished jobs by terminal status. A job cancelled before it started is not counted:
    # it used nothing.
    succeeded: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    cancelled: Mapped[int] = mapped_column(default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # Millionths of a dollar, so sums are exact.
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
