"""The JavaScript client libraries (graphql-ws, Apollo Client, urql) against a live jobql:
each `*.test.mjs` file here runs under `node --test` and must pass; and graphql-codegen's
types for our operations compile."""

from __future__ import annotations

import shutil

import pytest

from tests.clients.conftest import Live
from tests.clients.node import BIN, CLIENTS, node_test, require_node, run


@pytest.mark.parametrize("file", ["graphql-ws.test.mjs", "apollo.test.mjs", "urql.test.mjs"])
async def test_client_library(live: Live, file: str) -> None:
    await node_test(file, live.env())


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
