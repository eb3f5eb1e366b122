"""Every log line a server writes, as production writes it: jobql's JSON handler on the root
logger at DEBUG, and uvicorn's loggers (access log included) going through it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from jobql.app import create_app
from jobql.observability.logging import configure_logging
from jobql.providers.simulated import SimulatedProvider
from jobql.runtime import build_providers
from jobql.settings import Settings
from tests.api import Server
from tests.uvicorn_server import uvicorn_serving

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@dataclass
class Logs:
    stream: io.StringIO

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = [json.loads(line) for line in self.text.splitlines()]
        return parsed

    def at_least(self, level: int) -> list[dict[str, Any]]:
        return [line for line in self.lines() if logging.getLevelName(line["level"]) >= level]


@contextlib.contextmanager
def all_logs(*, include_content: bool = False) -> Iterator[Logs]:
    """Install jobql's logging at DEBUG into a buffer; uvicorn's loggers propagate to it
    (an earlier server in this process may have given them handlers of their own)."""
    loggers = {name: logging.getLogger(name) for name in UVICORN_LOGGERS}
    saved = {name: (lg.handlers[:], lg.propagate, lg.level) for name, lg in loggers.items()}
    root = logging.getLogger()
    root_level = root.level
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.level = [], True, logging.NOTSET
    stream = io.StringIO()
    handler = configure_logging("DEBUG", json=True, include_content=include_content, stream=stream)
    try:
        yield Logs(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate, logger.level = handlers, propagate, level


@contextlib.asynccontextmanager
async def serve_logged(settings: Settings) -> AsyncIterator[Server]:
    """tests.api.serve, with uvicorn logging through the root logger, access log on."""
    provider = SimulatedProvider()
    app = create_app(settings, providers=build_providers(settings, simulated=provider))
    async with uvicorn_serving(
        app, ws="websockets-sansio", log_config=None, log_level="debug", access_log=True
    ) as port:
        running = Server(app, port, provider)
        try:
            yield running
        finally:
            for api in running.clients:
                await api.aclose()
