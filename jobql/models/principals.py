"""Callers (principals) and their API keys, stored as SHA-256 hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobql.models.base import Base, utcnow


class Principal(Base):
    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(50), default="standard")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Per-caller overrides of the tier's limits; NULL means "the tier's default".
    rate_limit: Mapped[int | None] = mapped_column(default=None)
    rate_window_seconds: Mapped[int | None] = mapped_column(default=None)
    daily_cost_cap_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_active_jobs: Mapped[int | None] = mapped_column(default=None)

    keys: Mapped[list[ApiKey]] = relationship(back_populates="principal", lazy="raise")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"))
    # The first characters of the key, so an operator can tell keys apart in `jobql keys list`.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    principal: Mapped[Principal] = relationship(back_populates="keys", lazy="raise")
