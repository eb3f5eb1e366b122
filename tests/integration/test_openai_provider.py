"""The OpenAI-compatible provider against a real HTTP server speaking that API."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from jobql.errors import ErrorCode
from jobql.providers.base import ProviderError, ProviderEvent, ProviderRequest, TextDelta, Usage
from jobql.providers.openai_compat import OpenAICompatibleProvider
from jobql.settings import ProviderSettings
from tests.fake_openai import FakeOpenAI, running_fake_openai
from tests.fake_provider import PROMPT_TOKENS, SECRET, WORDS

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative", "neutral"]}},
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake_openai() as server:
        yield server


def make_provider(fake: FakeOpenAI, **config: Any) -> OpenAICompatibleProvider:
    settings = ProviderSettings(
        base_url=fake.base_url,
        api_key=SecretStr("sk-test"),
        headers={"OpenAI-Organization": "org-test"},
        **config,
    )
    return OpenAICompatibleProvider("openai", settings)


def request(model: str = "ok", **options: Any) -> ProviderRequest:
    return ProviderRequest(
        request_id="job-1:1",
        model=model,
        model_version=f"{model}-2026",
        prompt="Write about tides.",
        max_output_tokens=50,
        options=options,
    )


async def collect(provider: OpenAICompatibleProvider, req: ProviderRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(req)]


async def test_streams_text_then_the_providers_usage(fake: FakeOpenAI) -> None:
    provider = make_provider(fake)
    events = await collect(provider, request(temperature=0.2, model_ignored="x"))
    await provider.aclose()
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.text for d in deltas) == "".join(WORDS)
    assert events[-1] == Usage(input_tokens=PROMPT_TOKENS, output_tokens=len(WORDS))
    (sent,) = fake.requests
    assert sent["headers"]["authorization"] == "Bearer sk-test"
    assert sent["headers"]["openai-organization"] == "org-test"
    assert sent["headers"]["x-request-id"] == "job-1:1"
    body = sent["body"]
    assert body["model"] == "ok"
    assert body["messages"] == [{"role": "user", "content": "Write about tides."}]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 50
    assert body["temperature"] == 0.2  # task options pass through
    assert "response_format" not in body


async def test_output_schema_asks_for_json_schema_output(fake: FakeOpenAI) -> None:
    provider = make_provider(fake)
    events = await collect(provider, dataclasses.replace(request("json"), output_schema=SCHEMA))
    await provider.aclose()
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == '{"label": "positive", "confidence": 0.9}'
    assert fake.requests[0]["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }


async def test_options_cannot_replace_the_request_itself(fake: FakeOpenAI) -> None:
    provider = make_provider(fake)
    options = {"model": "other", "stream": False, "messages": [], "stream_options": None}
    await collect(provider, dataclasses.replace(request(), options=options))
    await provider.aclose()
    body = fake.requests[0]["body"]
    assert (body["model"], body["stream"]) == ("ok", True)
    assert body["messages"][0]["content"] == "Write about tides."


@pytest.mark.parametrize(
    ("model", "code", "retry_after"),
    [
        ("rate-limited", ErrorCode.PROVIDER_RATE_LIMITED, 7.0),
        ("unavailable", ErrorCode.PROVIDER_UNAVAILABLE, None),
        ("unauthorized", ErrorCode.INTERNAL, None),
    ],
)
async def test_error_statuses_are_classified_and_the_body_kept_off_the_message(
    fake: FakeOpenAI, model: str, code: ErrorCode, retry_after: float | None
) -> None:
    provider = make_provider(fake)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request(model))
    await provider.aclose()
    assert caught.value.code is code
    assert caught.value.retry_after_seconds == retry_after
    assert SECRET not in str(caught.value)
    if model != "unauthorized":
        assert SECRET in (caught.value.body or "")


async def test_content_filter_ends_the_stream_as_content_filtered(fake: FakeOpenAI) -> None:
    provider = make_provider(fake)
    seen: list[ProviderEvent] = []

    async def read() -> None:
        async for event in provider.stream(request("filtered")):
            seen.append(event)

    with pytest.raises(ProviderError) as caught:
        await read()
    await provider.aclose()
    assert caught.value.code is ErrorCode.CONTENT_FILTERED
    assert [e.text for e in seen if isinstance(e, TextDelta)] == WORDS[:3]


async def test_a_stalled_stream_times_out(fake: FakeOpenAI) -> None:
    provider = make_provider(fake, read_timeout_seconds=0.3)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request("stall"))
    await provider.aclose()
    assert caught.value.code is ErrorCode.PROVIDER_TIMEOUT


async def test_a_broken_chunk_is_provider_unavailable(fake: FakeOpenAI) -> None:
    provider = make_provider(fake)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request("broken"))
    await provider.aclose()
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE


async def test_nobody_listening_is_provider_unavailable(fake: FakeOpenAI) -> None:
    settings = ProviderSettings(base_url="http://127.0.0.1:9/v1", connect_timeout_seconds=2)
    provider = OpenAICompatibleProvider("openai", settings)
    with pytest.raises(ProviderError) as caught:
        await collect(provider, request())
    await provider.aclose()
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE


async def test_closing_the_stream_closes_the_upstream_request(fake: FakeOpenAI) -> None:
    provider = make_provider(fake)
    stream = provider.stream(request("slow"))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()  # what the worker does on cancel
    (log,) = fake.streams
    async with asyncio.timeout(5):
        await log.disconnected.wait()
    assert not log.completed
    assert log.sent < len(WORDS)
    await provider.aclose()
