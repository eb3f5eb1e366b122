"""Jobs run by HTTP providers configured the way an operator does it (JOBQL_PROVIDERS),
against real HTTP servers speaking the OpenAI and the Anthropic APIs, on every backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from jobql.settings import ProviderSettings, Settings
from tests.api import serve, text_of
from tests.fake_anthropic import TOOL_INPUT, FakeAnthropic, running_fake_anthropic
from tests.fake_openai import FakeOpenAI, running_fake_openai
from tests.fake_provider import PROMPT_TOKENS, SECRET, WORDS

TASKS = Path(__file__).parent.parent / "tasks_providers.toml"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake_openai() as server:
        yield server


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with running_fake_anthropic() as server:
        yield server


def with_providers(
    settings: Settings, fake: FakeOpenAI, anthropic: FakeAnthropic | None = None
) -> Settings:
    providers = {
        "openai": ProviderSettings(base_url=fake.base_url, api_key=SecretStr("sk-e2e")),
        "anthropic": ProviderSettings(
            kind="anthropic",
            base_url=anthropic.base_url if anthropic else "http://127.0.0.1:9/v1",
            api_key=SecretStr("sk-ant-e2e"),
        ),
    }
    return settings.model_copy(update={"tasks_file": TASKS, "providers": providers})


async def test_a_job_streams_from_the_provider_and_bills_its_usage(
    settings: Settings, fake: FakeOpenAI
) -> None:
    async with serve(with_providers(settings, fake)) as server:
        api = await server.client()
        job = await api.submit_ok("chat", {"topic": "tides"})
        events = await api.events(job["id"])
        final = events[-1]
        assert final["__typename"] == "V1JobSucceeded"
        assert final["output"] == text_of(events) == "".join(WORDS)
        assert final["usage"]["inputTokens"] == PROMPT_TOKENS
        assert final["usage"]["outputTokens"] == len(WORDS)
        assert final["costUsd"] == pytest.approx(PROMPT_TOKENS / 1000 + len(WORDS) / 1000 * 2)
        assert final["model"] == {"provider": "openai", "name": "ok", "version": "ok-2026-01"}
        (sent,) = fake.requests
        assert sent["body"]["messages"][0]["content"] == "Write about tides."
        assert sent["body"]["temperature"] == 0.3
        assert sent["headers"]["authorization"] == "Bearer sk-e2e"
        assert sent["headers"]["x-request-id"] == f"{job['id']}:1"


async def test_cancel_closes_the_upstream_stream(settings: Settings, fake: FakeOpenAI) -> None:
    async with serve(with_providers(settings, fake)) as server:
        api = await server.client()
        job = await api.submit_ok("chat-slow", {"topic": "stop me"})
        await api.wait_for_event(job["id"], "V1OutputDelta")
        assert (await api.cancel(job["id"], "enough"))["__typename"] == "V1CancelJobSuccess"
        events = await api.events(job["id"])
        assert events[-1]["__typename"] == "V1JobCancelled"
        (log,) = fake.streams
        async with asyncio.timeout(10):
            await log.disconnected.wait()
        assert not log.completed
        assert log.sent < len(WORDS)
        # Partial output and usage are kept: one token per chunk the worker received.
        cancelled = await api.job(job["id"])
        received = next(k for k in range(len(WORDS)) if "".join(WORDS[:k]) == cancelled["output"])
        assert received >= 1
        assert cancelled["usage"]["outputTokens"] == received


async def test_provider_rate_limit_fails_the_job_retryably_without_its_body(
    settings: Settings, fake: FakeOpenAI
) -> None:
    async with serve(with_providers(settings, fake)) as server:
        api = await server.client()
        job = await api.submit_ok("chat-busy", {"topic": "busy"})
        events = await api.events(job["id"])
        error = events[-1]["error"]
        assert error["code"] == "PROVIDER_RATE_LIMITED"
        assert error["retryable"] is True
        assert error["retryAfterSeconds"] == 7
        assert SECRET not in json.dumps(events)
        assert SECRET not in json.dumps(await api.job(job["id"]))


async def test_a_job_streams_from_an_anthropic_provider(
    settings: Settings, fake: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    async with serve(with_providers(settings, fake, fake_anthropic)) as server:
        api = await server.client()
        job = await api.submit_ok("claude", {"topic": "tides"})
        events = await api.events(job["id"])
        final = events[-1]
        assert final["__typename"] == "V1JobSucceeded"
        assert final["output"] == text_of(events) == "".join(WORDS)
        assert final["usage"]["inputTokens"] == PROMPT_TOKENS
        assert final["usage"]["outputTokens"] == len(WORDS)
        assert final["costUsd"] == pytest.approx(PROMPT_TOKENS * 3 / 1000 + len(WORDS) * 15 / 1000)
        assert final["model"] == {"provider": "anthropic", "name": "ok", "version": "ok-2026-02"}
        (sent,) = fake_anthropic.requests
        assert sent["body"]["system"] == "Be brief."
        assert sent["headers"]["x-api-key"] == "sk-ant-e2e"


async def test_structured_output_from_an_anthropic_provider(
    settings: Settings, fake: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    async with serve(with_providers(settings, fake, fake_anthropic)) as server:
        api = await server.client()
        job = await api.submit_ok("claude-classify", {"text": "I love it"}, wait=10)
        assert job["status"] == "SUCCEEDED"
        assert job["result"] == TOOL_INPUT
        assert fake_anthropic.requests[0]["body"]["tool_choice"] == {
            "type": "tool",
            "name": "output",
        }
