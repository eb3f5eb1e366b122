"""The JavaScript client libraries (graphql-ws, Apollo Client, urql) against a live jobql:
each `*.test.mjs` file here runs under `node --test` and must pass."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Live
from tests.clients.node import node_test


@pytest.mark.parametrize("file", ["graphql-ws.test.mjs", "apollo.test.mjs", "urql.test.mjs"])
async def test_client_library(live: Live, file: str) -> None:
    await node_test(file, live.env())
