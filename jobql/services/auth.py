"""API keys: created once and shown once, stored as SHA-256 hashes, resolved to callers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobql.events.bus import EventBus
from jobql.events.channels import KEYS
from jobql.models import ApiKey, Principal
from jobql.outages import ServiceUnavailableError, is_outage
from jobql.repositories.principals import PrincipalRepository
from jobql.services.limits import LimitOverrides

log = logging.getLogger(__name__)

KEY_PREFIX = "jq_"
TIER_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")
# Successful lookups cached per process (failed ones are not cached at all).
MAX_CACHED_KEYS = 10_000
# Client addresses whose failed lookups are counted; past this the least recently seen go.
MAX_TRACKED_CLIENTS = 10_000


@dataclass(frozen=True)
class Caller:
    """The authenticated principal a request acts for."""

    id: str
    name: str
    tier: str
    overrides: LimitOverrides = field(default_factory=LimitOverrides)
    # The API key the caller authenticated with (revoking it closes its connections).
    key_id: str | None = None


def caller_of(principal: Principal, key_id: str | None = None) -> Caller:
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
        key_id,
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


class TooManyFailedLookups(Exception):
    """This client address sent too many unknown or revoked keys lately; no lookup was
    made. The client may try again after ``retry_after_seconds``."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"too many failed key lookups; retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class FailedLookups:
    """A token bucket per client address, spent by key lookups that found no active key:
    random keys can neither hammer the database nor push good keys out of the cache.
    Memory is bounded: past ``max_clients`` the least recently seen address is forgotten."""

    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            return float(self.burst)
        tokens, at = bucket
        return min(float(self.burst), tokens + (now - at) * self.per_second)

    def retry_after(self, client: str) -> float:
        """Seconds until this client may have a key looked up again (0: now)."""
        tokens = self._tokens(client, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.per_second

    def spend(self, client: str) -> None:
        now = self.clock()
        tokens = self._tokens(client, now) - 1
        self._buckets.pop(client, None)  # re-inserted last: the dict is in LRU order
        self._buckets[client] = (max(tokens, 0.0), now)
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]


class RevocationWatcher(Protocol):
    """Holds connections authenticated with API keys (the WebSocket registry)."""

    def held_keys(self) -> Collection[str]:
        """The ids of the keys of open connections."""
        ...

    async def keys_revoked(self, key_ids: Collection[str]) -> None:
        """Close the connections of these keys."""
        ...


# Re-subscribing to the bus after the key channel failed.
_LISTEN_FIRST_DELAY = 0.1
_LISTEN_MAX_DELAY = 2.0


