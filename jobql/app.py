"""create_app(settings): the Starlette application; its lifespan owns the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import strawberry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from jobql.http.body_limit import BodyLimitMiddleware
from jobql.http.connections import ConnectionRegistry
from jobql.http.cors import cors_middleware
from jobql.http.deprecation import DeprecationMiddleware
from jobql.http.event_source import event_source_endpoint
from jobql.http.graphiql import asset_route
from jobql.http.graphql import GraphQLView
from jobql.http.request_id import RequestIdMiddleware
from jobql.http.response_limit import ResponseLimitMiddleware
from jobql.providers.registry import ProviderRegistry
from jobql.runtime import (
    Runtime,
    check_api_versions,
    check_profile,
    freeze_long_lived_objects,
    open_runtime,
)
from jobql.schema.exports import possible_types_json
from jobql.schema.hardening import SchemaOptions
from jobql.schema.registry import VERSIONS
from jobql.services.container import open_services
from jobql.settings import Settings

log = logging.getLogger(__name__)

# /readyz answers within about this long, even when a server does not answer at all.
READY_CHECK_SECONDS = 2.0


async def _within(seconds: float, check: Awaitable[bool]) -> bool:
    try:
        async with asyncio.timeout(seconds):
            return await check
    except TimeoutError:
        return False


class _Endpoint:
    """Routes the GraphQL path to the view built at startup (it needs the runtime)."""

    def __init__(self) -> None:
        self.view: GraphQLView | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.view is None:  # pragma: no cover - only before startup completes
            await JSONResponse({"error": "starting"}, status_code=503)(scope, receive, send)
            return
        await self.view(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, providers: ProviderRegistry | None = None
) -> Starlette:
    settings = settings or Settings()
    check_profile(settings)
    check_api_versions(settings)
    options = SchemaOptions.from_settings(settings)
    schemas = {api.name: api.build(options) for api in VERSIONS}
    endpoints = {api.name: _Endpoint() for api in VERSIONS}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            open_runtime(
                settings, with_worker=settings.inline_worker, providers=providers
            ) as runtime,
            open_services(runtime) as services,
        ):
            app.state.runtime = runtime
            app.state.services = services
            # One registry of open WebSockets for all versions: the per-key caps count
            # connections and subscriptions on every endpoint together.
            connections = ConnectionRegistry()
            services.keys.watch(connections)
            for name, endpoint in endpoints.items():
                endpoint.view = GraphQLView(schemas[name], services, connections)
            if settings.create_dev_key and not await services.keys.any_key_exists():
                _, key = await services.keys.create("development")
                announce_dev_key(key, settings)
            yield

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        # Both checks reach their server (a process with no open subscription too), at
        # once and each within a bound, so a dead server answers 503 quickly.
        database, bus = await asyncio.gather(
            _within(READY_CHECK_SECONDS, runtime.database_ok()), runtime.bus.ready()
        )
        checks = {"database": database, "eventBus": bus}
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "degraded", "checks": checks},
            status_code=200 if ok else 503,
        )

    async def metrics(request: Request) -> Response:
        if (refused := metrics_refusal(request, settings)) is not None:
            return refused
        runtime: Runtime = request.app.state.runtime
        body, content_type = await runtime.render_metrics()
        return Response(body, media_type=content_type)

    routes: list[BaseRoute] = []
    for api in VERSIONS:
        routes += [
            Route(api.path, endpoints[api.name], methods=["GET", "POST"]),
            WebSocketRoute(api.path, endpoints[api.name]),
            asset_route(f"/{api.name}/graphiql", settings.graphiql),
            Route(f"/{api.name}/possible-types.json", _possible_types(schemas[api.name])),
            # One job's events for a browser's EventSource (a stream ticket instead of a key).
            Route(
                f"/{api.name}/jobs/{{id:path}}/events",
                event_source_endpoint(api.name, endpoints[api.name]),
                methods=["GET"],
            ),
        ]
    routes += [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # Outermost, so refusals by the middlewares below (413, 400) carry the CORS
            # headers too: a browser hides the body of an answer without them.
            cors_middleware(settings),
            Middleware(DeprecationMiddleware, notices=settings.api_deprecations),
            Middleware(RequestIdMiddleware),
            Middleware(ResponseLimitMiddleware, max_bytes=settings.max_response_bytes),
            Middleware(
                BodyLimitMiddleware,
                max_bytes=settings.max_body_bytes,
                max_query_tokens=settings.max_query_tokens,
            ),
        ],
    )


def _possible_types(schema: strawberry.Schema) -> Callable[[Request], Awaitable[Response]]:
    body = possible_types_json(schema).encode()

    async def serve(request: Request) -> Response:
        return Response(
            body, media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
        )

    return serve


def metrics_refusal(request: Request, settings: Settings) -> Response | None:
    """None when the request may read /metrics: with a bearer token when one is set, else
    only outside the production profile (there /metrics does not exist without one)."""
    token = settings.metrics_token
    if token is None:
        if settings.profile == "production":
            return JSONResponse({"error": "not found"}, status_code=404)
        return None
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        sent.strip().encode(), token.get_secret_value().encode()
    ):
        return None
    return JSONResponse(
        {"error": "unauthorized"},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
    )


def create_app_in_process() -> Starlette:
    """The app of one of `jobql serve --workers N`'s processes (settings from the
    environment, as the parent set it)."""
    from jobql.observability.logging import configure_logging

    settings = Settings()
    configure_logging(
        settings.log_level, json=settings.log_format == "json", include_content=settings.log_content
    )
    app = create_app(settings)
    freeze_long_lived_objects()
    return app


def announce_dev_key(key: str, settings: Settings) -> None:
    url = f"http://{settings.host}:{settings.port}/v1/graphql"
    print(
        f"\njobql: created a development API key (shown once): {key}\n"
        f"jobql: open {url} and, under Headers, paste "
        f'{{"Authorization": "Bearer {key}"}}\n',
        file=sys.stderr,
        flush=True,
    )
