"""CPU per streamed chunk of the HTTP providers, against a canned server-sent event body
served in-process by ``httpx.MockTransport`` (no sockets, so only client-side work counts).

    python bench/bench_providers.py --src /path/to/other/checkout --src .

measures each checkout's jobql in its own subprocess and prints one markdown table, with the
ratio of the first column to the last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROVIDERS = ("openai", "anthropic")
WORDS = [" the", " tide", " comes", " in", " twice", " a", " day", ".", " café", " 海"]


def openai_events(chunks: int) -> list[bytes]:
    """What vLLM or OpenAI send for a chat completion of ``chunks`` one-token deltas."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": "chatcmpl-9f3c2a7e5b1d4c6f8a0e2b4d6f8a0c2e",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [chunk([choice({"role": "assistant", "content": ""})])]
    events += [chunk([choice({"content": WORDS[i % len(WORDS)]})]) for i in range(chunks)]
    events.append(chunk([choice({}, "stop")]))
    usage = {"prompt_tokens": 11, "completion_tokens": chunks, "total_tokens": 11 + chunks}
    events.append(chunk([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_events(chunks: int) -> list[bytes]:
    """What Anthropic's Messages API sends for ``chunks`` one-token text deltas."""

    def event(kind: str, data: dict[str, Any]) -> bytes:
        body = json.dumps({"type": kind, **data}, ensure_ascii=False)
        return f"event: {kind}\ndata: {body}\n\n".encode()

    usage = {"input_tokens": 11, "output_tokens": 1}
    message: dict[str, Any] = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-20250514",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events = [
        event("message_start", {"message": message}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {}),
    ]
    events += [
        event(
            "content_block_delta",
            {"index": 0, "delta": {"type": "text_delta", "text": WORDS[i % len(WORDS)]}},
        )
        for i in range(chunks)
    ]
    events.append(event("content_block_stop", {"index": 0}))
    final = {"delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    events.append(event("message_delta", {**final, "usage": {"output_tokens": chunks}}))
    events.append(event("message_stop", {}))
    return events


def network_reads(events: list[bytes], seed: int = 0) -> list[bytes]:
    """The body as a socket hands it over while tokens trickle in: mostly one event per
    read, some reads holding two or three (the reader fell behind), some events cut in two
    (a TCP segment boundary), anywhere, including inside a multi-byte character."""
    rng = random.Random(seed)
    reads: list[bytes] = []
    i = 0
    while i < len(events):
        roll = rng.random()
        if roll < 0.15:
            take = rng.randint(2, 3)
            reads.append(b"".join(events[i : i + take]))
            i += take
        elif roll < 0.25:
            event = events[i]
            cut = rng.randint(1, len(event) - 1)
            reads += [event[:cut], event[cut:]]
            i += 1
        else:
            reads.append(events[i])
            i += 1
    return reads


def measure(provider: str, chunks: int, iterations: int, repeats: int) -> float:
    """Best of ``repeats`` runs of ``iterations`` streams each: CPU µs per text delta."""
    import httpx

    from jobql.providers.anthropic import AnthropicProvider
    from jobql.providers.base import ProviderRequest, TextDelta
    from jobql.providers.openai_compat import OpenAICompatibleProvider
    from jobql.settings import ProviderSettings

    events = openai_events(chunks) if provider == "openai" else anthropic_events(chunks)
    reads = network_reads(events)

    class Reads(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for read in reads:
                yield read

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream; charset=utf-8"}, stream=Reads()
        )

    config = ProviderSettings.model_validate(
        {"kind": provider, "base_url": "http://model.test/v1", "api_key": "k"}
    )
    cls = OpenAICompatibleProvider if provider == "openai" else AnthropicProvider
    model = cls("bench", config, transport=httpx.MockTransport(answer))
    request = ProviderRequest(
        request_id="r1", model="m", model_version="1", prompt="p", max_output_tokens=4096
    )

    async def one_stream() -> int:
        deltas = 0
        async for event in model.stream(request):
            if isinstance(event, TextDelta):
                deltas += 1
        return deltas

    async def run() -> list[float]:
        if (got := await one_stream()) != chunks:  # also warms up
            raise SystemExit(f"{provider}: expected {chunks} deltas, got {got}")
        runs = []
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(iterations):
                await one_stream()
            runs.append(time.process_time() - started)
        await model.aclose()
        return runs

    return min(asyncio.run(run())) / (iterations * chunks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src",
        action="append",
        help="a checkout whose jobql to measure (repeatable; default: this one)",
    )
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one checkout, JSON out
    args = parser.parse_args()

    if args.worker:
        sys.path.insert(0, args.worker)
        import jobql

        if not Path(jobql.__file__).resolve().is_relative_to(Path(args.worker).resolve()):
            raise SystemExit(f"imported {jobql.__file__}, not the one in {args.worker}")
        results = {p: measure(p, args.chunks, args.iterations, args.repeats) for p in PROVIDERS}
        print(json.dumps(results))
        return

    sources = [str(Path(s).resolve()) for s in (args.src or [HERE.parent])]
    # Checkouts take turns, round after round, so a busy spell on a shared machine
    # does not land on one of them only; each keeps its best.
    best: list[dict[str, float]] = [dict.fromkeys(PROVIDERS, float("inf")) for _ in sources]
    for _ in range(args.rounds):
        for column, src in zip(best, sources, strict=True):
            command = [sys.executable, __file__, "--worker", src]
            command += ["--chunks", str(args.chunks), "--iterations", str(args.iterations)]
            command += ["--repeats", str(args.repeats)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            for provider, us_per_chunk in json.loads(out).items():
                column[provider] = min(column[provider], us_per_chunk)

    print(
        f"CPU µs per chunk, best of {args.rounds} x {args.repeats} runs of {args.iterations} "
        f"streams of {args.chunks} one-token chunks\n"
    )
    header = "| provider | " + " | ".join(f"`{s}`" for s in sources) + " |"
    if len(sources) > 1:
        header += " ratio |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for provider in PROVIDERS:
        values = [column[provider] for column in best]
        row = f"| {provider} | " + " | ".join(f"{v:.2f}" for v in values) + " |"
        if len(sources) > 1:
            row += f" {values[0] / values[-1]:.2f}x |"
        print(row)


if __name__ == "__main__":
    main()
