"""One browser-origin allowlist for CORS and WebSocket handshakes, under two names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobql.origins import normalize_origins
from jobql.runtime import ConfigError, check_profile
from jobql.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_none_by_default() -> None:
    assert settings().allowed_origins == []


def test_both_names_count_once_each_in_browser_form() -> None:
    both = settings(
        cors_origins=["http://localhost:5173", "https://App.example.com:443"],
        ws_allowed_origins=["https://app.example.com", "https://admin.example.com"],
    )
    assert both.allowed_origins == [
        "http://localhost:5173",
        "https://admin.example.com",
        "https://app.example.com",
    ]


def test_the_older_name_alone_still_works() -> None:
    assert settings(ws_allowed_origins=["https://app.example"]).allowed_origins == [
        "https://app.example"
    ]


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQL_CORS_ORIGINS", '["http://localhost:5173"]')
    monkeypatch.setenv("JOBQL_WS_ALLOWED_ORIGINS", '["https://app.example"]')
    monkeypatch.setenv("JOBQL_CORS_ALLOW_CREDENTIALS", "true")
    from_env = settings()
    assert from_env.allowed_origins == ["http://localhost:5173", "https://app.example"]
    assert from_env.cors_allow_credentials is True


@pytest.mark.parametrize("value", ["app.example.com", "https://app.example/path", "null"])
def test_a_value_that_is_not_an_origin_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match=r"JOBQL_CORS_ORIGINS.*Invalid origin"):
        settings(cors_origins=[value])


def test_credentials_never_with_a_wildcard() -> None:
    assert settings(cors_origins=["*"]).allowed_origins == ["*"]
    with pytest.raises(ValidationError, match="JOBQL_CORS_ALLOW_CREDENTIALS"):
        settings(cors_origins=["*"], cors_allow_credentials=True)
    with pytest.raises(ValidationError, match="JOBQL_CORS_ALLOW_CREDENTIALS"):
        settings(ws_allowed_origins=["*"], cors_allow_credentials=True)


def test_the_production_profile_takes_either_name() -> None:
    with pytest.raises(ConfigError, match="JOBQL_CORS_ORIGINS"):
        check_profile(settings(profile="production"))
    check_profile(settings(profile="production", cors_origins=["https://app.example"]))
    check_profile(settings(profile="production", ws_allowed_origins=["https://app.example"]))


@pytest.mark.parametrize(
    "value",
    [
        "http://localhost:5173",
        "https://App.Example.com:443",
        "HTTP://example.com:80",
        "https://example.com:8443/",
        "http://[::1]:8000",
        "*",
    ],
)
def test_the_same_form_as_the_websocket_origin_check(value: str) -> None:
    """jobql.origins (which Settings uses, so worker processes need no web framework) and
    Strawberry's handshake check agree on every origin."""
    from strawberry.http.websocket_origin import normalize_allowed_origins

    assert normalize_origins([value]) == sorted(normalize_allowed_origins([value]))


@pytest.mark.parametrize(
    "value", ["app.example.com", "https://app.example/path", "null", "https://u@h.example", ""]
)
def test_both_refuse_what_is_not_an_origin(value: str) -> None:
    from strawberry.http.websocket_origin import normalize_allowed_origins

    with pytest.raises(ValueError, match="Invalid origin"):
        normalize_origins([value])
    with pytest.raises(ValueError, match="Invalid origin"):
        normalize_allowed_origins([value])
