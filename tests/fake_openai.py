"""A small OpenAI-compatible server for the provider tests: real HTTP, real SSE.

The requested model name picks the behaviour:

    ok              streams WORDS one chunk each, then a usage chunk and [DONE]
    slow            the same, PACE seconds apart (for cancellation)
    rate-limited    429 with Retry-After: 7 and an error body holding SECRET
    unavailable     503 with an error body holding SECRET
    unauthorized    401
    filtered        a few chunks, then finish_reason "content_filter"
    stall           one chunk, then silence (longer than the client's read timeout)
    broken          a chunk that is not JSON
    json            one JSON object matching the sentiment schema, in pieces

Every request is recorded (headers and body), and every stream says whether it ran to its
end or the client went away first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fake_provider import PACE, PROMPT_TOKENS, SECRET, WORDS, FakeProvider, StreamLog, running


@dataclass
class FakeOpenAI(FakeProvider):
    async def completions(self, request: Request) -> Response:
        model = (await self.record(request))["model"]
        if model == "rate-limited":
            return JSONResponse(
                {"error": {"message": SECRET, "type": "rate_limit"}},
                status_code=429,
                headers={"Retry-After": "7"},
            )
        if model == "unavailable":
            return JSONResponse({"error": {"message": SECRET}}, status_code=503)
        if model == "unauthorized":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        log = StreamLog(model)
        self.streams.append(log)
        return StreamingResponse(self._events(model, log), media_type="text/event-stream")

    async def _events(self, model: str, log: StreamLog) -> AsyncIterator[str]:
        pieces = WORDS
        if model == "json":
            text = json.dumps({"label": "positive", "confidence": 0.9})
            pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
        try:
            for index, piece in enumerate(pieces):
                if model == "broken" and index == 1:
                    yield "data: {not json\n\n"
                    return
                if model == "stall" and index == 1:
                    await asyncio.sleep(3600)
                if model == "slow" and index:
                    await asyncio.sleep(PACE)
                finish = "content_filter" if model == "filtered" and index == 2 else None
                yield _chunk({"content": piece}, finish)
                log.sent += 1
                if finish:
                    yield "data: [DONE]\n\n"
                    return
            yield _chunk({}, "stop")
            usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(pieces)}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            log.completed = True
        finally:
            if not log.completed:
                log.disconnected.set()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])


def _chunk(delta: dict[str, Any], finish: str | None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}
    return f"data: {json.dumps(chunk)}\n\n"


def running_fake_openai() -> contextlib.AbstractAsyncContextManager[FakeOpenAI]:
    return running(FakeOpenAI())
