"""What the fake model servers (tests/fake_openai.py, tests/fake_anthropic.py) share: the
text they stream, a log per stream, and running one under uvicorn with every request kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request

from tests.uvicorn_server import uvicorn_serving

WORDS = ["The", " tide", " comes", " in", " twice", " a", " day", "."]
SECRET = "UPSTREAM-PROVIDER-SECRET-41c9"  # in error bodies; must never reach a client or log
PROMPT_TOKENS = 11
PACE = 0.25  # "slow": about 2 s in all, long enough to cancel midway


@dataclass
class StreamLog:
    model: str
    sent: int = 0  # content chunks written
    completed: bool = False
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakeProvider:
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    streams: list[StreamLog] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def record(self, request: Request) -> dict[str, Any]:
        """The request's JSON body, kept with its headers."""
        body: dict[str, Any] = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        return body

    def app(self) -> Starlette:
        raise NotImplementedError


Fake = TypeVar("Fake", bound=FakeProvider)


@contextlib.asynccontextmanager
async def running(fake: Fake) -> AsyncIterator[Fake]:
    # force_exit: a stalled stream must not hold the test up on the way out.
    async with uvicorn_serving(fake.app(), force_exit=True) as port:
        fake.port = port
        yield fake
