"""What a task is: the behavioural contract a job runs under."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MICROS_PER_DOLLAR = 1_000_000


class InjectionPolicy(StrEnum):
    BLOCK = "block"
    FLAG = "flag"
    OFF = "off"


def parse_policy(value: str) -> InjectionPolicy:
    """The policy named by ``value`` (case and surrounding blanks ignored), or ValueError."""
    choices = ", ".join(repr(p.value) for p in InjectionPolicy)
    if not isinstance(value, str):
        raise ValueError(
            f"prompt-injection policy must be a string, one of {choices}; "
            f"got {type(value).__name__} {value!r}"
        )
    try:
        return InjectionPolicy(value.strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown prompt-injection policy {value!r}; expected one of {choices}"
        ) from None


class Tier(StrEnum):
    SIMPLE = "simple"
    GENERATIVE = "generative"
    AGENT = "agent"


DEFAULT_DEADLINE_SECONDS: dict[Tier, int] = {
    Tier.SIMPLE: 15,
    Tier.GENERATIVE: 60,
    Tier.AGENT: 30 * 60,
}

# How long `submitJob(wait:)` may hold the request, per tier; agent work never waits.
MAX_WAIT_SECONDS: dict[Tier, int] = {Tier.SIMPLE: 15, Tier.GENERATIVE: 60, Tier.AGENT: 0}


@dataclass(frozen=True)
class ModelRef:
    provider: str
    name: str
    version: str


@dataclass(frozen=True)
class Pricing:
    """Dollars per 1,000 tokens."""

    input_per_1k: float
    output_per_1k: float

    def cost_micros(self, input_tokens: int, output_tokens: int) -> int:
        micros = (
            (input_tokens * self.input_per_1k + output_tokens * self.output_per_1k)
            * MICROS_PER_DOLLAR
            / 1000
        )
        return round(micros)


@dataclass(frozen=True)
class TaskContract:
    api_version: str
    name: str
    tier: Tier
    description: str
    prompt_template: str
    prompt_version: str
    model: ModelRef
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    pricing: Pricing
    max_output_tokens: int
    deadline_seconds: int
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    # Prompt-injection screening of the input at submit: block, flag or off.
    injection: InjectionPolicy = InjectionPolicy.FLAG

    @property
    def max_wait_seconds(self) -> int:
        return min(MAX_WAIT_SECONDS[self.tier], self.deadline_seconds)

    def render_prompt(self, task_input: Mapping[str, Any]) -> str:
        values = {
            key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            for key, value in task_input.items()
        }
        return string.Template(self.prompt_template).safe_substitute(values)


class TaskRegistry:
    """The tasks of every API version, looked up by (version, name)."""

    def __init__(self, tasks: Iterable[TaskContract]) -> None:
        self._tasks: dict[tuple[str, str], TaskContract] = {}
        for task in tasks:
            self._tasks[(task.api_version, task.name)] = task

    def get(self, api_version: str, name: str) -> TaskContract | None:
        return self._tasks.get((api_version, name))

    def all(self) -> list[TaskContract]:
        return list(self._tasks.values())

    def for_version(self, api_version: str) -> list[TaskContract]:
        return sorted(
            (t for (v, _), t in self._tasks.items() if v == api_version), key=lambda t: t.name
        )
