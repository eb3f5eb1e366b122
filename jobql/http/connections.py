"""The streaming connections open in this process, by caller (WebSockets, and HTTP
responses streaming a subscription): per-caller caps on connections and on operations across
them, and closing a revoked key's connections."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class ConnectionHandle(Protocol):
    """One open WebSocket (a protocol handler), or one HTTP response streaming a
    subscription (jobql/http/subscriptions.py)."""

    def operation_count(self) -> int:
        """Subscriptions (and queries or mutations) in flight on this connection."""
        ...

    async def close_revoked(self) -> None:
        """Stop every operation and close the socket with 4403 (end the HTTP stream)."""
        ...


@dataclass(frozen=True)
class _Owner:
    principal_id: str
    key_id: str | None


class ConnectionRegistry:
    """Admitted connections by caller and by API key. Budgets hold per process: with N API
    processes a caller can hold up to N times the caps (a load balancer spreads them)."""

    def __init__(self) -> None:
        self._owners: dict[ConnectionHandle, _Owner] = {}
        self._by_principal: dict[str, set[ConnectionHandle]] = {}
        self._by_key: dict[str, set[ConnectionHandle]] = {}

    def admit(
        self,
        connection: ConnectionHandle,
        principal_id: str,
        key_id: str | None,
        max_connections: int,
    ) -> bool:
        """Count ``connection`` for the caller, unless the caller holds ``max_connections``
        already (then False and nothing is counted)."""
        self.release(connection)  # a second connection_init (legacy protocol) re-admits
        held = self._by_principal.get(principal_id, set())
        if len(held) >= max_connections:
            return False
        self._owners[connection] = _Owner(principal_id, key_id)
        self._by_principal.setdefault(principal_id, set()).add(connection)
        if key_id is not None:
            self._by_key.setdefault(key_id, set()).add(connection)
        return True

    def release(self, connection: ConnectionHandle) -> None:
        owner = self._owners.pop(connection, None)
        if owner is None:
            return
        _discard(self._by_principal, owner.principal_id, connection)
        if owner.key_id is not None:
            _discard(self._by_key, owner.key_id, connection)

    def connections(self, principal_id: str) -> int:
        return len(self._by_principal.get(principal_id, ()))

    def operations(self, principal_id: str) -> int:
        """Operations in flight across the caller's connections."""
        return sum(c.operation_count() for c in self._by_principal.get(principal_id, ()))

    def held_keys(self) -> Collection[str]:
        return list(self._by_key)

    async def keys_revoked(self, key_ids: Collection[str]) -> None:
        for key_id in key_ids:
            for connection in list(self._by_key.get(key_id, ())):
                self.release(connection)
                try:
                    await connection.close_revoked()
                except Exception:
                    # The socket may be gone already; it is released either way.
                    log.debug("closing a revoked connection failed", exc_info=True)


def _discard(
    index: dict[str, set[ConnectionHandle]], name: str, connection: ConnectionHandle
) -> None:
    held = index.get(name)
    if held is not None:
        held.discard(connection)
        if not held:
            del index[name]
