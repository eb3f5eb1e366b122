"""The data lifecycle of finished jobs: how long their full event log and the jobs themselves
are kept (per task tier), and the prune passes that compact logs and delete jobs.

Usage is never pruned: it lives in its own table (models/usage.py), added to as jobs finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobql.models.base import utcnow

if TYPE_CHECKING:
    from jobql.repositories.store import JobStore
    from jobql.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionWindow:
    """Seconds after a job finished: until its log is compacted, until it is deleted."""

    event_log_seconds: int
    job_seconds: int


@dataclass(frozen=True)
class PruneScope:
    """Finished jobs of some tiers and the times before which they are pruned. ``tiers``
    None means every tier not in ``other_than`` (the global default)."""

    tiers: frozenset[str] | None
    other_than: frozenset[str]
    log_before: datetime
    job_before: datetime

    def covers(self, tier: str) -> bool:
        if self.tiers is not None:
            return tier in self.tiers
        return tier not in self.other_than


@dataclass(frozen=True)
class RetentionPolicy:
    default: RetentionWindow
    tiers: Mapping[str, RetentionWindow] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        default = RetentionWindow(
            settings.event_log_retention_seconds, settings.job_retention_seconds
        )
        tiers = {
            tier: RetentionWindow(
                override.event_log_seconds or default.event_log_seconds,
                override.job_seconds or default.job_seconds,
            )
            for tier, override in settings.retention.items()
        }
        return cls(default, tiers)

    def window(self, tier: str) -> RetentionWindow:
        return self.tiers.get(tier, self.default)

    def log_expires_at(self, tier: str, finished_at: datetime | None) -> datetime | None:
        """When a job's full log is compacted (None while it is not finished)."""
        if finished_at is None:
            return None
        return finished_at + timedelta(seconds=self.window(tier).event_log_seconds)

    def expires_at(self, tier: str, finished_at: datetime | None) -> datetime | None:
        """When a job is deleted (None while it is not finished)."""
        if finished_at is None:
            return None
        return finished_at + timedelta(seconds=self.window(tier).job_seconds)

    def scopes(self, now: datetime) -> list[PruneScope]:
        """The cutoffs at ``now``: one scope per overridden tier, one for every other."""
        overridden = frozenset(self.tiers)
        scopes = [
            PruneScope(
                frozenset({tier}),
                frozenset(),
                now - timedelta(seconds=window.event_log_seconds),
                now - timedelta(seconds=window.job_seconds),
            )
            for tier, window in sorted(self.tiers.items())
        ]
        scopes.append(
            PruneScope(
                None,
                overridden,
                now - timedelta(seconds=self.default.event_log_seconds),
                now - timedelta(seconds=self.default.job_seconds),
            )
        )
        return scopes


@dataclass(frozen=True)
class PruneCounts:
    """What a prune batch or pass removed (or, dry, would remove)."""

    jobs_compacted: int = 0
    events_deleted: int = 0
    jobs_deleted: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.jobs_compacted + other.jobs_compacted,
            self.events_deleted + other.events_deleted,
            self.jobs_deleted + other.jobs_deleted,
        )

    @property
    def jobs_touched(self) -> int:
        return self.jobs_compacted + self.jobs_deleted


async def prune_pass(
    store: JobStore,
    policy: RetentionPolicy,
    now: datetime | None = None,
    *,
    batch_size: int = 500,
    max_batches: int | None = None,
    pause_seconds: float = 0.0,
) -> PruneCounts:
    """Batches of ``store.prune`` (each its own short transaction) until one finds less
    than a full batch of work, or ``max_batches`` ran (the rest waits for the next pass).
    ``pause_seconds`` between batches lets other writers in: SQLite has one write lock, and
    a writer waiting for it polls, so batches back to back would starve submits."""
    at = now or utcnow()
    total = PruneCounts()
    batches = 0
    while max_batches is None or batches < max_batches:
        if batches and pause_seconds:
            await asyncio.sleep(pause_seconds)
        counts = await store.prune(policy, at, limit=batch_size)
        total += counts
        batches += 1
        if counts.jobs_compacted < batch_size and counts.jobs_deleted < batch_size:
            break
    if total.jobs_touched:
        log.info(
            "pruned finished jobs",
            extra={
                "jobs_compacted": total.jobs_compacted,
                "events_deleted": total.events_deleted,
                "jobs_deleted": total.jobs_deleted,
            },
        )
    return total
