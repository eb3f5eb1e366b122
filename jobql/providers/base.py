"""The Provider protocol: stream a completion as deltas, progress and a usage report."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobql.errors import ErrorCode, JobError


@dataclass(frozen=True)
class ProviderRequest:
    """One inference call. ``request_id`` is unique per attempt of a job."""

    request_id: str
    model: str
    model_version: str
    prompt: str
    max_output_tokens: int
    output_schema: dict[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def count_tokens(text: str) -> int:
    """A rough token count (whitespace words): for estimates before a provider reports the
    real usage, and the simulated provider's own accounting."""
    return len(text.split())


# Not frozen, with slots: one is made per streamed chunk, and frozen ones cost twice as much.
@dataclass(slots=True)
class TextDelta:
    text: str
    tokens: int


@dataclass(frozen=True)
class Progress:
    phase: str
    message: str = ""


@dataclass(frozen=True)
class Usage:
    """Authoritative token counts; a provider sends it once, at the end."""

    input_tokens: int
    output_tokens: int


ProviderEvent = TextDelta | Progress | Usage


class ProviderError(Exception):
    """A provider failure, already classified. ``str()`` never holds a provider body."""

    def __init__(
        self,
        code: ErrorCode,
        *,
        retry_after_seconds: float | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(code.value)
        self.code = code
        self.retry_after_seconds = retry_after_seconds
        # The upstream response body, for debugging only: never logged by default, never
        # written to a job, an event or a response.
        self.body = body

    def to_job_error(self) -> JobError:
        return JobError(code=self.code, retry_after_seconds=self.retry_after_seconds)


class Provider(Protocol):
    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Stream the completion. Closing the iterator must stop the inference."""
        ...

    async def aclose(self) -> None: ...
