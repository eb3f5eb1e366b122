"""A small server speaking Anthropic's Messages API (streaming), for the provider tests.

The requested model name picks the behaviour:

    ok                    streams WORDS, with usage in message_start and message_delta
    slow                  the same, PACE seconds apart (for cancellation)
    rate-limited          429 with Retry-After: 7 and an error body holding SECRET
    overloaded            529 (Anthropic's "overloaded")
    overloaded-midstream  two deltas, then an overloaded_error event
    refusal               two deltas, then stop_reason "refusal"
    cut                   two deltas, then the stream ends without message_stop
    json                  a tool_use block whose input streams as input_json_delta pieces
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

TOOL_INPUT = {"label": "positive", "confidence": 0.9}


@dataclass
class FakeAnthropic(FakeProvider):
    async def messages(self, request: Request) -> Response:
        model = (await self.record(request))["model"]
        if model == "rate-limited":
            error = {"type": "error", "error": {"type": "rate_limit_error", "message": SECRET}}
            return JSONResponse(error, status_code=429, headers={"retry-after": "7"})
        if model == "overloaded":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": SECRET}}
            return JSONResponse(error, status_code=529)
        log = StreamLog(model)
        self.streams.append(log)
        return StreamingResponse(self._events(model, log), media_type="text/event-stream")

    async def _events(self, model: str, log: StreamLog) -> AsyncIterator[str]:
        try:
            usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}
            yield _event("message_start", {"message": {"id": "m1", "usage": usage}})
            if model == "json":
                async for line in self._tool_use(log):
                    yield line
                return
            yield _event("content_block_start", {"index": 0, "content_block": {"type": "text"}})
            yield _event("ping", {})
            for index, word in enumerate(WORDS):
                if index == 2 and model == "overloaded-midstream":
                    yield _event(
                        "error", {"error": {"type": "overloaded_error", "message": SECRET}}
                    )
                    return
                if index == 2 and model == "refusal":
                    yield _event("message_delta", {"delta": {"stop_reason": "refusal"}})
                    yield _event("message_stop", {})
                    return
                if index == 2 and model == "cut":
                    return
                if model == "slow" and index:
                    await asyncio.sleep(PACE)
                delta = {"type": "text_delta", "text": word}
                yield _event("content_block_delta", {"index": 0, "delta": delta})
                log.sent += 1
            yield _event("content_block_stop", {"index": 0})
            yield _event(
                "message_delta",
                {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(WORDS)}},
            )
            yield _event("message_stop", {})
            log.completed = True
        finally:
            if not log.completed:
                log.disconnected.set()

    async def _tool_use(self, log: StreamLog) -> AsyncIterator[str]:
        block = {"type": "tool_use", "id": "t1", "name": "output", "input": {}}
        yield _event("content_block_start", {"index": 0, "content_block": block})
        text = json.dumps(TOOL_INPUT)
        pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
        for piece in pieces:
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _event("content_block_delta", {"index": 0, "delta": delta})
            log.sent += 1
        yield _event("content_block_stop", {"index": 0})
        final = {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": len(pieces)}}
        yield _event("message_delta", final)
        yield _event("message_stop", {})
        log.completed = True

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def running_fake_anthropic() -> contextlib.AbstractAsyncContextManager[FakeAnthropic]:
    return running(FakeAnthropic())
