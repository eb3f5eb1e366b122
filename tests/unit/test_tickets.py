"""Stream tickets (jobql/services/tickets.py): what they bind, when they expire, which
secret signs them."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from jobql.services.auth import Caller
from jobql.services.tickets import (
    TICKET_SECONDS,
    Claims,
    Refusal,
    TicketSigner,
    TicketsUnavailable,
    events_url,
    ticket_secret,
)
from jobql.settings import Settings

JOB = "0b6c3a2e-6a57-4c1f-9a57-0d2c3e4f5a6b"
OTHER_JOB = "9d1e2f3a-6a57-4c1f-9a57-0d2c3e4f5a6b"
NOW = 1_800_000_000.0
CLAIMS = Claims(principal_id="p-1", key_id="k-1", expires_at=int(NOW) + TICKET_SECONDS)
SIGNER = TicketSigner(b"s" * 32)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_a_ticket_verifies_for_its_job_and_version_until_it_expires() -> None:
    ticket = SIGNER.sign("v1", JOB, CLAIMS)
    assert SIGNER.verify(ticket, "v1", JOB, NOW) == CLAIMS
    assert SIGNER.verify(ticket, "v1", JOB, CLAIMS.expires_at - 1) == CLAIMS
    assert SIGNER.verify(ticket, "v1", JOB, CLAIMS.expires_at) is Refusal.EXPIRED


def test_a_ticket_grants_nothing_else() -> None:
    ticket = SIGNER.sign("v1", JOB, CLAIMS)
    assert SIGNER.verify(ticket, "v1", OTHER_JOB, NOW) is Refusal.INVALID
    assert SIGNER.verify(ticket, "v2", JOB, NOW) is Refusal.INVALID
    assert TicketSigner(b"t" * 32).verify(ticket, "v1", JOB, NOW) is Refusal.INVALID


@pytest.mark.parametrize("part", [0, 1, 2, 3])
def test_changing_any_part_of_a_ticket_voids_it(part: int) -> None:
    parts = SIGNER.sign("v1", JOB, CLAIMS).split(".")
    # A later expiry, another principal or key, another MAC: none is believed.
    if part == 0:
        parts[0] = str(int(parts[0]) + 3600)
    else:
        parts[part] = ("y" if parts[part].startswith("x") else "x") + parts[part][1:]
    assert SIGNER.verify(".".join(parts), "v1", JOB, NOW) is Refusal.INVALID


@pytest.mark.parametrize(
    "ticket", ["", "abc", "1.2.3", "x.p.k.mac", "1..k.mac", "1.p.k.mac.more", "é.p.k.m", "9" * 400]
)
def test_malformed_tickets(ticket: str) -> None:
    assert SIGNER.verify(ticket, "v1", JOB, NOW) is Refusal.MALFORMED


def test_the_secret_comes_from_the_setting_wherever_it_is_set() -> None:
    for values in [
        {},
        {"profile": "production", "cors_origins": ["https://app.example"]},
        {"database_url": "postgresql+asyncpg://db/jobql"},
    ]:
        configured = settings(stream_ticket_secret=SecretStr("shared secret"), **values)
        assert ticket_secret(configured) == b"shared secret"


def test_without_the_setting_only_a_single_process_server_issues_tickets() -> None:
    # SQLite in development: a random secret of this process, the same on every call.
    embedded = ticket_secret(settings())
    assert embedded is not None
    assert len(embedded) == 32
    assert ticket_secret(settings()) == embedded
    # PostgreSQL may have several processes; production must be configured on purpose.
    assert ticket_secret(settings(database_url="postgresql+asyncpg://db/jobql")) is None
    production = settings(profile="production", cors_origins=["https://app.example"])
    assert ticket_secret(production) is None
    with pytest.raises(TicketsUnavailable, match="JOBQL_STREAM_TICKET_SECRET"):
        events_url(production, "v1", JOB, Caller("p-1", "me", "standard", key_id="k-1"))


def test_the_events_url_is_relative_and_carries_a_ticket_for_the_caller() -> None:
    configured = settings(stream_ticket_secret=SecretStr("shared secret"))
    caller = Caller("p-1", "me", "standard", key_id="k-1")
    url = urlsplit(events_url(configured, "v1", JOB, caller, now=NOW))
    assert (url.scheme, url.netloc, url.path) == ("", "", f"/v1/jobs/{JOB}/events")
    [ticket] = parse_qs(url.query)["ticket"]
    signer = TicketSigner(b"shared secret")
    assert signer.verify(ticket, "v1", JOB, NOW) == CLAIMS
    assert signer.verify(ticket, "v1", JOB, NOW + TICKET_SECONDS) is Refusal.EXPIRED


def test_a_v2_global_id_is_escaped_in_the_path_and_bound_as_sent() -> None:
    configured = settings(stream_ticket_secret=SecretStr("shared secret"))
    caller = Caller("p-1", "me", "standard", key_id="k-1")
    global_id = "VjJKb2I6ab+/cd=="
    url = urlsplit(events_url(configured, "v2", global_id, caller, now=NOW))
    assert url.path == "/v2/jobs/VjJKb2I6ab%2B%2Fcd%3D%3D/events"
    [ticket] = parse_qs(url.query)["ticket"]
    assert TicketSigner(b"shared secret").verify(ticket, "v2", global_id, NOW) == CLAIMS
