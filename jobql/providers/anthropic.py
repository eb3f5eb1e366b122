"""Anthropic's Messages API, streamed over HTTP with httpx.

One request per job attempt: ``POST {base_url}/messages`` with ``stream: true``, the rendered
prompt as one user message and the task's ``max_output_tokens`` as ``max_tokens``; the
task's ``model.options`` are sent as they are (``temperature``, ``system``, ...). There is no
JSON-schema output mode here, so a task with an output schema should ask for JSON in its
prompt (the worker validates the output against the schema either way). Usage comes from
``message_start`` (input) and ``message_delta`` (output). Closing the stream closes the
HTTP response: the upstream inference stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from jobql.errors import ErrorCode
from jobql.providers.base import ProviderError, ProviderEvent, ProviderRequest, TextDelta, Usage
from jobql.providers.http import (
    MAX_ERROR_BODY,
    HttpProvider,
    json_object,
    sse_data,
    streaming_post,
)
from jobql.settings import ProviderSettings

API_VERSION = "2023-06-01"
RESERVED = frozenset({"model", "messages", "stream"})
# Error events inside a stream that mean "try again later" rather than "fix the request".
RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


class AnthropicProvider(HttpProvider):
    def __init__(
        self,
        name: str,
        config: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"anthropic-version": API_VERSION}
        if config.api_key is not None:
            headers["x-api-key"] = config.api_key.get_secret_value()
        super().__init__(name, config, headers, transport)

    def body(self, request: ProviderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": request.max_output_tokens}
        body.update({k: v for k, v in request.options.items() if k not in RESERVED})
        body.update(
            model=request.model,
            messages=[{"role": "user", "content": request.prompt}],
            stream=True,
        )
        return body

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        input_tokens = output_tokens = 0
        finished = False
        post = streaming_post(
            self._client, self.name, "messages", self.body(request), request.request_id
        )
        async with post as response:
            async for data in sse_data(response):
                event = json_object(data)
                kind = event.get("type")
                if kind == "message_start":
                    usage = (event.get("message") or {}).get("usage") or {}
                    input_tokens = int(usage.get("input_tokens") or 0)
                elif kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield TextDelta(text=delta["text"], tokens=1)
                elif kind == "message_delta":
                    output_tokens = int((event.get("usage") or {}).get("output_tokens") or 0)
                    if (event.get("delta") or {}).get("stop_reason") == "refusal":
                        raise ProviderError(ErrorCode.CONTENT_FILTERED)
                elif kind == "message_stop":
                    finished = True
                    break
                elif kind == "error":
                    retryable = (event.get("error") or {}).get("type") in RETRYABLE_STREAM_ERRORS
                    code = ErrorCode.PROVIDER_UNAVAILABLE if retryable else ErrorCode.INTERNAL
                    raise ProviderError(code, body=data[:MAX_ERROR_BODY])
        if not finished:
            raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE)  # the stream ended early
        yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)
