"""How late the event loop runs: the worker's measure of how much more it can serve."""

from __future__ import annotations

import asyncio
import contextlib
import time


class LoopLag:
    """Samples how late a short sleep wakes up. A loop with more work than it can do
    wakes late; the newest samples weigh most, so the figure recovers as load drops."""

    def __init__(self, interval: float = 0.05, weight: float = 0.3) -> None:
        self.interval = interval
        self.weight = weight
        self.seconds = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jobql-loop-lag")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def observe(self, late: float) -> None:
        self.seconds += self.weight * (max(0.0, late) - self.seconds)

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self.observe(time.monotonic() - before - self.interval)
