"""The GraphiQL page on a browser GET of /v1/graphql, from a real server: every file it
loads is same-origin and served, a Content-Security-Policy allows nothing else, and with
JOBQL_GRAPHIQL off there is no page and no asset."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from jobql.http.graphiql.assets import assets
from jobql.settings import Settings
from tests.api import serve
from tests.backends import Databases
from tests.conftest import TEST_TASKS

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def served(databases: Databases, *, graphiql: bool) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=databases.sqlite(),
        broadcast_url="memory://",
        tasks_file=TEST_TASKS,
        migrate_on_start=False,
        create_dev_key=False,
        graphiql=graphiql,
        shutdown_grace_seconds=0,
        _env_file=None,  # type: ignore[call-arg]
    )
    async with serve(settings) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        yield http


@pytest.fixture
async def client(databases: Databases) -> AsyncIterator[httpx.AsyncClient]:
    async for http in served(databases, graphiql=True):
        yield http


@pytest.fixture
async def client_without_graphiql(databases: Databases) -> AsyncIterator[httpx.AsyncClient]:
    async for http in served(databases, graphiql=False):
        yield http


async def test_the_page_loads_only_same_origin_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/v1/graphql", headers=BROWSER)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    loaded = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert sorted(loaded) == sorted(
        ["data:,"]
        + [
            assets()[name].path
            for name in (
                "react.production.min.js",
                "react-dom.production.min.js",
                "graphiql.min.js",
                "graphql-ws.min.js",
                "graphiql.min.css",
            )
        ]
    )
    for path in [p for p in loaded if p != "data:,"]:
        file = await client.get(httpx.URL(str(page.url)).join(path))
        assert file.status_code == 200, path
    assert "://" not in page.text


async def test_the_policy_allows_this_origin_and_the_page_script_only(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/v1/graphql", headers=BROWSER)
    second = await client.get("/v1/graphql", headers=BROWSER)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in first.headers["content-security-policy"].split(";")
    )
    nonce = re.search(r"'nonce-([^']+)'", policy["script-src"])
    assert nonce is not None
    assert policy == {
        "default-src": "'none'",
        "script-src": f"'self' 'nonce-{nonce[1]}'",
        "style-src": "'self' 'unsafe-inline'",
        "font-src": "'self' data:",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert first.text.count(f'nonce="{nonce[1]}"') == 2  # the inline style and script
    assert nonce[1] not in second.text  # a fresh nonce per response


async def test_the_headers_tab_starts_with_an_authorization_placeholder(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/v1/graphql", headers=BROWSER)).text
    assert '"Authorization": "Bearer <paste your key>"' in page
    assert 'defaultEditorToolsVisibility: "headers"' in page


async def test_no_page_and_no_assets_when_graphiql_is_off(
    client_without_graphiql: httpx.AsyncClient,
) -> None:
    # Strawberry's answer to a GET without a query, as before GraphiQL was vendored.
    page = await client_without_graphiql.get("/v1/graphql", headers=BROWSER)
    assert page.status_code == 404
    assert "graphiql" not in page.text.lower()
    asset = await client_without_graphiql.get("/v1/" + assets()["graphiql.min.js"].path)
    assert asset.status_code == 404
