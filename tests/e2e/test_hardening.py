"""Strawberry's safety limits stay on with the parser and validation caches in front."""

from __future__ import annotations

import pytest

from jobql.settings import Settings
from tests.api import Api, serve


async def errors_of(api: Api, query: str) -> list[str]:
    body = (await api.post(query)).json()
    return [e["message"] for e in body.get("errors", [])]


DEEP = "{ jobs { edges { node { contract { model { name } } } } } }"  # depth 5 (root is 0)
SHALLOW = "{ jobs { edges { node { id } } } }"  # depth 3


async def test_depth_limit(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"max_query_depth": 4})) as server:
        api = await server.client()
        for _ in range(2):  # the second round is answered from the caches
            assert await errors_of(api, SHALLOW) == []
            errors = await errors_of(api, DEEP)
            assert any("exceeds maximum operation depth of 4" in e for e in errors), errors
        await api.aclose()


@pytest.mark.parametrize("attempt", [1, 2])
async def test_alias_limit(api: Api, attempt: int) -> None:
    ok = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(30)) + " }"
    assert await errors_of(api, ok) == []
    too_many = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(31)) + " }"
    errors = await errors_of(api, too_many)
    assert any("aliases" in e for e in errors), errors


async def test_token_limit(api: Api) -> None:
    huge = "{ viewer { " + " ".join(["id"] * 2500) + " } }"
    errors = await errors_of(api, huge)
    assert any("token" in e.lower() for e in errors), errors


async def test_no_field_suggestions(api: Api) -> None:
    errors = await errors_of(api, "{ viewr { id } }")
    assert errors
    assert "Did you mean" not in " ".join(errors)
