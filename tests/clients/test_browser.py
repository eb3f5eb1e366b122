"""CORS proven in a real browser: a page on another origin submits and follows a job with
Apollo Client and graphql-ws; a page on an origin not in cors_origins cannot
(browser.test.mjs, in Debian's Chromium through playwright-core). And a page follows a job
with EventSource through a dropped response (event-source.test.mjs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tests.api import serve
from tests.backends import Databases
from tests.clients.conftest import Live, client_settings
from tests.clients.dropping import serve_dropping
from tests.clients.node import CLIENTS, node_test, require_chromium, require_node
from tests.uvicorn_server import uvicorn_serving


@contextlib.asynccontextmanager
async def static_site() -> AsyncIterator[str]:
    """tests/clients/browser on a port of its own: an origin of its own."""
    site = Starlette(routes=[Mount("/", StaticFiles(directory=CLIENTS / "browser", html=True))])
    async with uvicorn_serving(site) as port:
        yield f"http://127.0.0.1:{port}"


async def test_a_browser_app_on_another_origin(databases: Databases) -> None:
    require_node()
    chromium = require_chromium()
    async with static_site() as allowed, static_site() as blocked:
        settings = client_settings(databases.sqlite(), cors_origins=[allowed])
        async with serve(settings) as server:
            live = Live(server, await server.new_key("browser"))
            env = {
                **live.env(origin=allowed),
                "JOBQL_CHROMIUM": str(chromium),
                "JOBQL_ALLOWED_PAGE": f"{allowed}/index.html",
                "JOBQL_BLOCKED_PAGE": f"{blocked}/index.html",
            }
            await node_test("browser.test.mjs", env)


async def test_event_source_through_a_dropped_response(databases: Databases) -> None:
    """A page on another origin opens a job's eventsUrl with EventSource; the server ends
    the first response after 3 events and the browser resumes with Last-Event-ID."""
    require_node()
    chromium = require_chromium()
    async with static_site() as allowed:
        settings = client_settings(databases.sqlite(), cors_origins=[allowed])
        async with serve_dropping(settings) as (server, dropping):
            live = Live(server, await server.new_key("event source"))
            env = {
                **live.env(origin=allowed),
                "JOBQL_CHROMIUM": str(chromium),
                "JOBQL_EVENTS_PAGE": f"{allowed}/events.html",
            }
            await node_test("event-source.test.mjs", env)
            assert dropping.dropped == 1
            assert dropping.resumed == ["3"]  # the browser's reconnect sent Last-Event-ID
