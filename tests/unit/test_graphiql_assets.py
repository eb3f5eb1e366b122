"""The GraphiQL asset route under a real uvicorn: only the files versions.json lists, each
under its hash, with its content type and a year's cache; nothing else, however asked."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from jobql.http.graphiql.assets import CACHE_FOREVER, asset_route, assets
from tests.uvicorn_server import uvicorn_serving

CONTENT_TYPES = {
    "graphiql.min.js": "text/javascript; charset=utf-8",
    "react.production.min.js": "text/javascript; charset=utf-8",
    "react-dom.production.min.js": "text/javascript; charset=utf-8",
    "graphql-ws.min.js": "text/javascript; charset=utf-8",
    "graphiql.min.css": "text/css; charset=utf-8",
    "LICENSES/graphiql.txt": "text/plain; charset=utf-8",
}


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with uvicorn_serving(Starlette(routes=[asset_route("/v1/graphiql", True)])) as serving:
        yield serving


@pytest.fixture
async def client(port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        yield http


def url(name: str) -> str:
    return f"/v1/{assets()[name].path}"


async def raw_get(port: int, target: str) -> int:
    """The status of a GET sent byte for byte (no client tidies the path first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_every_listed_file_is_served_as_vendored(client: httpx.AsyncClient) -> None:
    for name, content_type in CONTENT_TYPES.items():
        response = await client.get(url(name))
        assert response.status_code == 200, name
        assert response.headers["content-type"] == content_type
        assert response.headers["cache-control"] == CACHE_FOREVER
        assert response.headers["x-content-type-options"] == "nosniff"
        assert hashlib.sha256(response.content).hexdigest() == assets()[name].sha256


async def test_the_page_loads_under_the_hash_of_each_file(client: httpx.AsyncClient) -> None:
    for asset in assets().values():
        assert asset.path == f"graphiql/{asset.sha256[:16]}/{asset.name}"
    stale = url("graphiql.min.js").replace(assets()["graphiql.min.js"].digest, "0" * 16)
    assert (await client.get(stale)).status_code == 404


async def test_unknown_files_are_not_found(client: httpx.AsyncClient) -> None:
    digest = assets()["graphiql.min.js"].digest
    for name in ("nope.js", "versions.json", "graphiql.min.js.map", "LICENSES", "page.py"):
        response = await client.get(f"/v1/graphiql/{digest}/{name}")
        assert response.status_code == 404, name
    assert (await client.post(url("graphiql.min.js"))).status_code == 405


async def test_paths_out_of_the_folder_are_refused(port: int) -> None:
    digest = assets()["graphiql.min.js"].digest
    # Each names a real file beside or above the assets folder.
    for target in (
        f"/v1/graphiql/{digest}/../page.py",
        f"/v1/graphiql/{digest}/..%2Fpage.py",
        f"/v1/graphiql/{digest}/%2e%2e/%2e%2e/graphql.py",
        f"/v1/graphiql/{digest}/LICENSES/../../page.py",
        f"/v1/graphiql/{digest}/LICENSES/..%5C..%5Cpage.py",
        f"/v1/graphiql/{digest}/../versions.json",
        f"/v1/graphiql/{digest}//etc/passwd",
        f"/v1/graphiql/{digest}/%2Fetc%2Fpasswd",
    ):
        assert await raw_get(port, target) == 404, target
    assert await raw_get(port, url("LICENSES/react.txt")) == 200


async def test_nothing_is_served_when_graphiql_is_off() -> None:
    async with (
        uvicorn_serving(Starlette(routes=[asset_route("/v1/graphiql", False)])) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        for name in CONTENT_TYPES:
            assert (await client.get(url(name))).status_code == 404
