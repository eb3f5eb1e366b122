"""API keys: created once and shown once, stored as SHA-256 hashes, resolved to callers."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.models import ApiKey, Principal
from jobql.outages import ServiceUnavailableError, is_outage
from jobql.repositories.principals import PrincipalRepository
from jobql.services.limits import LimitOverrides

KEY_PREFIX = "jq_"
TIER_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")


@dataclass(frozen=True)
class Caller:
    """The authenticated principal a request acts for."""

    id: str
    name: str
    tier: str
    overrides: LimitOverrides = field(default_factory=LimitOverrides)


def caller_of(principal: Principal) -> Caller:
    return Caller(
        principal.id,
        principal.name,
        principal.tier,
        LimitOverrides(
            rate_limit=principal.rate_limit,
            rate_window_seconds=principal.rate_window_seconds,
            daily_cost_cap_micros=principal.daily_cost_cap_micros,
            max_active_jobs=principal.max_active_jobs,
        ),
    )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeyService:
    # API keys are resolved on every request; a short cache keeps that off the database.
    CACHE_SECONDS = 10.0

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def create(self, name: str, tier: str = "standard") -> tuple[Caller, str]:
        """A new principal with one key; the key is returned here and never again."""
        if not name.strip():
            raise ValueError("name must not be empty")
        if not TIER_PATTERN.match(tier):
            raise ValueError("tier must be lowercase letters, digits, '-' or '_'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        principal = Principal(id=str(uuid.uuid4()), name=name.strip(), tier=tier)
        api_key = ApiKey(
            id=str(uuid.uuid4()),
            principal_id=principal.id,
            prefix=key[:10],
            key_hash=hash_key(key),
        )
        async with self.sessions() as session, session.begin():
            await PrincipalRepository(session).add(principal, api_key)
        return caller_of(principal), key

    async def authenticate(self, key: str | None) -> Caller | None:
        """The caller owning ``key``, or None for an unknown or revoked key. Raises
        ServiceUnavailableError when the database cannot be reached: the key may well be
        good, so the client must not be told it is not."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with self.sessions() as session:
                principal = await PrincipalRepository(session).by_key_hash(digest)
        except Exception as exc:
            if not is_outage(exc):
                raise
            raise ServiceUnavailableError("the database") from exc
        caller = caller_of(principal) if principal else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.CACHE_SECONDS, caller)
        return caller

    async def any_key_exists(self) -> bool:
        async with self.sessions() as session:
            return await PrincipalRepository(session).count_keys() > 0

    async def list(self) -> list[tuple[str, str, str, bool]]:
        """(key prefix, principal name, tier, revoked) for every key."""
        async with self.sessions() as session:
            rows = await PrincipalRepository(session).list_keys()
        return [(k.prefix, p.name, p.tier, k.revoked_at is not None) for k, p in rows]

    async def set_limits(self, prefix: str, overrides: LimitOverrides, *, clear: bool) -> int:
        """Set (or with ``clear``, reset to the tier's defaults) the limits of the caller
        owning the key with this prefix."""
        values = {
            "rate_limit": overrides.rate_limit,
            "rate_window_seconds": overrides.rate_window_seconds,
            "daily_cost_cap_micros": overrides.daily_cost_cap_micros,
            "max_active_jobs": overrides.max_active_jobs,
        }
        if not clear:
            values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return 0
        async with self.sessions() as session, session.begin():
            count = await PrincipalRepository(session).set_limits(prefix, values)
        self._cache.clear()
        return count

    async def revoke(self, prefix: str) -> int:
        async with self.sessions() as session, session.begin():
            count = await PrincipalRepository(session).revoke(prefix)
        self._cache.clear()
        return count
