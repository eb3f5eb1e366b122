"""Where a WebSocket connection_init payload may carry the API key."""

from __future__ import annotations

from typing import Any

import pytest

from jobql.resolvers.context import authorization_param


@pytest.mark.parametrize(
    "payload",
    [
        {"Authorization": "Bearer k"},
        {"authorization": "Bearer k"},
        {"headers": {"Authorization": "Bearer k"}},
        {"headers": {"authorization": "Bearer k"}},
        {"AUTHORIZATION": "Bearer k"},
        {"Authorization": "Bearer k", "headers": {"Authorization": "Bearer other"}},
        {"Authorization": 7, "headers": {"Authorization": "Bearer k"}},
    ],
)
def test_found(payload: dict[str, Any]) -> None:
    assert authorization_param(payload) == "Bearer k"


@pytest.mark.parametrize(
    "payload",
    [{}, {"headers": "Authorization: Bearer k"}, {"token": "k"}, {"headers": {"X-Key": "k"}}],
)
def test_absent(payload: dict[str, Any]) -> None:
    assert authorization_param(payload) is None
