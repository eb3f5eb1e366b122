"""Stream tickets: short-lived, single-job credentials for `GET /<version>/jobs/{id}/events`,
which a browser's EventSource opens without an Authorization header.

A ticket is ``<expires>.<principal id>.<key id>.<mac>``: an HMAC-SHA256, under the server's
ticket secret, over the API version, the job id as it appears in the URL, the principal, the
API key that asked for it and the expiry (Unix seconds). It grants reading that one job's
events until it expires, while that key is active; nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, urlencode

from jobql.outages import ServiceUnavailableError, is_outage
from jobql.repositories.principals import PrincipalRepository
from jobql.services.auth import Caller, KeyService, caller_of
from jobql.settings import Settings

# How long a ticket stays good. An open stream is not cut when its ticket expires: the
# ticket is checked when a connection is made (EventSource reconnects need a live one).
TICKET_SECONDS = 600
# Domain separation: this secret signs nothing else.
_CONTEXT = b"jobql stream ticket v1"
# Used when no secret is configured and one process serves the database (SQLite): tickets
# die with the process, which a restart of a single-process server makes no worse.
_PROCESS_SECRET = secrets.token_bytes(32)
_MAX_TICKET_LENGTH = 300

UNCONFIGURED = (
    "Stream tickets need JOBQL_STREAM_TICKET_SECRET on this server (the same value in every "
    "API process); until it is set, open the events URL with an Authorization header."
)


class TicketsUnavailable(Exception):
    """No ticket secret is configured where one is required."""

    def __init__(self) -> None:
        super().__init__(UNCONFIGURED)


def ticket_secret(settings: Settings) -> bytes | None:
    """The secret tickets are signed with: JOBQL_STREAM_TICKET_SECRET, else, for a
    single-process server (SQLite, development profile), a random one of this process;
    None when tickets cannot be issued (PostgreSQL or the production profile without one:
    several processes must share it, and a per-process secret would fail their tickets)."""
    configured = settings.stream_ticket_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    if settings.profile == "development" and settings.database_url.startswith("sqlite"):
        return _PROCESS_SECRET
    return None


class Refusal(Enum):
    """Why a ticket was refused (the route answers 401 for each)."""

    MALFORMED = "malformed"
    EXPIRED = "expired"
    INVALID = "invalid"  # tampered, or for another job, version or server secret


@dataclass(frozen=True)
class Claims:
    principal_id: str
    key_id: str
    expires_at: int


@dataclass(frozen=True)
class TicketSigner:
    """Signs and checks tickets; pure (the clock is passed in)."""

    secret: bytes

    def _mac(self, version: str, job_id: str, claims: Claims) -> str:
        message = b"\x00".join(
            [
                _CONTEXT,
                version.encode(),
                job_id.encode(),
                claims.principal_id.encode(),
                claims.key_id.encode(),
                str(claims.expires_at).encode(),
            ]
        )
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, version: str, job_id: str, claims: Claims) -> str:
        mac = self._mac(version, job_id, claims)
        return f"{claims.expires_at}.{claims.principal_id}.{claims.key_id}.{mac}"

    def verify(self, ticket: str, version: str, job_id: str, now: float) -> Claims | Refusal:
        if len(ticket) > _MAX_TICKET_LENGTH or not ticket.isascii():
            return Refusal.MALFORMED
        parts = ticket.split(".")
        if len(parts) != 4 or not parts[0].isdigit() or not all(parts):
            return Refusal.MALFORMED
        claims = Claims(principal_id=parts[1], key_id=parts[2], expires_at=int(parts[0]))
        if not hmac.compare_digest(parts[3], self._mac(version, job_id, claims)):
            return Refusal.INVALID
        # Checked after the MAC: an expiry is only believed once it is known to be ours.
        if claims.expires_at <= now:
            return Refusal.EXPIRED
        return claims


def events_path(version: str, job_id: str) -> str:
    """Where a job's events are served as Server-Sent Events (relative to the server)."""
    return f"/{version}/jobs/{quote(job_id, safe='')}/events"


def events_url(
    settings: Settings, version: str, job_id: str, caller: Caller, now: float | None = None
) -> str:
    """The job's events URL with a ticket for ``caller`` in it; raises TicketsUnavailable
    when this server cannot issue tickets."""
    secret = ticket_secret(settings)
    if secret is None:
        raise TicketsUnavailable()
    issued = time.time() if now is None else now
    claims = Claims(caller.id, caller.key_id or "", int(issued) + TICKET_SECONDS)
    ticket = TicketSigner(secret).sign(version, job_id, claims)
    return f"{events_path(version, job_id)}?{urlencode({'ticket': ticket})}"


async def caller_of_ticket(
    settings: Settings, keys: KeyService, ticket: str, version: str, job_id: str
) -> Caller | Refusal:
    """The caller a ticket for this job speaks for, or why it is refused: its signature,
    expiry and job, then that its key is still active (a revoked key's tickets stop at
    once). Raises ServiceUnavailableError when the database cannot say."""
    secret = ticket_secret(settings)
    if secret is None:
        return Refusal.INVALID
    claims = TicketSigner(secret).verify(ticket, version, job_id, time.time())
    if isinstance(claims, Refusal):
        return claims
    try:
        async with keys.sessions() as session:
            repository = PrincipalRepository(session)
            principal = await repository.get(claims.principal_id)
            revoked = await repository.inactive_among({claims.key_id})
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise ServiceUnavailableError("the database") from exc
    if principal is None or revoked:
        return Refusal.INVALID
    return caller_of(principal, claims.key_id)
