"""Run an ASGI app under a real uvicorn on a free port, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def uvicorn_serving(
    app: Any, *, force_exit: bool = False, **config: Any
) -> AsyncIterator[int]:
    """Yields the port. ``force_exit``: do not wait for open responses on the way out."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, **{"log_level": "warning", **config})
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        server.force_exit = force_exit
        await task
