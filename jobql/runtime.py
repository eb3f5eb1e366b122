"""Build and tear down what every process needs: engine, job store, bus, tasks, providers,
and the worker where jobs run here. The API adds its services on top (services/container.py);
a worker process imports nothing of the web layer."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from jobql.events.bus import BroadcastBus
from jobql.observability.metrics import BusStats, Metrics
from jobql.outages import is_outage
from jobql.providers.anthropic import AnthropicProvider
from jobql.providers.base import Provider
from jobql.providers.openai_compat import OpenAICompatibleProvider
from jobql.providers.registry import ProviderRegistry
from jobql.providers.simulated import SimulatedProvider
from jobql.repositories.database import (
    create_engine,
    create_read_session_factory,
    create_session_factory,
)
from jobql.repositories.jobs import SqlJobStore
from jobql.repositories.migrate import upgrade
from jobql.settings import Settings
from jobql.tasks import TaskRegistry, load_tasks
from jobql.worker import Worker


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: SqlJobStore
    bus: BroadcastBus
    tasks: TaskRegistry
    providers: ProviderRegistry
    worker: Worker | None
    metrics: Metrics

    async def render_metrics(self) -> tuple[bytes, str]:
        """The metrics, also while the database is down (metrics matter most then): the
        queue depths keep their last values until it answers again."""
        try:
            self.metrics.set_queue_depths(await self.store.count_by_status())
        except Exception as exc:
            if not is_outage(exc):
                raise
        return self.metrics.render()

    async def database_ok(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


def build_providers(
    settings: Settings, simulated: SimulatedProvider | None = None
) -> ProviderRegistry:
    """The built-in simulated provider plus every one configured in ``settings.providers``."""
    if SimulatedProvider.name in settings.providers:
        raise ConfigError(f"provider name {SimulatedProvider.name!r} is the built-in one's")
    providers: list[Provider] = [simulated or SimulatedProvider()]
    for name, config in settings.providers.items():
        kind = AnthropicProvider if config.kind == "anthropic" else OpenAICompatibleProvider
        providers.append(kind(name, config))
    return ProviderRegistry(providers)


def provider_names(settings: Settings, providers: ProviderRegistry | None = None) -> set[str]:
    if providers is not None:
        return set(providers.names())
    return {SimulatedProvider.name, *settings.providers}


def check_configuration(settings: Settings, *, with_worker: bool, serving: bool = False) -> None:
    """What can be checked before a process starts serving; raises ConfigError."""
    if SimulatedProvider.name in settings.providers:
        raise ConfigError(f"provider name {SimulatedProvider.name!r} is the built-in one's")
    if serving:
        check_profile(settings)
        check_api_versions(settings)
    if with_worker:
        check_task_providers(load_tasks(settings.tasks_file), provider_names(settings))


def check_api_versions(settings: Settings) -> None:
    """JOBQL_API_DEPRECATIONS names versions this server serves."""
    from jobql.schema.registry import VERSIONS

    known = [api.name for api in VERSIONS]
    unknown = sorted(set(settings.api_deprecations) - set(known))
    if unknown:
        raise ConfigError(
            f"JOBQL_API_DEPRECATIONS names unknown API versions {unknown} "
            f"(this server serves {', '.join(known)})"
        )


def check_profile(settings: Settings) -> None:
    """What the production profile requires of an API process; raises ConfigError."""
    if settings.profile == "production" and not settings.allowed_origins:
        raise ConfigError(
            "the production profile needs the browser origins allowed to call the API: "
            'set JOBQL_CORS_ORIGINS (a JSON list, e.g. ["https://app.example.com"]; '
            "JOBQL_WS_ALLOWED_ORIGINS, its older name, works too)"
        )


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says what to change."""


def check_task_providers(tasks: TaskRegistry, available: set[str]) -> None:
    """Every task's provider must exist where jobs run, or its jobs could only fail."""
    missing = sorted(
        f"{task.api_version}.{task.name} uses {task.model.provider!r}"
        for task in tasks.all()
        if task.model.provider not in available
    )
    if missing:
        raise ConfigError(
            "tasks refer to providers that are not configured ("
            + "; ".join(missing)
            + "): add them to JOBQL_PROVIDERS (see README, Providers)"
        )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    with_worker: bool,
    providers: ProviderRegistry | None = None,
) -> AsyncIterator[Runtime]:
    tasks = load_tasks(settings.tasks_file)
    if with_worker:  # before anything is opened that would need closing
        check_task_providers(tasks, provider_names(settings, providers))
    engine = create_engine(settings.database_url, hide_parameters=not settings.log_content)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        sessions = create_session_factory(engine)
        store = SqlJobStore(sessions, create_read_session_factory(engine))
        bus = BroadcastBus(settings.broadcast_url)
        await bus.connect()
        providers = providers or build_providers(settings)
        metrics = Metrics(tasks={t.name for t in tasks.all()}, providers=providers.names())
        metrics.watch_event_bus(lambda: BusStats(bus.healthy, bus.reconnects, bus.publish_failures))
        worker = None
        if with_worker:
            worker = Worker(
                settings,
                store=store,
                bus=bus,
                tasks=tasks,
                providers=providers,
                metrics=metrics,
            )
            await worker.start()
        try:
            yield Runtime(settings, engine, sessions, store, bus, tasks, providers, worker, metrics)
        finally:
            if worker is not None:
                await worker.stop()
            await bus.disconnect()
            await providers.aclose()
    finally:
        await engine.dispose()


def freeze_long_lived_objects() -> None:
    """What exists once the process is set up (modules, the schema, the ORM mappers, ...)
    lives as long as the process: keep it out of the garbage collector's full passes, which
    otherwise walk all of it and stall the event loop (60 ms here, a latency spike)."""
    gc.collect()
    gc.freeze()
