"""Prometheus metrics for jobql, kept in a registry owned by one `Metrics` object.

Each `Metrics` instance has its own `CollectorRegistry` (never the process-global one), so
several apps in one process, and tests, never clash. Serve `Metrics.render()` on `/metrics`.

Series exported (names as they appear in the exposition):

| series | type | labels |
|---|---|---|
| `jobql_jobs_submitted_total` | counter | `task` |
| `jobql_jobs_finished_total` | counter | `task`, `status` |
| `jobql_tokens_total` | counter | `task`, `model`, `direction` |
| `jobql_cost_usd_total` | counter | `task`, `model` |
| `jobql_submit_duration_seconds` | histogram | `outcome` |
| `jobql_time_to_first_token_seconds` | histogram | `task` |
| `jobql_active_subscriptions` | gauge | |
| `jobql_provider_errors_total` | counter | `provider`, `code` |
| `jobql_queue_depth` | gauge | `status` |
| `jobql_service_unavailable_total` | counter | `operation` |
| `jobql_rate_limiter_unavailable_total` | counter | `action` |
| `jobql_event_bus_connected` | gauge | |
| `jobql_event_bus_reconnects_total` | counter | |
| `jobql_event_bus_publish_failures_total` | counter | |

(Counters also get a `..._created` series holding their creation time; that is
prometheus-client's default and harmless.)

Label cardinality is bounded, and enforced here rather than trusted:

* `status` is a `JobStatus` value: a terminal one (`SUCCEEDED`, `FAILED`, `CANCELLED`) on
  `jobql_jobs_finished_total`, any status on `jobql_queue_depth`.
* `code` is an `ErrorCode` value.
* `outcome` is a `SubmitOutcome` value.
* `operation` is an `UnavailableOperation` value; `action` is `allowed` (the rate limiter's
  Redis was down and the policy is to fail open) or `refused` (fail closed).
* `direction` is `input` or `output`.
* `model` is the model name a job ran on, which its task's configuration pinned; it is
  `other` whenever the task is.
* `task` and `provider` come from configuration. Pass the configured names as `tasks=` and
  `providers=` so that anything else (for example a task name a client made up) is folded
  into one series; without the allow-lists the names are used as given, so then call these
  methods only with names that were already validated against the configuration.

Any value outside its allowed set is recorded under the label value `other` instead of
creating a new series, so a bug or a hostile input can never blow up the number of series.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobql.errors import ErrorCode
from jobql.models.jobs import ACTIVE, TERMINAL, JobStatus
from jobql.states import Usage
from jobql.tasks.contracts import MICROS_PER_DOLLAR

OTHER = "other"
"""The label value that stands in for anything outside a label's allowed set."""

