"""OpenAI-compatible chat completions, streamed over HTTP with httpx: OpenAI itself and the
servers that speak its API (vLLM, Ollama, LiteLLM, Together, Groq, ...).

One request per job attempt: ``POST {base_url}/chat/completions`` with ``stream: true`` and
``stream_options.include_usage``, the rendered prompt as one user message, the task's
``max_output_tokens`` as ``max_tokens`` and, when the task has an output schema, a
``json_schema`` response format. The task's ``model.options`` are sent as they are
(``temperature``, ``top_p``, ``seed``, ...), so any parameter the server knows can be set
per task. Closing the stream closes the HTTP response: the upstream inference stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from jobql.errors import ErrorCode
from jobql.providers.base import ProviderError, ProviderEvent, ProviderRequest, TextDelta, Usage
from jobql.providers.http import (
    HttpProvider,
    event_text,
    json_object,
    sse_data,
    streaming_post,
)
from jobql.settings import ProviderSettings

# Fields of the request body a task's options cannot replace.
RESERVED = frozenset({"model", "messages", "stream", "stream_options"})
DONE = b"[DONE]"


def is_done(data: bytes) -> bool:
    """The end-of-stream marker, padded or not. A chunk is a JSON object, so whatever
    starts with ``{`` is decided without decoding."""
    return data == DONE or (data[:1] != b"{" and data.decode(errors="replace").strip() == "[DONE]")


class OpenAICompatibleProvider(HttpProvider):
    def __init__(
        self,
        name: str,
        config: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = config.api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        super().__init__(name, config, headers, transport)

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": request.max_output_tokens}
        if request.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.output_schema},
            }
        body.update({k: v for k, v in request.options.items() if k not in RESERVED})
        body.update(
            model=request.model,
            messages=[{"role": "user", "content": request.prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
        return body

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        usage: dict[str, Any] | None = None
        done = False
        post = streaming_post(
            self._client, self.name, "chat/completions", self.body(request), request.request_id
        )
        async with post as response:
            async for batch in sse_data(response):
                for data in batch:
                    if is_done(data):
                        done = True
                        break
                    chunk = json_object(data)
                    if chunk.get("error") is not None:
                        raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, body=event_text(data))
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            # A chunk is about one token; the final usage has the real count.
                            yield TextDelta(text=text, tokens=1)
                        if choice.get("finish_reason") == "content_filter":
                            raise ProviderError(ErrorCode.CONTENT_FILTERED)
                if done:
                    break
        if usage is not None:
            yield Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            )
