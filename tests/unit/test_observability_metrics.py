"""Metrics: names, labels and values as Prometheus scrapes them; bounded labels; own registry."""

from __future__ import annotations

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobql.errors import ErrorCode
from jobql.models import JobStatus
from jobql.observability.metrics import (
    OTHER,
    SUBMIT_BUCKETS,
    BusStats,
    Metrics,
    SubmitOutcome,
)
from jobql.runtime import Runtime


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, keyed by (sample name, labels)."""
    body, _ = metrics.render()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return scrape(metrics).get((name, frozenset(labels.items())))


def families(metrics: Metrics) -> dict[str, str]:
    body, _ = metrics.render()
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


def test_render_returns_the_text_exposition_and_its_content_type() -> None:
    body, content_type = Metrics().render()
    assert isinstance(body, bytes)
    assert content_type == CONTENT_TYPE_LATEST
    assert content_type.startswith("text/plain")


def test_every_family_is_exposed_with_its_type() -> None:
    assert families(Metrics()) == {
        "jobql_jobs_submitted": "counter",
        "jobql_jobs_finished": "counter",
        "jobql_tokens": "counter",
        "jobql_cost_usd": "counter",
        "jobql_submit_duration_seconds": "histogram",
        "jobql_time_to_first_token_seconds": "histogram",
        "jobql_active_subscriptions": "gauge",
        "jobql_provider_errors": "counter",
        "jobql_queue_depth": "gauge",
        "jobql_service_unavailable": "counter",
        "jobql_rate_limiter_unavailable": "counter",
    }


def test_job_counters_by_task_and_status() -> None:
    m = Metrics()
    m.job_submitted("summarize")
    m.job_submitted("summarize")
    m.job_submitted("classify")
    m.job_finished("summarize", JobStatus.SUCCEEDED)
    m.job_finished("summarize", "FAILED")
    m.job_finished("summarize", "FAILED")
    m.job_finished("classify", JobStatus.CANCELLED)

    assert value(m, "jobql_jobs_submitted_total", task="summarize") == 2
    assert value(m, "jobql_jobs_submitted_total", task="classify") == 1
    assert value(m, "jobql_jobs_finished_total", task="summarize", status="SUCCEEDED") == 1
    assert value(m, "jobql_jobs_finished_total", task="summarize", status="FAILED") == 2
    assert value(m, "jobql_jobs_finished_total", task="classify", status="CANCELLED") == 1
    assert value(m, "jobql_jobs_finished_total", task="classify", status="FAILED") is None


def test_submit_duration_histogram_by_outcome() -> None:
    m = Metrics()
    m.observe_submit(0.004, SubmitOutcome.CREATED)
    m.observe_submit(0.2, "created")
    m.observe_submit(0.002, SubmitOutcome.INVALID_INPUT)

    assert value(m, "jobql_submit_duration_seconds_count", outcome="created") == 2
    assert value(m, "jobql_submit_duration_seconds_sum", outcome="created") == pytest.approx(0.204)
    bucket = "jobql_submit_duration_seconds_bucket"
    assert value(m, bucket, outcome="created", le="0.001") == 0
    assert value(m, bucket, outcome="created", le="0.005") == 1
    assert value(m, bucket, outcome="created", le="0.25") == 2
    assert value(m, bucket, outcome="created", le="+Inf") == 2
    assert value(m, "jobql_submit_duration_seconds_count", outcome="invalid_input") == 1
    # Buckets span 1 ms .. 5 s.
    les = {
        dict(labels)["le"]
        for (name, labels) in scrape(m)
        if name == bucket and dict(labels)["outcome"] == "created"
    }
    assert les == {str(b) for b in SUBMIT_BUCKETS} | {"+Inf"}
    assert min(SUBMIT_BUCKETS) == 0.001
    assert max(SUBMIT_BUCKETS) == 5.0


def test_time_to_first_token_histogram_by_task() -> None:
    m = Metrics()
    m.observe_time_to_first_token("summarize", 0.3)
    m.observe_time_to_first_token("summarize", 3.0)
    m.observe_time_to_first_token("summarize", -1.0)  # a clock oddity counts as 0, not negative

    name = "jobql_time_to_first_token_seconds"
    assert value(m, f"{name}_count", task="summarize") == 3
    assert value(m, f"{name}_sum", task="summarize") == pytest.approx(3.3)
    assert value(m, f"{name}_bucket", task="summarize", le="0.5") == 2
    assert value(m, f"{name}_bucket", task="summarize", le="5.0") == 3


def test_active_subscriptions_gauge() -> None:
    m = Metrics()
    assert value(m, "jobql_active_subscriptions") == 0
    m.subscription_opened()
    m.subscription_opened()
    m.subscription_closed()
    assert value(m, "jobql_active_subscriptions") == 1
    with m.track_subscription():
        assert value(m, "jobql_active_subscriptions") == 2
    assert value(m, "jobql_active_subscriptions") == 1


def test_track_subscription_closes_on_error() -> None:
    m = Metrics()
    with pytest.raises(RuntimeError), m.track_subscription():
        raise RuntimeError("client went away")
    assert value(m, "jobql_active_subscriptions") == 0


def test_provider_errors_by_provider_and_code() -> None:
    m = Metrics()
    m.provider_error("simulated", ErrorCode.PROVIDER_TIMEOUT)
    m.provider_error("simulated", "PROVIDER_TIMEOUT")
    m.provider_error("simulated", ErrorCode.PROVIDER_RATE_LIMITED)

    name = "jobql_provider_errors_total"
    assert value(m, name, provider="simulated", code="PROVIDER_TIMEOUT") == 2
    assert value(m, name, provider="simulated", code="PROVIDER_RATE_LIMITED") == 1


def test_queue_depth_gauge() -> None:
    m = Metrics()
    # Active statuses exist at 0 before the first refresh.
    assert value(m, "jobql_queue_depth", status="QUEUED") == 0
    assert value(m, "jobql_queue_depth", status="RUNNING") == 0

    m.set_queue_depth(JobStatus.QUEUED, 7)
    assert value(m, "jobql_queue_depth", status="QUEUED") == 7

    m.set_queue_depths({"QUEUED": 3, "RUNNING": 2})
    assert value(m, "jobql_queue_depth", status="QUEUED") == 3
    assert value(m, "jobql_queue_depth", status="RUNNING") == 2

    # A GROUP BY query has no row for an empty status: it goes back to 0, not stale.
    m.set_queue_depths({"RUNNING": 1})
    assert value(m, "jobql_queue_depth", status="QUEUED") == 0
    assert value(m, "jobql_queue_depth", status="RUNNING") == 1


def test_unknown_label_values_fold_into_other() -> None:
    m = Metrics(tasks=["summarize"], providers=["simulated"])
    for i in range(50):
        m.job_submitted(f"made-up-{i}")
        m.observe_time_to_first_token(f"made-up-{i}", 1.0)
        m.provider_error(f"made-up-{i}", f"CODE_{i}")
        m.observe_submit(0.01, f"outcome-{i}")
    m.job_finished("summarize", "RUNNING")  # not a terminal status
    m.job_finished("summarize", "bogus")
    m.set_queue_depths({"bogus": 2, "also-bogus": 3})

    assert value(m, "jobql_jobs_submitted_total", task=OTHER) == 50
    assert value(m, "jobql_time_to_first_token_seconds_count", task=OTHER) == 50
    assert value(m, "jobql_provider_errors_total", provider=OTHER, code=OTHER) == 50
    assert value(m, "jobql_submit_duration_seconds_count", outcome=OTHER) == 50
    assert value(m, "jobql_jobs_finished_total", task="summarize", status=OTHER) == 2
    assert value(m, "jobql_queue_depth", status=OTHER) == 5

    labels_seen = {v for (_, labels) in scrape(m) for (_, v) in labels}
    assert not any(v.startswith(("made-up", "CODE_", "outcome-")) for v in labels_seen)


def test_without_allow_lists_task_and_provider_names_are_used_as_given() -> None:
    m = Metrics()
    m.job_submitted("anything")
    m.provider_error("acme", "PROVIDER_UNAVAILABLE")
    assert value(m, "jobql_jobs_submitted_total", task="anything") == 1
    assert (
        value(m, "jobql_provider_errors_total", provider="acme", code="PROVIDER_UNAVAILABLE") == 1
    )


def test_configured_tasks_are_exported_at_zero_up_front() -> None:
    m = Metrics(tasks=["summarize", "classify"])
    for task in ("summarize", "classify"):
        assert value(m, "jobql_jobs_submitted_total", task=task) == 0
        for status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            assert value(m, "jobql_jobs_finished_total", task=task, status=status) == 0


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()  # same metric names twice: no "Duplicated timeseries" error
    a.job_submitted("summarize")
    a.subscription_opened()
    assert value(a, "jobql_jobs_submitted_total", task="summarize") == 1
    assert value(b, "jobql_jobs_submitted_total", task="summarize") is None
    assert value(b, "jobql_active_subscriptions") == 0
    assert a.registry is not b.registry


def test_the_global_registry_is_not_touched() -> None:
    Metrics().job_submitted("summarize")
    assert REGISTRY.get_sample_value("jobql_jobs_submitted_total", {"task": "summarize"}) is None
    assert REGISTRY.get_sample_value("jobql_active_subscriptions") is None


def test_outage_counters_by_operation_and_rate_limiter_action() -> None:
    m = Metrics()
    m.service_unavailable("submit")
    m.service_unavailable("submit")
    m.service_unavailable("stream")
    m.service_unavailable("made-up")
    m.rate_limiter_unavailable("allowed")
    assert value(m, "jobql_service_unavailable_total", operation="submit") == 2
    assert value(m, "jobql_service_unavailable_total", operation="stream") == 1
    assert value(m, "jobql_service_unavailable_total", operation="other") == 1
    assert value(m, "jobql_rate_limiter_unavailable_total", action="allowed") == 1
    assert value(m, "jobql_rate_limiter_unavailable_total", action="refused") is None


def test_event_bus_state_and_counts_are_read_when_scraped() -> None:
    m = Metrics()
    state = BusStats(connected=True, reconnects=0, publish_failures=0)
    m.watch_event_bus(lambda: state)
    assert value(m, "jobql_event_bus_connected") == 1
    assert value(m, "jobql_event_bus_reconnects_total") == 0
    state = BusStats(connected=False, reconnects=2, publish_failures=7)
    assert value(m, "jobql_event_bus_connected") == 0
    assert value(m, "jobql_event_bus_reconnects_total") == 2
    assert value(m, "jobql_event_bus_publish_failures_total") == 7
    assert families(m)["jobql_event_bus_reconnects"] == "counter"


async def test_metrics_are_served_while_the_database_is_down() -> None:
    """The queue depths keep their last values; every other series is still there."""

    class DownStore:
        calls = 0

        async def count_by_status(self) -> dict[str, int]:
            DownStore.calls += 1
            if DownStore.calls > 1:
                raise ConnectionRefusedError(111, "Connect call failed")
            return {"QUEUED": 3}

    m = Metrics()
    runtime = Runtime(None, None, None, DownStore(), None, None, None, None, m)  # type: ignore[arg-type]
    await runtime.render_metrics()
    body, _ = await runtime.render_metrics()
    assert DownStore.calls == 2
    assert 'jobql_queue_depth{status="QUEUED"} 3.0' in body.decode()


async def test_a_bug_while_rendering_metrics_is_not_hidden() -> None:
    class BrokenStore:
        async def count_by_status(self) -> dict[str, int]:
            raise KeyError("status")

    runtime = Runtime(None, None, None, BrokenStore(), None, None, None, None, Metrics())  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        await runtime.render_metrics()