SUBMIT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Seconds; a submit is a validation plus one insert, so 1 ms .. 5 s covers it."""

TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
)
"""Seconds; model latency, from tens of milliseconds to minutes for slow agent tasks."""


class SubmitOutcome(StrEnum):
    """How a `submitJob` call ended: the `outcome` label of `jobql_submit_duration_seconds`."""

    CREATED = "created"
    DEDUPLICATED = "deduplicated"
    INVALID_INPUT = "invalid_input"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    LIMIT_EXCEEDED = "limit_exceeded"  # rate, concurrency or cost limit of the caller
    PROMPT_INJECTION = "prompt_injection"  # blocked by the task's injection policy
    SERVICE_UNAVAILABLE = "service_unavailable"  # an outage (database, bus, rate-limit store)
    ERROR = "error"  # an unexpected failure (masked as INTERNAL)


class UnavailableOperation(StrEnum):
    """What a client was answered ServiceUnavailable for: the `operation` label of
    `jobql_service_unavailable_total`."""

    SUBMIT = "submit"
    CANCEL = "cancel"
    READ = "read"  # job(id)
    STREAM = "stream"  # jobEvents, at its start or cut mid-stream
    REQUEST = "request"  # the whole request failed (e.g. the API-key lookup): HTTP 503


_STATUSES = frozenset(s.value for s in JobStatus)
_TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)
_ACTIVE_STATUSES = tuple(sorted(s.value for s in ACTIVE))
_CODES = frozenset(c.value for c in ErrorCode)
_OUTCOMES = frozenset(o.value for o in SubmitOutcome)
_OPERATIONS = frozenset(o.value for o in UnavailableOperation)
_RATE_LIMITER_ACTIONS = frozenset({"allowed", "refused"})


@dataclass(frozen=True)
class BusStats:
    """What the event bus says about itself when /metrics is scraped."""

    connected: bool
    reconnects: int
    publish_failures: int


class _BusCollector(Collector):
    """Reads the bus's own counts at scrape time (the bus keeps them; no double books)."""

    def __init__(self, stats: Callable[[], BusStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "jobql_event_bus_connected",
            "1 while the event bus's listening connection is up, 0 while it reconnects.",
            value=1 if stats.connected else 0,
        )
        yield CounterMetricFamily(
            "jobql_event_bus_reconnects",
            "Times the event bus's listening connection was lost and made again.",
            value=stats.reconnects,
        )
        yield CounterMetricFamily(
            "jobql_event_bus_publish_failures",
            "Messages the event bus could not publish (subscribers caught up from the log).",
            value=stats.publish_failures,
        )


def _bounded(value: str, allowed: frozenset[str] | None) -> str:
    if allowed is None or value in allowed:
        return str(value)  # plain str, also for StrEnum members
    return OTHER


class Metrics:
    """All of jobql's metrics, registered in a registry of their own.

    `tasks` and `providers`, when given, are the configured names; other names are counted
    as `other`. Series for the configured tasks (and the active queue statuses) are created
    at zero up front, so `rate()` and alerts see them before the first event.
    """

    def __init__(
        self,
        *,
        tasks: Iterable[str] | None = None,
        providers: Iterable[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._tasks = frozenset(tasks) if tasks is not None else None
        self._providers = frozenset(providers) if providers is not None else None

        self._submitted = Counter(
            "jobql_jobs_submitted",
            "Jobs accepted by submitJob (new jobs only, not idempotent replays).",
            ["task"],
            registry=self.registry,
        )
        self._finished = Counter(
            "jobql_jobs_finished",
            "Jobs that reached a terminal status.",
            ["task", "status"],
            registry=self.registry,
        )
        self._tokens = Counter(
            "jobql_tokens",
            "Tokens used by finished jobs, by task, model and direction (input or output).",
            ["task", "model", "direction"],
            registry=self.registry,
        )
        self._cost = Counter(
            "jobql_cost_usd",
            "US dollars spent by finished jobs, by task and model.",
            ["task", "model"],
            registry=self.registry,
        )
        self._submit_duration = Histogram(
            "jobql_submit_duration_seconds",
            "Wall time of submitJob, by outcome.",
            ["outcome"],
            buckets=SUBMIT_BUCKETS,
            registry=self.registry,
        )
        self._ttft = Histogram(
            "jobql_time_to_first_token_seconds",
            "Seconds from the start of a job attempt to its first output token.",
            ["task"],
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self._subscriptions = Gauge(
            "jobql_active_subscriptions",
            "jobEvents subscriptions currently open.",
            registry=self.registry,
        )
        self._provider_errors = Counter(
            "jobql_provider_errors",
            "Errors returned by model providers, by provider and error code.",
            ["provider", "code"],
            registry=self.registry,
        )
        self._unavailable = Counter(
            "jobql_service_unavailable",
            "Requests answered ServiceUnavailable because a server they needed was down.",
            ["operation"],
            registry=self.registry,
        )
        self._rate_limiter_unavailable = Counter(
            "jobql_rate_limiter_unavailable",
            "Submits the rate limiter could not count because its Redis was down, by what "
            "the failure policy did with them (allowed: fail open, refused: fail closed).",
            ["action"],
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "jobql_queue_depth",
            "Jobs by status, as last set (refreshed when /metrics is scraped).",
            ["status"],
            registry=self.registry,
        )

        for status in _ACTIVE_STATUSES:
            self._queue_depth.labels(status=status).set(0)
        for task in sorted(self._tasks or ()):
            self._submitted.labels(task=task)
            for status in sorted(_TERMINAL_STATUSES):
                self._finished.labels(task=task, status=status)

    # -- labels ---------------------------------------------------------------------------

    def _task(self, task: str) -> str:
        return _bounded(task, self._tasks)

    def _provider(self, provider: str) -> str:
        return _bounded(provider, self._providers)

    # -- jobs -----------------------------------------------------------------------------

    def job_submitted(self, task: str) -> None:
        """A new job was stored (call it once per job, not for deduplicated replays)."""
        self._submitted.labels(task=self._task(task)).inc()

    def job_finished(
        self, task: str, status: str, *, model: str | None = None, usage: Usage | None = None
    ) -> None:
        """A job reached `status`, one of `SUCCEEDED`, `FAILED`, `CANCELLED`; with `usage`,
        its tokens and cost are counted under its task and `model` (the model's name)."""
        task_label = self._task(task)
        self._finished.labels(task=task_label, status=_bounded(status, _TERMINAL_STATUSES)).inc()
        if usage is None:
            return
        # The model comes with the task's configuration: a task outside it has no model.
        model_label = OTHER if task_label == OTHER or model is None else str(model)
        self._tokens.labels(task=task_label, model=model_label, direction="input").inc(
            usage.input_tokens
        )
        self._tokens.labels(task=task_label, model=model_label, direction="output").inc(
            usage.output_tokens
        )
        self._cost.labels(task=task_label, model=model_label).inc(
            usage.cost_micros / MICROS_PER_DOLLAR
        )

    def observe_submit(self, seconds: float, outcome: str) -> None:
        """Time one `submitJob` call; `outcome` is a `SubmitOutcome` value."""
        self._submit_duration.labels(outcome=_bounded(outcome, _OUTCOMES)).observe(
            max(seconds, 0.0)
        )

    def observe_time_to_first_token(self, task: str, seconds: float) -> None:
        """Seconds from the start of a job attempt to its first output delta."""
        self._ttft.labels(task=self._task(task)).observe(max(seconds, 0.0))

    # -- subscriptions --------------------------------------------------------------------

    def subscription_opened(self) -> None:
        self._subscriptions.inc()

    def subscription_closed(self) -> None:
        self._subscriptions.dec()

    @contextlib.contextmanager
    def track_subscription(self) -> Iterator[None]:
        """Counts a subscription as open for the duration of the `with` block."""
        self.subscription_opened()
        try:
            yield
        finally:
            self.subscription_closed()

    # -- providers ------------------------------------------------------------------------

    def provider_error(self, provider: str, code: str) -> None:
        """A provider call failed with `code`, an `ErrorCode` value."""
        self._provider_errors.labels(
            provider=self._provider(provider), code=_bounded(code, _CODES)
        ).inc()

    # -- outages -------------------------------------------------------------------------

    def service_unavailable(self, operation: str) -> None:
        """A client was answered ServiceUnavailable; `operation` is an `UnavailableOperation`."""
        self._unavailable.labels(operation=_bounded(operation, _OPERATIONS)).inc()

    def rate_limiter_unavailable(self, action: str) -> None:
        """The rate limiter's store was down for one submit; `action` is `allowed` or
        `refused`."""
        self._rate_limiter_unavailable.labels(action=_bounded(action, _RATE_LIMITER_ACTIONS)).inc()

    # -- queue depth ----------------------------------------------------------------------

    def set_queue_depth(self, status: str, n: int) -> None:
        """Set the number of jobs in `status` (a `JobStatus` value)."""
        self._queue_depth.labels(status=_bounded(status, _STATUSES)).set(n)

    def set_queue_depths(self, counts: Mapping[str, int]) -> None:
        """Set every reported status from one count-by-status query.

        `QUEUED` and `RUNNING` missing from `counts` are set to 0 (a `GROUP BY status` query
        returns no row for a status with no jobs), so a stale value never lingers.
        """
        values = dict.fromkeys(_ACTIVE_STATUSES, 0)
        for status, n in counts.items():
            label = _bounded(status, _STATUSES)
            # Unknown statuses all fold into `other`, so add them up rather than overwrite.
            values[label] = values.get(label, 0) + n if label == OTHER else n
        for label, n in values.items():
            self._queue_depth.labels(status=label).set(n)

    def watch_event_bus(self, stats: Callable[[], BusStats]) -> None:
        """Export the event bus's state and counts, read when /metrics is scraped."""
        self.registry.register(_BusCollector(stats))

    # -- exposition -----------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition of this registry and its content type, for `/metrics`."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
