"""The Anthropic provider against a real HTTP server speaking the Messages API."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from jobql.errors import ErrorCode
from jobql.providers.anthropic import API_VERSION, AnthropicProvider
from jobql.providers.base import ProviderError, ProviderEvent, ProviderRequest, TextDelta, Usage
from jobql.settings import ProviderSettings
from tests.fake_anthropic import TOOL_INPUT, FakeAnthropic, running_fake_anthropic
from tests.fake_provider import PROMPT_TOKENS, SECRET, WORDS


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with running_fake_anthropic() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    settings = ProviderSettings(
        kind="anthropic", base_url=fake.base_url, api_key=SecretStr("sk-ant-test")
    )
    instance = AnthropicProvider("anthropic", settings)
    yield instance
    await instance.aclose()


def request(model: str = "ok", **options: Any) -> ProviderRequest:
    return ProviderRequest(
        request_id="job-2:1",
        model=model,
        model_version=f"{model}-2026",
        prompt="Write about tides.",
        max_output_tokens=64,
        options=options,
    )


async def collect(provider: AnthropicProvider, req: ProviderRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(req)]


async def test_streams_text_then_usage(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    events = await collect(provider, request(temperature=0.1, system="Be brief."))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(WORDS)
    assert events[-1] == Usage(input_tokens=PROMPT_TOKENS, output_tokens=len(WORDS))
    (sent,) = fake.requests
    assert sent["headers"]["x-api-key"] == "sk-ant-test"
    assert sent["headers"]["anthropic-version"] == API_VERSION
    assert sent["headers"]["x-request-id"] == "job-2:1"
    assert sent["body"] == {
        "model": "ok",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Write about tides."}],
        "stream": True,
        "temperature": 0.1,
        "system": "Be brief.",
    }


@pytest.mark.parametrize(
    ("model", "code", "retry_after"),
    [
        ("rate-limited", ErrorCode.PROVIDER_RATE_LIMITED, 7.0),
        ("overloaded", ErrorCode.PROVIDER_UNAVAILABLE, None),
        ("overloaded-midstream", ErrorCode.PROVIDER_UNAVAILABLE, None),
        ("refusal", ErrorCode.CONTENT_FILTERED, None),
        ("cut", ErrorCode.PROVIDER_UNAVAILABLE, None),
    ],
)
async def test_failures_are_classified_and_bodies_kept_off_the_message(
    provider: AnthropicProvider, model: str, code: ErrorCode, retry_after: float | None
) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(model))
    assert caught.value.code is code
    assert caught.value.retry_after_seconds == retry_after
    assert SECRET not in str(caught.value)


async def test_closing_the_stream_closes_the_upstream_request(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    stream = provider.stream(request("slow"))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    (log,) = fake.streams
    async with asyncio.timeout(5):
        await log.disconnected.wait()
    assert not log.completed
    assert log.sent < len(WORDS)


async def test_an_output_schema_is_asked_for_as_a_forced_tool_call(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}}
    events = await collect(provider, dataclasses.replace(request("json"), output_schema=schema))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert json.loads(text) == TOOL_INPUT
    body = fake.requests[0]["body"]
    assert body["tools"] == [
        {"name": "output", "description": "Give the answer.", "input_schema": schema}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "output"}
