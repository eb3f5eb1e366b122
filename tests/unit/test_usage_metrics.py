"""The token and cost counters: what a finished job adds, and the labels they may take."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from jobql.observability.metrics import OTHER, Metrics
from jobql.states import Usage


def samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = metrics.render()[0].decode()
    return {
        tuple(sorted(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_finished_jobs_add_their_tokens_and_cost_under_task_and_model() -> None:
    metrics = Metrics(tasks={"echo", "classify"})
    metrics.job_finished("echo", "SUCCEEDED", model="sim-fast", usage=Usage(10, 40, 90_000))
    metrics.job_finished("echo", "FAILED", model="sim-fast", usage=Usage(5, 2, 9_001))
    metrics.job_finished("classify", "CANCELLED", model="sim-small", usage=Usage(3, 0, 1))

    tokens = samples(metrics, "jobql_tokens_total")
    assert tokens == {
        (("direction", "input"), ("model", "sim-fast"), ("task", "echo")): 15,
        (("direction", "output"), ("model", "sim-fast"), ("task", "echo")): 42,
        (("direction", "input"), ("model", "sim-small"), ("task", "classify")): 3,
        (("direction", "output"), ("model", "sim-small"), ("task", "classify")): 0,
    }
    cost = samples(metrics, "jobql_cost_usd_total")
    assert {labels: round(usd * 1_000_000) for labels, usd in cost.items()} == {
        (("model", "sim-fast"), ("task", "echo")): 99_001,
        (("model", "sim-small"), ("task", "classify")): 1,
    }


def test_a_task_outside_the_configuration_folds_its_model_into_other() -> None:
    metrics = Metrics(tasks={"echo"})
    metrics.job_finished("made-up", "SUCCEEDED", model="any-model", usage=Usage(1, 2, 3))
    metrics.job_finished("echo", "CANCELLED")  # a job that never ran: no usage to count

    assert samples(metrics, "jobql_cost_usd_total") == {(("model", OTHER), ("task", OTHER)): 3e-6}
    assert set(samples(metrics, "jobql_tokens_total")) == {
        (("direction", "input"), ("model", OTHER), ("task", OTHER)),
        (("direction", "output"), ("model", OTHER), ("task", OTHER)),
    }
