"""The pure parts of key revocation and WebSocket budgets: the failed-lookup token bucket
and the registry of open connections."""

from __future__ import annotations

from collections.abc import Collection

from jobql.http.connections import ConnectionRegistry
from jobql.services.auth import FailedLookups


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failed_lookups_allow_a_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    bucket = FailedLookups(3, 0.5, clock=clock)
    for _ in range(3):
        assert bucket.retry_after("10.0.0.1") == 0
        bucket.spend("10.0.0.1")
    assert bucket.retry_after("10.0.0.1") == 2.0  # one token at 0.5/s
    assert bucket.retry_after("10.0.0.2") == 0  # per address
    clock.now = 2.0
    assert bucket.retry_after("10.0.0.1") == 0


def test_failed_lookups_forget_the_least_recently_seen_address_past_the_bound() -> None:
    bucket = FailedLookups(1, 0.001, max_clients=2, clock=Clock())
    for address in ("a", "b", "c"):
        bucket.spend(address)
    assert bucket.retry_after("a") == 0  # forgotten: a full bucket again
    assert bucket.retry_after("c") > 0


class FakeConnection:
    def __init__(self, operations: int = 0) -> None:
        self.operations = operations
        self.closed = False

    def operation_count(self) -> int:
        return self.operations

    async def close_revoked(self) -> None:
        self.closed = True


def test_the_registry_caps_connections_per_caller_and_counts_operations_across_them() -> None:
    registry = ConnectionRegistry()
    first, second, third = FakeConnection(3), FakeConnection(4), FakeConnection()
    assert registry.admit(first, "alice", "k1", max_connections=2)
    assert registry.admit(second, "alice", "k1", max_connections=2)
    assert not registry.admit(third, "alice", "k1", max_connections=2)
    assert registry.admit(third, "bob", "k2", max_connections=2)
    assert registry.operations("alice") == 7
    registry.release(first)
    assert registry.connections("alice") == 1
    assert registry.admit(FakeConnection(), "alice", "k1", max_connections=2)


async def test_revoking_a_key_closes_its_connections_only() -> None:
    registry = ConnectionRegistry()
    revoked, kept = FakeConnection(), FakeConnection()
    registry.admit(revoked, "alice", "old-key", max_connections=5)
    registry.admit(kept, "alice", "new-key", max_connections=5)
    held: Collection[str] = registry.held_keys()
    assert set(held) == {"old-key", "new-key"}
    await registry.keys_revoked({"old-key"})
    assert revoked.closed
    assert not kept.closed
    assert set(registry.held_keys()) == {"new-key"}
    assert registry.connections("alice") == 1
