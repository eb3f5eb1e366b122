"""The simulated provider: deterministic output, faults on demand, and a stop that sticks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import jsonschema
import pytest

from jobql.errors import ErrorCode
from jobql.providers.base import (
    Progress,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    Usage,
    count_tokens,
)
from jobql.providers.simulated import SimulatedProvider, StreamRecord

FAST = {"tokens_per_second": 0, "ttft_ms": 0}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["label", "confidence"],
    "properties": {
        "label": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

FAILURES = [
    ErrorCode.PROVIDER_UNAVAILABLE,
    ErrorCode.PROVIDER_TIMEOUT,
    ErrorCode.PROVIDER_RATE_LIMITED,
    ErrorCode.CONTENT_FILTERED,
    ErrorCode.INTERNAL,
]


def request(
    prompt: str = "Summarize: the cat sat on the mat.",
    *,
    request_id: str = "job-1:1",
    output_schema: dict[str, Any] | None = None,
    max_output_tokens: int = 1000,
    **options: Any,
) -> ProviderRequest:
    opts: Mapping[str, Any] = {**FAST, **options}
    return ProviderRequest(
        request_id=request_id,
        model="sim-small",
        model_version="sim-small-2026-10",
        prompt=prompt,
        max_output_tokens=max_output_tokens,
        output_schema=output_schema,
        options=opts,
    )


async def collect(
    provider: SimulatedProvider, req: ProviderRequest, into: list[ProviderEvent] | None = None
) -> list[ProviderEvent]:
    """Every event of the stream; with ``into``, the events seen before an error stay there."""
    events = [] if into is None else into
    async for event in provider.stream(req):
        events.append(event)
    return events


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture
def provider() -> SimulatedProvider:
    return SimulatedProvider()


# -- output --------------------------------------------------------------------------------


async def test_same_prompt_gives_same_output(provider: SimulatedProvider) -> None:
    first = await collect(provider, request("alpha", request_id="a"))
    second = await collect(SimulatedProvider(), request("alpha", request_id="b"))
    assert first == second
    assert text_of(first)


async def test_different_prompts_give_different_output(provider: SimulatedProvider) -> None:
    a = text_of(await collect(provider, request("alpha", request_id="a")))
    b = text_of(await collect(provider, request("beta", request_id="b")))
    assert a != b


async def test_free_text_length_option_and_cap(provider: SimulatedProvider) -> None:
    events = await collect(provider, request(length=7))
    assert sum(e.tokens for e in events if isinstance(e, TextDelta)) == 7
    capped = await collect(provider, request(length=50, max_output_tokens=5, request_id="c"))
    assert count_tokens(text_of(capped)) == 5


async def test_structured_output_validates_against_schema(provider: SimulatedProvider) -> None:
    for prompt in ("I love it", "I hate it", "It is fine"):
        text = text_of(await collect(provider, request(prompt, output_schema=OUTPUT_SCHEMA)))
        value = json.loads(text)
        jsonschema.validate(value, OUTPUT_SCHEMA)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love it", "positive"),
        ("Great service, would recommend.", "positive"),
        ("I hate it, worst purchase ever", "negative"),
        ("The parcel arrived on Tuesday.", "neutral"),
        ("Good screen but terrible battery and awful support", "negative"),
    ],
)
async def test_sentiment_label_follows_the_text(
    provider: SimulatedProvider, text: str, label: str
) -> None:
    prompt = f"Classify the sentiment of the following text. Answer with JSON.\n\n{text}"
    value = json.loads(
        text_of(await collect(provider, request(prompt, output_schema=OUTPUT_SCHEMA)))
    )
    assert value["label"] == label


async def test_invalid_output_does_not_validate(provider: SimulatedProvider) -> None:
    req = request("I love it", output_schema=OUTPUT_SCHEMA, invalid_output=True)
    value = json.loads(text_of(await collect(provider, req)))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, OUTPUT_SCHEMA)


async def test_usage_is_last_with_token_counts(provider: SimulatedProvider) -> None:
    prompt = "one two three four five"
    events = await collect(provider, request(prompt, length=9))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert isinstance(events[-1], Usage)
    assert [e for e in events if isinstance(e, Usage)] == [events[-1]]
    assert events[-1] == Usage(input_tokens=5, output_tokens=len(deltas))
    assert len(deltas) == 9
    record = provider.records["job-1:1"]
    assert record == StreamRecord(
        "job-1:1", tokens_emitted=9, finished=True, closed=True, closed_at_tokens=9
    )


async def test_phases_come_first(provider: SimulatedProvider) -> None:
    phases = ["planning", "searching", "writing"]
    events = await collect(provider, request(phases=phases, length=3))
    assert [e.phase for e in events[:3] if isinstance(e, Progress)] == phases
    assert all(isinstance(e, Progress) for e in events[:3])
    assert not any(isinstance(e, Progress) for e in events[3:])
    assert isinstance(events[3], TextDelta)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", FAILURES, ids=[c.value for c in FAILURES])
async def test_failure_raises_after_n_tokens(provider: SimulatedProvider, code: ErrorCode) -> None:
    seen: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as raised:
        await collect(provider, request(fail=code.value, fail_after_tokens=4), into=seen)
    assert raised.value.code == code
    assert len(seen) == 4
    assert all(isinstance(e, TextDelta) for e in seen)
    record = provider.records["job-1:1"]
    assert record.tokens_emitted == 4
    assert not record.finished
    assert record.closed
    assert raised.value.to_job_error().code == code


async def test_failure_before_first_token(provider: SimulatedProvider) -> None:
    with pytest.raises(ProviderError) as raised:
        await collect(provider, request(fail="PROVIDER_UNAVAILABLE"))
    assert raised.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert provider.records["job-1:1"].tokens_emitted == 0


async def test_rate_limited_carries_retry_after(provider: SimulatedProvider) -> None:
    req = request(fail="PROVIDER_RATE_LIMITED", fail_after_tokens=2, retry_after_seconds=7.5)
    with pytest.raises(ProviderError) as raised:
        await collect(provider, req)
    assert raised.value.code == ErrorCode.PROVIDER_RATE_LIMITED
    assert raised.value.retry_after_seconds == 7.5
    job_error = raised.value.to_job_error()
    assert job_error.retry_after_seconds == 7.5
    assert job_error.retryable


async def test_error_body_kept_on_exception_not_in_str(provider: SimulatedProvider) -> None:
    body = '{"error": "upstream secret sk-123 overloaded"}'
    req = request(fail="PROVIDER_UNAVAILABLE", fail_after_tokens=1, error_body=body)
    with pytest.raises(ProviderError) as raised:
        await collect(provider, req)
    assert raised.value.body == body
    assert "sk-123" not in str(raised.value)
    assert "sk-123" not in repr(raised.value)
    assert str(raised.value) == "PROVIDER_UNAVAILABLE"
    job_error = raised.value.to_job_error()
    assert "sk-123" not in json.dumps(job_error.to_json())


async def test_unsupported_failure_code_is_refused(provider: SimulatedProvider) -> None:
    with pytest.raises(ValueError, match="cannot fail with"):
        await collect(provider, request(fail="BUDGET_EXCEEDED"))


# -- stopping ------------------------------------------------------------------------------


async def _drain_ready_callbacks(rounds: int = 20) -> None:
    """Give any task that could still run a chance to; used to show nothing more happens."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_aclose_mid_stream_stops_tokens(provider: SimulatedProvider) -> None:
    stream = provider.stream(request(length=50))
    assert isinstance(stream, AsyncIterator)
    for _ in range(5):
        event = await anext(stream)
        assert isinstance(event, TextDelta)
    record = provider.records["job-1:1"]
    assert not record.closed

    await stream.aclose()  # type: ignore[attr-defined]

    assert record.closed
    assert record.closed_at_tokens == 5
    assert not record.finished
    await _drain_ready_callbacks()
    assert record.tokens_emitted == 5
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert record.tokens_emitted == 5


