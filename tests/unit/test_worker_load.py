"""What bounds how many jobs a worker process takes on: its event loop's lag and its event
writer's backlog, besides worker_concurrency."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobql.events.bus import BroadcastBus
from jobql.providers.registry import ProviderRegistry
from jobql.repositories.memory import MemoryJobStore
from jobql.settings import ProviderSettings, Settings
from jobql.tasks import load_tasks
from jobql.worker import Worker
from jobql.worker.load import LoopLag

TASKS = Path(__file__).parent.parent / "tasks.toml"


def test_loop_lag_follows_late_wake_ups_and_recovers() -> None:
    lag = LoopLag(weight=0.5)
    lag.observe(0.4)
    assert lag.seconds == pytest.approx(0.2)
    lag.observe(0.4)
    assert lag.seconds == pytest.approx(0.3)
    for _ in range(20):
        lag.observe(-0.001)  # early wake-ups count as on time
    assert lag.seconds < 0.001


def worker(**settings: float) -> Worker:
    return Worker(
        Settings(tasks_file=TASKS, _env_file=None, **settings),  # type: ignore[call-arg]
        store=MemoryJobStore(),
        bus=BroadcastBus("memory://"),
        tasks=load_tasks(TASKS),
        providers=ProviderRegistry([]),
    )


def test_a_worker_is_overloaded_while_its_loop_lags() -> None:
    w = worker(worker_max_loop_lag_ms=100)
    assert not w.overloaded()
    w.lag.seconds = 0.099
    assert not w.overloaded()
    w.lag.seconds = 0.101
    assert w.overloaded()


async def test_a_worker_is_overloaded_while_its_writer_has_a_backlog() -> None:
    w = worker(worker_max_write_backlog=2)
    w.writer.start()
    w.writer._pending.extend([object()] * 3)  # type: ignore[list-item]
    assert w.overloaded()
    w.writer._pending.clear()
    assert not w.overloaded()
    await w.writer.aclose()


def test_the_defaults_fit_io_bound_streams() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.worker_concurrency == 256
    assert ProviderSettings(base_url="http://x").max_connections >= settings.worker_concurrency
