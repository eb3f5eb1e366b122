"""How late the event loop runs: the worker's measure of how much more it can serve."""

from __future__ import annotations

import asyncio
import time

from jobql.worker.background import BackgroundLoop


class LoopLag(BackgroundLoop):
    """Samples how late a short sleep wakes up. A loop with more work than it can do
    wakes late; the newest samples weigh most, so the figure recovers as load drops."""

    task_name = "jobql-loop-lag"

    def __init__(self, interval: float = 0.05, weight: float = 0.3) -> None:
        self.interval = interval
        self.weight = weight
        self.seconds = 0.0

    def observe(self, late: float) -> None:
        self.seconds += self.weight * (max(0.0, late) - self.seconds)

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            self.observe(time.monotonic() - before - self.interval)