class KeyService:
    """Creates, resolves and revokes API keys.

    Keys are resolved on every request, so lookups are cached per process. A revocation
    (or a change of a caller's limits) is published on the event bus; every API process
    drops the key from its cache and closes its connections at once (``run``). The cache
    lifetime is ``cache_seconds`` only while a shared bus carries those messages to this
    process; otherwise (memory:// bus, or the bus is down) it is ``fallback_cache_seconds``
    and the keys of open connections are re-checked in the database as often.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        bus: EventBus | None = None,
        shared_bus: bool = False,
        cache_seconds: float = 30.0,
        fallback_cache_seconds: float = 1.0,
        failed_lookups: FailedLookups | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.shared_bus = shared_bus
        self.cache_seconds = cache_seconds
        self.fallback_cache_seconds = fallback_cache_seconds
        self.failed_lookups = failed_lookups or FailedLookups(20, 1.0, clock=clock)
        self.clock = clock
        self._cache: dict[str, tuple[float, Caller]] = {}  # key hash -> (cached at, caller)
        self._watchers: list[RevocationWatcher] = []
        self._listening = False
        self._recheck = asyncio.Event()

    def watch(self, watcher: RevocationWatcher) -> None:
        self._watchers.append(watcher)

    def unwatch(self, watcher: RevocationWatcher) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(watcher)

    @property
    def bus_carries_revocations(self) -> bool:
        """Revocations made anywhere reach this process now (a shared bus, listened to)."""
        return self.shared_bus and self.bus is not None and self._listening and self.bus.healthy

    def cache_ttl(self) -> float:
        return self.cache_seconds if self.bus_carries_revocations else self.fallback_cache_seconds

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
        return caller_of(principal, api_key.id), key

    async def authenticate(self, key: str | None, client: str | None = None) -> Caller | None:
        """The caller owning ``key``, or None for an unknown or revoked key.

        Raises TooManyFailedLookups when ``client`` (an address) had too many failed
        lookups lately, and ServiceUnavailableError when the database cannot be reached:
        the key may well be good, so the client must not be told it is not."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and self.clock() - cached[0] < self.cache_ttl():
            return cached[1]
        address = client or ""
        wait = self.failed_lookups.retry_after(address)
        if wait > 0:
            raise TooManyFailedLookups(max(1, math.ceil(wait)))
        try:
            async with self.sessions() as session:
                found = await PrincipalRepository(session).by_key_hash(digest)
        except Exception as exc:
            if not is_outage(exc):
                raise
            raise ServiceUnavailableError("the database") from exc
        if found is None:
            self._cache.pop(digest, None)
            self.failed_lookups.spend(address)
            return None
        caller = caller_of(*found)
        self._cache.pop(digest, None)
        self._cache[digest] = (self.clock(), caller)
        while len(self._cache) > MAX_CACHED_KEYS:
            del self._cache[next(iter(self._cache))]
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
            principals = await PrincipalRepository(session).set_limits(prefix, values)
        if principals:
            self._drop_principals(set(principals))
            await self._publish({"changed": principals})
        return len(principals)

    async def revoke(self, prefix: str) -> int:
        """Revoke the keys with this prefix: they stop working in this process at once
        and, through the event bus, in every other API process."""
        async with self.sessions() as session, session.begin():
            key_ids = await PrincipalRepository(session).revoke(prefix)
        if key_ids:
            await self._drop_keys(set(key_ids))
            await self._publish({"revoked": key_ids})
        return len(key_ids)

    async def _publish(self, message: dict[str, Any]) -> None:
        if self.bus is not None:
            await self.bus.publish(KEYS, message)

    def _drop_principals(self, principal_ids: Collection[str]) -> None:
        for digest, (_, caller) in list(self._cache.items()):
            if caller.id in principal_ids:
                self._cache.pop(digest, None)

    async def _drop_keys(self, key_ids: Collection[str]) -> None:
        for digest, (_, caller) in list(self._cache.items()):
            if caller.key_id in key_ids:
                self._cache.pop(digest, None)
        for watcher in list(self._watchers):
            try:
                await watcher.keys_revoked(key_ids)
            except Exception:
                log.exception("closing the connections of revoked keys failed")

    async def apply(self, message: dict[str, Any]) -> None:
        """A message from the key channel."""
        revoked = message.get("revoked")
        if isinstance(revoked, list):
            await self._drop_keys({k for k in revoked if isinstance(k, str)})
        changed = message.get("changed")
        if isinstance(changed, list):
            self._drop_principals({p for p in changed if isinstance(p, str)})

    async def run(self) -> None:
        """Follow the key channel and re-check the keys of open connections when the bus
        cannot be relied on; until cancelled."""
        async with asyncio.TaskGroup() as group:
            if self.bus is not None:
                group.create_task(self._listen(self.bus))
            group.create_task(self._recheck_loop())

    async def _listen(self, bus: EventBus) -> None:
        delay = _LISTEN_FIRST_DELAY
        while True:
            try:
                async with bus.subscribe(KEYS) as subscription:
                    self._listening = True
                    delay = _LISTEN_FIRST_DELAY
                    while True:
                        message = await subscription.receive(None)
                        if subscription.take_lost():
                            # Revocations may have been missed: forget every cached key
                            # and check the open connections' keys in the database.
                            self._cache.clear()
                            self._recheck.set()
                        if message is not None:
                            await self.apply(message)
            except Exception as exc:
                log.warning("cannot follow key revocations on the event bus (%r)", exc)
            finally:
                self._listening = False
                self._cache.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LISTEN_MAX_DELAY)

    async def _recheck_loop(self) -> None:
        interval = max(self.fallback_cache_seconds, 0.1)
        while True:
            asked = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._recheck.wait()
                    asked = True
            self._recheck.clear()
            if asked or not self.bus_carries_revocations:
                try:
                    await self.recheck_open_keys()
                except Exception:
                    log.exception("re-checking the keys of open connections failed")

    async def recheck_open_keys(self) -> None:
        """Close the connections whose key was revoked where no message told us (another
        process on a memory:// bus, or while the bus was down)."""
        held: set[str] = set()
        for watcher in self._watchers:
            held.update(watcher.held_keys())
        if not held:
            return
        try:
            async with self.sessions() as session:
                gone = await PrincipalRepository(session).inactive_among(held)
        except Exception as exc:
            if not is_outage(exc):
                raise
            return  # nobody can revoke a key while the database is down either
        if gone:
            await self._drop_keys(gone)
