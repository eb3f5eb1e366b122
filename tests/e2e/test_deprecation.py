"""A version being retired says so on every HTTP answer (RFC 9745 Deprecation, RFC 8594
Sunset, Link to the migration guide), readable cross-origin; other versions say nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from jobql.app import create_app
from jobql.runtime import ConfigError
from jobql.settings import ApiDeprecation, Settings
from tests.api import serve
from tests.backends import Databases
from tests.conftest import fast_settings

GUIDE = "https://docs.example.com/jobql/migrating-to-v2"
DEPRECATED = datetime(2027, 1, 1, tzinfo=UTC)
SUNSET = datetime(2027, 7, 1, 12, 30, tzinfo=UTC)
ORIGIN = "http://localhost:5173"


def retiring_v1(databases: Databases) -> Settings:
    return fast_settings(
        databases.sqlite(),
        "memory://",
        cors_origins=[ORIGIN],
        api_deprecations={
            "v1": ApiDeprecation(deprecated_at=DEPRECATED, sunset_at=SUNSET, link=GUIDE)
        },
    )


async def test_a_retiring_version_says_when_and_where_to_go(databases: Databases) -> None:
    async with serve(retiring_v1(databases)) as server:
        api = await server.client()
        answered = await api.post("{ tasks { name } }", headers={"Origin": ORIGIN})
        bad_key = await api.post("{ tasks { name } }", headers={"Authorization": "Bearer no"})
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            health = await http.get("/healthz")
        await api.aclose()
    assert answered.status_code == 200
    # The same notice on every answer of the version, a refused one too.
    for response in (answered, bad_key):
        assert response.headers["deprecation"] == f"@{int(DEPRECATED.timestamp())}"
        assert response.headers["sunset"] == "Thu, 01 Jul 2027 12:30:00 GMT"
        assert response.headers.get_list("link") == [
            f'<{GUIDE}>; rel="deprecation"; type="text/html"',
            f'<{GUIDE}>; rel="sunset"; type="text/html"',
        ]
    assert bad_key.status_code == 401
    # A browser app may read them.
    exposed = {
        h.strip().lower() for h in answered.headers["access-control-expose-headers"].split(",")
    }
    assert {"deprecation", "sunset", "link"} <= exposed
    # Not on what is not that version.
    assert "deprecation" not in health.headers
    assert "sunset" not in health.headers


async def test_without_a_notice_nothing_is_said(databases: Databases) -> None:
    async with serve(fast_settings(databases.sqlite(), "memory://")) as server:
        api = await server.client()
        answered = await api.post("{ tasks { name } }")
        await api.aclose()
    assert answered.status_code == 200
    assert "deprecation" not in answered.headers
    assert "sunset" not in answered.headers
    assert "link" not in answered.headers


def test_a_notice_for_an_unknown_version_is_refused_at_start(databases: Databases) -> None:
    settings = fast_settings(
        databases.sqlite(),
        "memory://",
        api_deprecations={"v0": ApiDeprecation(deprecated_at=DEPRECATED)},
    )
    with pytest.raises(ConfigError, match=r"unknown API versions \['v0'\]"):
        create_app(settings)


def test_the_notice_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "JOBQL_API_DEPRECATIONS",
        '{"v1": {"deprecated_at": "2027-01-01T00:00:00Z", "link": "' + GUIDE + '"}}',
    )
    notice = Settings(_env_file=None).api_deprecations["v1"]  # type: ignore[call-arg]
    assert notice.deprecated_at == DEPRECATED
    assert notice.sunset_at is None
    assert notice.link == GUIDE
