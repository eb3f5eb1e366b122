"""Limit arithmetic: effective limits per caller, worst-case cost, the daily cap. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jobql.errors import ConcurrencyLimitExceeded, CostLimitExceeded
from jobql.settings import TierLimits
from jobql.tasks import TaskContract
from jobql.tasks.contracts import MICROS_PER_DOLLAR


@dataclass(frozen=True)
class Limits:
    rate_limit: int
    rate_window_seconds: int
    daily_cost_cap_micros: int
    max_active_jobs: int


@dataclass(frozen=True)
class LimitOverrides:
    """A caller's own limits; None keeps the tier's default."""

    rate_limit: int | None = None
    rate_window_seconds: int | None = None
    daily_cost_cap_micros: int | None = None
    max_active_jobs: int | None = None


def effective_limits(tier: TierLimits, overrides: LimitOverrides) -> Limits:
    def pick(own: int | None, default: int) -> int:
        return default if own is None else own

    return Limits(
        rate_limit=pick(overrides.rate_limit, tier.rate_limit),
        rate_window_seconds=pick(overrides.rate_window_seconds, tier.rate_window_seconds),
        daily_cost_cap_micros=pick(
            overrides.daily_cost_cap_micros, round(tier.daily_cost_cap_usd * MICROS_PER_DOLLAR)
        ),
        max_active_jobs=pick(overrides.max_active_jobs, tier.max_active_jobs),
    )


def worst_case_cost_micros(task: TaskContract, input_tokens: int, max_cost: int | None) -> int:
    """What a job may cost at most: its prompt plus the task's full output budget, or the
    client's own maxCostUsd when lower (the worker stops the job there)."""
    worst = task.pricing.cost_micros(input_tokens, task.max_output_tokens)
    return worst if max_cost is None else min(worst, max_cost)


def next_utc_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def check_concurrency(limits: Limits, active: int) -> ConcurrencyLimitExceeded | None:
    if active >= limits.max_active_jobs:
        return ConcurrencyLimitExceeded(limit=limits.max_active_jobs, active=active)
    return None


def check_cost(
    limits: Limits, *, spent: int, reserved: int, reservation: int, now: datetime
) -> CostLimitExceeded | None:
    """Accepted reservations plus today's spending never pass the cap."""
    if spent + reserved + reservation > limits.daily_cost_cap_micros:
        return CostLimitExceeded(
            cap_micros=limits.daily_cost_cap_micros,
            spent_micros=spent,
            reserved_micros=reserved,
            resets_at=next_utc_midnight(now),
        )
    return None
