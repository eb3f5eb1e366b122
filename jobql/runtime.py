"""Build and tear down everything a process needs: engine, bus, tasks, providers, services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from jobql.events.bus import BroadcastBus
from jobql.observability.metrics import Metrics
from jobql.providers.registry import ProviderRegistry
from jobql.providers.simulated import SimulatedProvider
from jobql.repositories.database import create_engine, create_session_factory
from jobql.repositories.jobs import JobRepository
from jobql.repositories.migrate import upgrade
from jobql.resolvers.context import Services
from jobql.services.auth import KeyService
from jobql.services.jobs import JobService
from jobql.services.ratelimit import RateLimiter
from jobql.services.streams import StreamService
from jobql.services.viewer import ViewerService
from jobql.settings import Settings
from jobql.tasks import TaskRegistry, load_tasks
from jobql.worker import Worker


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: BroadcastBus
    tasks: TaskRegistry
    providers: ProviderRegistry
    services: Services
    worker: Worker | None
    metrics: Metrics

    async def render_metrics(self) -> tuple[bytes, str]:
        async with self.sessions() as session:
            self.metrics.set_queue_depths(await JobRepository(session).count_by_status())
        return self.metrics.render()

    async def database_ok(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


def default_providers() -> ProviderRegistry:
    return ProviderRegistry([SimulatedProvider()])


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    with_worker: bool,
    providers: ProviderRegistry | None = None,
) -> AsyncIterator[Runtime]:
    tasks = load_tasks(settings.tasks_file)
    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await upgrade(engine)
        sessions = create_session_factory(engine)
        bus = BroadcastBus(settings.broadcast_url)
        await bus.connect()
        providers = providers or default_providers()
        rate_limiter = RateLimiter(settings.redis_url)
        metrics = Metrics(tasks={t.name for t in tasks.all()}, providers=providers.names())
        services = Services(
            settings=settings,
            tasks=tasks,
            keys=KeyService(sessions),
            jobs=JobService(
                settings,
                sessions=sessions,
                bus=bus,
                tasks=tasks,
                rate_limiter=rate_limiter,
                metrics=metrics,
            ),
            streams=StreamService(
                sessions=sessions,
                bus=bus,
                heartbeat_seconds=settings.heartbeat_seconds,
                metrics=metrics,
            ),
            viewer=ViewerService(settings, sessions),
        )
        worker = None
        if with_worker:
            worker = Worker(
                settings,
                sessions=sessions,
                bus=bus,
                tasks=tasks,
                providers=providers,
                metrics=metrics,
            )
            await worker.start()
        try:
            yield Runtime(
                settings, engine, sessions, bus, tasks, providers, services, worker, metrics
            )
        finally:
            if worker is not None:
                await worker.stop()
            await bus.disconnect()
            await rate_limiter.aclose()
            await providers.aclose()
    finally:
        await engine.dispose()
