"""A component that runs one loop in a background task while it is started."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import ClassVar

log = logging.getLogger(__name__)


class BackgroundLoop:
    task_name: ClassVar[str]
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def failed(self) -> bool:
        """The loop ended with an error (a bug): it does no more work."""
        return self._task is not None and self._task.done() and not self._task.cancelled()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.task_name)
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("%s stopped", self.task_name, exc_info=error)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task  # an error it ended with was logged already
            self._task = None
