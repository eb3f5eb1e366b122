"""The JavaScript client libraries (graphql-ws, Apollo Client, urql, graphql-sse) against a
live jobql, over WebSockets and over plain HTTP: each `*.test.mjs` file here runs under
`node --test` and must pass; and graphql-codegen's types for our operations compile."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest

from tests.backends import Databases
from tests.clients.conftest import DEV_ORIGIN, Live, client_settings
from tests.clients.dropping import DropAfter, serve_dropping
from tests.clients.node import BIN, CLIENTS, node_test, require_node, run


@pytest.mark.parametrize("file", ["graphql-ws.test.mjs", "apollo.test.mjs", "urql.test.mjs"])
async def test_client_library(live: Live, file: str) -> None:
    await node_test(file, live.env())


@pytest.fixture
async def cutting(databases: Databases) -> AsyncIterator[tuple[Live, DropAfter]]:
    """A live jobql whose SSE responses end early when their URL says dropAfter=N."""
    async with serve_dropping(client_settings(databases.sqlite(), [DEV_ORIGIN])) as (
        server,
        dropping,
    ):
        yield Live(server, await server.new_key("streams")), dropping


@pytest.mark.parametrize("file", ["graphql-sse.test.mjs", "http-apollo.test.mjs"])
async def test_streaming_without_websockets(cutting: tuple[Live, DropAfter], file: str) -> None:
    """graphql-sse and Apollo Client with only an HttpLink follow jobs over plain HTTP."""
    live, dropping = cutting
    await node_test(file, live.env())
    if file == "graphql-sse.test.mjs":
        assert dropping.dropped == 1  # the cut the retry test recovers from happened


async def test_codegen_types_compile() -> None:
    """graphql-codegen types operations.graphql from the checked-in SDL, and typed.ts (which
    uses the typed documents, and expects two type errors) compiles under tsc --strict."""
    require_node()
    shutil.rmtree(CLIENTS / "generated", ignore_errors=True)
    generated = await run(str(BIN / "graphql-codegen"), "--config", "codegen.yml")
    assert generated.code == 0, generated.output
    assert (CLIENTS / "generated" / "graphql.ts").exists()
    compiled = await run(str(BIN / "tsc"), "-p", "tsconfig.json")
    assert compiled.code == 0, compiled.output
