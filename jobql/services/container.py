"""The services the API serves GraphQL with, built on a process's runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from jobql.runtime import Runtime
from jobql.services.auth import FailedLookups, KeyService
from jobql.services.jobs import JobService
from jobql.services.ratelimit import RateLimiter
from jobql.services.run import RunService
from jobql.services.streams import StreamService
from jobql.services.viewer import ViewerService
from jobql.settings import Settings
from jobql.tasks import TaskRegistry


@dataclass(frozen=True)
class Services:
    settings: Settings
    tasks: TaskRegistry
    keys: KeyService
    jobs: JobService
    streams: StreamService
    viewer: ViewerService
    # runJob: submit and follow in one stream (built from jobs and streams).
    run: RunService = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", RunService(jobs=self.jobs, streams=self.streams))


@contextlib.asynccontextmanager
async def open_services(runtime: Runtime) -> AsyncIterator[Services]:
    settings = runtime.settings
    rate_limiter = RateLimiter(
        settings.redis_url,
        on_redis_error=settings.rate_limit_on_redis_error,
        metrics=runtime.metrics,
    )
    keys = KeyService(
        runtime.sessions,
        bus=runtime.bus,
        shared_bus=not settings.broadcast_url.startswith("memory"),
        cache_seconds=settings.key_cache_seconds,
        fallback_cache_seconds=settings.key_cache_fallback_seconds,
        failed_lookups=FailedLookups(settings.failed_auth_burst, settings.failed_auth_per_second),
    )
    # Revocations published by any process (or `jobql keys revoke`) reach this one.
    follow_keys = asyncio.create_task(keys.run(), name="jobql-key-revocations")
    services: Services | None = None
    try:
        services = Services(
            settings=settings,
            tasks=runtime.tasks,
            keys=keys,
            jobs=JobService(
                settings,
                store=runtime.store,
                bus=runtime.bus,
                tasks=runtime.tasks,
                rate_limiter=rate_limiter,
                metrics=runtime.metrics,
            ),
            streams=StreamService(
                store=runtime.store,
                bus=runtime.bus,
                heartbeat_seconds=settings.heartbeat_seconds,
                metrics=runtime.metrics,
            ),
            viewer=ViewerService(settings, runtime.sessions),
        )
        yield services
    finally:
        if services is not None:
            # Jobs whose clients just left are cancelled before the database goes away.
            await services.run.aclose()
        follow_keys.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follow_keys
        await rate_limiter.aclose()
