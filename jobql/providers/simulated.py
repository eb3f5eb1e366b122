"""A built-in provider that streams deterministic output, with configurable speed and faults.

Options (a task's ``model.options``):
    ttft_ms              delay before the first token (default 0)
    tokens_per_second    pace of tokens after the first (default 50; 0 = as fast as possible)
    length               output tokens for free text (default 60, capped by max_output_tokens)
    phases, phase_ms     Progress phases reported before writing (agent-style work)
    fail                 an error code (PROVIDER_UNAVAILABLE, PROVIDER_TIMEOUT,
                         PROVIDER_RATE_LIMITED, CONTENT_FILTERED, INTERNAL) raised after
    fail_after_tokens    this many tokens (default 0)
    retry_after_seconds  sent with PROVIDER_RATE_LIMITED
    error_body           what a real provider's error body would say; kept off every response
    stall_after_tokens   stop producing (without ending) after this many tokens
    invalid_output       emit JSON that does not match the task's output schema

Structured output is a deterministic instance of the task's output schema, seeded by the
prompt; a sentiment label (an enum of positive / negative / neutral) follows a small word
list instead, so that a demo classifier calls "I love it" positive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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

_WORDS = [
    "the",
    "model",
    "reads",
    "your",
    "text",
    "and",
    "writes",
    "a",
    "careful",
    "answer",
    "with",
    "clear",
    "steps",
    "short",
    "sentences",
    "useful",
    "facts",
    "plain",
    "words",
    "and",
    "a",
    "calm",
    "tone",
    "so",
    "that",
    "every",
    "reader",
    "can",
    "follow",
    "the",
    "reasoning",
    "from",
    "the",
    "first",
    "idea",
    "to",
    "the",
    "last",
    "result",
    "while",
    "the",
    "stream",
    "keeps",
    "arriving",
    "token",
    "by",
    "token",
]

_FAILURES = {
    ErrorCode.PROVIDER_UNAVAILABLE,
    ErrorCode.PROVIDER_TIMEOUT,
    ErrorCode.PROVIDER_RATE_LIMITED,
    ErrorCode.CONTENT_FILTERED,
    ErrorCode.INTERNAL,
}


@dataclass
class StreamRecord:
    """What one simulated inference did; tests read these to prove cancellation stops it."""

    request_id: str
    tokens_emitted: int = 0
    finished: bool = False
    closed: bool = False
    closed_at_tokens: int | None = None
    # Set once the stream is over (finished, failed or closed), for tests to await.
    stopped: asyncio.Event = field(default_factory=asyncio.Event, compare=False, repr=False)


def _seeded(prompt: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big"))


# Word lists for the simulated sentiment label (one string each: easier to read and extend).
_POSITIVE = frozenset(
    "love loved lovely like liked great good excellent amazing awesome wonderful fantastic "  # noqa: SIM905
    "happy glad enjoy enjoyed best perfect nice delightful brilliant pleased recommend".split()
)
_NEGATIVE = frozenset(
    "hate hated dislike bad terrible awful horrible worst poor sad angry disappointed "  # noqa: SIM905
    "disappointing broken useless annoying slow refund never boring ugly".split()
)


def sentiment(text: str) -> str:
    """positive, negative or neutral, by counting words of two small lists."""
    words = re.findall(r"[a-z]+", text.lower())
    score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def _choose(options: list[Any], rng: random.Random, prompt: str) -> Any:
    if {"positive", "negative", "neutral"} <= set(options):
        return sentiment(prompt)
    return rng.choice(options)


def example_for_schema(schema: dict[str, Any], rng: random.Random, prompt: str = "") -> Any:
    """A deterministic instance of a (simple) JSON Schema."""
    if "enum" in schema:
        return _choose(schema["enum"], rng, prompt)
    kind = schema.get("type", "object")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        return {name: example_for_schema(sub, rng, prompt) for name, sub in props.items()}
    if kind == "array":
        return [example_for_schema(schema.get("items", {}), rng, prompt) for _ in range(2)]
    if kind == "number":
        low, high = schema.get("minimum", 0), schema.get("maximum", 1)
        return round(rng.uniform(low, high), 2)
    if kind == "integer":
        return rng.randint(schema.get("minimum", 0), schema.get("maximum", 100))
    if kind == "boolean":
        return rng.random() < 0.5
    return " ".join(rng.choice(_WORDS) for _ in range(3))


def simulated_tokens(request: ProviderRequest) -> list[str]:
    """The output, as the token pieces it streams in; the same prompt gives the same pieces."""
    rng = _seeded(request.prompt)
    if request.output_schema is not None:
        value = example_for_schema(request.output_schema, rng, request.prompt)
        if request.options.get("invalid_output"):
            value = {"unexpected": value}
        text = json.dumps(value)
        pieces = text.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(pieces)]
    length = min(int(request.options.get("length", 60)), request.max_output_tokens)
    words = [rng.choice(_WORDS) for _ in range(length)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _failure(code: ErrorCode, opts: Mapping[str, Any]) -> ProviderError:
    return ProviderError(
        code, retry_after_seconds=opts.get("retry_after_seconds"), body=opts.get("error_body")
    )


class SimulatedProvider:
    name = "simulated"

    def __init__(self, keep_records: int = 1000) -> None:
        self._keep = keep_records
        self.records: OrderedDict[str, StreamRecord] = OrderedDict()

    def _record(self, request_id: str) -> StreamRecord:
        record = StreamRecord(request_id)
        self.records[request_id] = record
        while len(self.records) > self._keep:
            self.records.popitem(last=False)
        return record

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        opts = request.options
        record = self._record(request.request_id)
        pieces = simulated_tokens(request)
        tps = float(opts.get("tokens_per_second", 50))
        interval = 1.0 / tps if tps > 0 else 0.0
        fail = ErrorCode(opts["fail"]) if "fail" in opts else None
        if fail is not None and fail not in _FAILURES:
            raise ValueError(f"simulated provider cannot fail with {fail}")
        fail_after = int(opts.get("fail_after_tokens", 0))
        stall_after = opts.get("stall_after_tokens")
        try:
            for phase in opts.get("phases", []):
                yield Progress(phase=phase, message=f"{phase}…")
                await asyncio.sleep(float(opts.get("phase_ms", 0)) / 1000)
            await asyncio.sleep(float(opts.get("ttft_ms", 0)) / 1000)
            for index, piece in enumerate(pieces):
                if fail is not None and index >= fail_after:
                    raise _failure(fail, opts)
                if stall_after is not None and index >= int(stall_after):
                    await asyncio.Event().wait()
                if index:
                    await asyncio.sleep(interval)
                record.tokens_emitted += 1
                yield TextDelta(text=piece, tokens=1)
            if fail is not None:
                raise _failure(fail, opts)
            yield Usage(input_tokens=count_tokens(request.prompt), output_tokens=len(pieces))
            record.finished = True
        finally:
            record.closed = True
            record.closed_at_tokens = record.tokens_emitted
            record.stopped.set()

    async def aclose(self) -> None:
        self.records.clear()
