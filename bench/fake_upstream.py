"""Upstream for the live-streams benchmark: an OpenAI-compatible chat completions server
that streams a fixed number of one-token chunks at a fixed pace, under uvicorn.

Every `POST /v1/chat/completions` streams ``--tokens`` content chunks, chunk k at k x
``--interval-ms`` after the request arrived (an absolute schedule, so a late wake-up does
not push the rest of the stream back), then a stop chunk, a usage chunk and ``[DONE]``. The
request body is read and ignored. `GET /healthz` answers 200 for the benchmark's start-up
check.

Run: .venv/bin/python bench/fake_upstream.py --port 8766  (binds 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKENS = 200
INTERVAL_MS = 20.0
TOKEN = " token"
PROMPT_TOKENS = 12


def sse(chunk: object) -> bytes:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()


def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return sse({"id": "bench", "object": "chat.completion.chunk", "choices": [choice]})


class Upstream:
    def __init__(self, tokens: int, interval: float) -> None:
        self.tokens = tokens
        self.interval = interval
        # Encoded once: at 200 streams x 50 chunks/s the upstream must stay cheap, or its
        # own lag would be charged to the direct baseline.
        self.content = chunk({"content": TOKEN})
        self.tail = (
            chunk({}, "stop")
            + sse(
                {
                    "choices": [],
                    "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": tokens},
                }
            )
            + b"data: [DONE]\n\n"
        )

    async def events(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(1, self.tokens + 1):
            delay = start + k * self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield self.content
        yield self.tail

    async def completions(self, request: Request) -> Response:
        await request.body()
        return StreamingResponse(self.events(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/healthz", healthz),
            ]
        )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--interval-ms", type=float, default=INTERVAL_MS)
    args = parser.parse_args()
    upstream = Upstream(args.tokens, args.interval_ms / 1000)
    uvicorn.run(upstream.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
