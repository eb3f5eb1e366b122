"""Retention windows: settings validation and the pure policy arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from jobql.services.retention import PruneCounts, RetentionPolicy, RetentionWindow
from jobql.settings import Settings

FINISHED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_defaults_keep_logs_a_week_and_jobs_a_month() -> None:
    policy = RetentionPolicy.from_settings(settings())
    assert policy.log_expires_at("generative", FINISHED) == FINISHED + timedelta(days=7)
    assert policy.expires_at("agent", FINISHED) == FINISHED + timedelta(days=30)
    assert policy.expires_at("simple", None) is None
    assert policy.log_expires_at("simple", None) is None


def test_a_tier_override_takes_the_global_value_for_what_it_leaves_out() -> None:
    policy = RetentionPolicy.from_settings(
        settings(
            event_log_retention_seconds=100,
            job_retention_seconds=1000,
            retention={"agent": {"job_seconds": 5000}},
        )
    )
    assert policy.window("agent") == RetentionWindow(100, 5000)
    assert policy.window("simple") == RetentionWindow(100, 1000)


def test_scopes_cover_each_tier_once() -> None:
    policy = RetentionPolicy(RetentionWindow(10, 20), {"agent": RetentionWindow(30, 40)})
    now = FINISHED
    scopes = policy.scopes(now)
    for tier in ("simple", "generative", "agent", "a-future-tier"):
        (scope,) = [s for s in scopes if s.covers(tier)]
        window = policy.window(tier)
        assert scope.log_before == now - timedelta(seconds=window.event_log_seconds)
        assert scope.job_before == now - timedelta(seconds=window.job_seconds)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"event_log_retention_seconds": 10, "job_retention_seconds": 5}, "at least as long"),
        ({"retention": {"agent": {"event_log_seconds": 9, "job_seconds": 8}}}, "'agent'"),
        ({"job_retention_seconds": 60, "retention": {"simple": {"event_log_seconds": 61}}}, "61"),
        ({"retention": {"premium": {"job_seconds": 8}}}, "unknown task tier 'premium'"),
        ({"retention": {"agent": {"job_seconds": 0}}}, "greater than or equal to 1"),
    ],
)
def test_settings_refuse_a_job_window_shorter_than_its_log_window(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_counts_add_up() -> None:
    total = PruneCounts(1, 10, 0) + PruneCounts(2, 5, 3)
    assert total == PruneCounts(jobs_compacted=3, events_deleted=15, jobs_deleted=3)
    assert total.jobs_touched == 6
