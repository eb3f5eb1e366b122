"""Anthropic's Messages API, streamed over HTTP with httpx.

One request per job attempt: ``POST {base_url}/messages`` with ``stream: true``, the rendered
prompt as one user message and the task's ``max_output_tokens`` as ``max_tokens``; the
task's ``model.options`` are sent as they are (``temperature``, ``system``, ...). A task
with an object output schema gets it as the input schema of one tool the model must call
(``tool_choice``), the documented way to get JSON of a given shape; the tool input streams
as the job's output. Usage comes from ``message_start`` (input) and ``message_delta``
(output). Closing the stream closes the HTTP response: the upstream inference stops.
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

API_VERSION = "2023-06-01"
RESERVED = frozenset({"model", "messages", "stream"})
OUTPUT_TOOL = "output"
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
        schema = request.output_schema
        if schema is not None and schema.get("type") == "object":
            body["tools"] = [
                {"name": OUTPUT_TOOL, "description": "Give the answer.", "input_schema": schema}
            ]
            body["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}
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
            async for batch in sse_data(response):
                for data in batch:
                    event = json_object(data)
                    kind = event.get("type")
                    if kind == "content_block_delta":  # first: nearly every event is one
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield TextDelta(text=delta["text"], tokens=1)
                        elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                            yield TextDelta(text=delta["partial_json"], tokens=1)  # tool input
                    elif kind == "message_start":
                        usage = (event.get("message") or {}).get("usage") or {}
                        input_tokens = int(usage.get("input_tokens") or 0)
                    elif kind == "message_delta":
                        usage = event.get("usage") or {}
                        output_tokens = int(usage.get("output_tokens") or 0)
                        if (event.get("delta") or {}).get("stop_reason") == "refusal":
                            raise ProviderError(ErrorCode.CONTENT_FILTERED)
                    elif kind == "message_stop":
                        finished = True
                        break
                    elif kind == "error":
                        error_type = (event.get("error") or {}).get("type")
                        retryable = error_type in RETRYABLE_STREAM_ERRORS
                        code = ErrorCode.PROVIDER_UNAVAILABLE if retryable else ErrorCode.INTERNAL
                        raise ProviderError(code, body=event_text(data))
                if finished:
                    break
        if not finished:
            raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE)  # the stream ended early
        yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)
