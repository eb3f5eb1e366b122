"""Drain a provider stream in its own task, so writing events never slows inference and a
stop closes the upstream stream at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

from jobql.providers.base import ProviderEvent


class StopReason(StrEnum):
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    BUDGET = "budget"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True)
class Stopped:
    reason: StopReason


@dataclass(frozen=True)
class Ended:
    """The provider finished its stream."""


@dataclass(frozen=True)
class Raised:
    error: BaseException


PumpItem = ProviderEvent | Stopped | Ended | Raised


class ProviderPump:
    def __init__(self, stream: AsyncIterator[ProviderEvent]) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[PumpItem] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())
        self.stop_reason: StopReason | None = None

    async def _run(self) -> None:
        try:
            async for item in self._stream:
                self._queue.put_nowait(item)
            self._queue.put_nowait(Ended())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._queue.put_nowait(Raised(exc))

    def stop(self, reason: StopReason) -> None:
        """Close the provider stream now; the consumer sees ``Stopped`` after what is queued."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self._task.cancel()
        self._queue.put_nowait(Stopped(reason))

    async def get(self) -> PumpItem:
        return await self._queue.get()

    def get_ready(self) -> list[PumpItem]:
        items: list[PumpItem] = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def aclose(self) -> None:
        """Make sure the provider stream is closed before usage is recorded."""
        if self.stop_reason is None:
            self._task.cancel()
        # Cancelled once (by stop() or just now), the stream is closing: an HTTP provider
        # closes its upstream response here. A second cancel would interrupt that close and
        # leave the upstream request running.
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