async def test_cancelling_consumer_stops_tokens(provider: SimulatedProvider) -> None:
    # No explicit aclose(): cancelling the consuming task alone must stop the inference.
    req = request(length=500)
    reached = asyncio.Event()
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for event in provider.stream(req):
            if isinstance(event, TextDelta):
                seen += 1
                if seen == 3:
                    reached.set()

    task = asyncio.create_task(consume())
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    record = provider.records["job-1:1"]
    assert record.closed
    assert not record.finished
    stopped_at = record.tokens_emitted
    assert record.closed_at_tokens == stopped_at
    assert 3 <= stopped_at < 500
    await _drain_ready_callbacks()
    assert record.tokens_emitted == stopped_at


async def test_stall_stops_producing_without_finishing(provider: SimulatedProvider) -> None:
    req = request(length=40, stall_after_tokens=6)
    reached = asyncio.Event()
    events: list[ProviderEvent] = []

    async def consume() -> None:
        async for event in provider.stream(req):
            events.append(event)
            if provider.records["job-1:1"].tokens_emitted == 6:
                reached.set()

    task = asyncio.create_task(consume())
    await reached.wait()
    record = provider.records["job-1:1"]
    await _drain_ready_callbacks()
    # Still running, stuck after exactly six tokens: no seventh, no Usage, not finished.
    assert not task.done()
    assert record.tokens_emitted == 6
    assert len(events) == 6
    assert not record.finished
    assert not record.closed

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record.closed
    assert record.closed_at_tokens == 6
    assert record.tokens_emitted == 6
    assert not any(isinstance(e, Usage) for e in events)


async def test_records_are_bounded_and_cleared() -> None:
    provider = SimulatedProvider(keep_records=2)
    for i in range(3):
        await collect(provider, request(request_id=f"r{i}", length=1))
    assert list(provider.records) == ["r1", "r2"]
    await provider.aclose()
    assert provider.records == {}


async def test_error_body_kept_when_failing_after_the_last_token(
    provider: SimulatedProvider,
) -> None:
    req = request(length=3, fail="PROVIDER_UNAVAILABLE", fail_after_tokens=10, error_body="b")
    seen: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as raised:
        await collect(provider, req, into=seen)
    assert len(seen) == 3
    assert raised.value.body == "b"
