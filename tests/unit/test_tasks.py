"""Task contracts: the demo file, malformed files, prompt rendering, prices and waits."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobql.settings import DEMO_TASKS_FILE
from jobql.tasks import ModelRef, Pricing, TaskConfigError, TaskContract, Tier, load_tasks
from jobql.tasks.contracts import DEFAULT_DEADLINE_SECONDS, MAX_WAIT_SECONDS

VALID_TASK = """
[v1.echo]
tier = "simple"
description = "Echo."
prompt_version = "2026-01-01"
prompt = "Echo: $text"
model = { provider = "simulated", name = "sim", version = "sim-1" }
input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def contract(**overrides: Any) -> TaskContract:
    fields: dict[str, Any] = {
        "api_version": "v1",
        "name": "t",
        "tier": Tier.SIMPLE,
        "description": "",
        "prompt_template": "Do $text",
        "prompt_version": "1",
        "model": ModelRef("simulated", "sim", "sim-1"),
        "input_schema": {"type": "object"},
        "output_schema": None,
        "pricing": Pricing(0.0, 0.0),
        "max_output_tokens": 100,
        "deadline_seconds": DEFAULT_DEADLINE_SECONDS[overrides.get("tier", Tier.SIMPLE)],
    }
    fields.update(overrides)
    return TaskContract(**fields)


# -- the demo file -------------------------------------------------------------------------


def test_demo_tasks_load_one_per_tier() -> None:
    registry = load_tasks(DEMO_TASKS_FILE)
    tasks = registry.for_version("v1")
    assert [t.name for t in tasks] == ["classify", "research", "summarize"]
    by_tier = {t.tier: t for t in tasks}
    assert len(by_tier) == 3
    assert by_tier[Tier.SIMPLE].name == "classify"
    assert by_tier[Tier.GENERATIVE].name == "summarize"
    assert by_tier[Tier.AGENT].name == "research"
    assert {tier: t.deadline_seconds for tier, t in by_tier.items()} == {
        Tier.SIMPLE: 15,
        Tier.GENERATIVE: 60,
        Tier.AGENT: 1800,
    }


def test_demo_task_contract_fields() -> None:
    registry = load_tasks(DEMO_TASKS_FILE)
    classify = registry.get("v1", "classify")
    assert classify is not None
    assert classify.api_version == "v1"
    assert classify.prompt_version == "2026-11-01"
    assert classify.model == ModelRef("simulated", "sim-small", "sim-small-2026-10")
    assert classify.output_schema is not None
    assert classify.output_schema["required"] == ["label", "confidence"]
    assert classify.pricing == Pricing(input_per_1k=0.0005, output_per_1k=0.0015)
    assert classify.max_output_tokens == 64
    assert dict(classify.provider_options) == {"ttft_ms": 120, "tokens_per_second": 80}

    research = registry.get("v1", "research")
    assert research is not None
    assert research.output_schema is None
    assert research.provider_options["phases"] == ["planning", "searching", "reading", "writing"]

    assert registry.get("v1", "nope") is None
    # v2 pins its own contract for the same task name: new prompt, model and output schema.
    v2_classify = registry.get("v2", "classify")
    assert v2_classify is not None
    assert v2_classify.api_version == "v2"
    assert v2_classify.prompt_version != classify.prompt_version
    assert v2_classify.model.version != classify.model.version
    assert v2_classify.output_schema != classify.output_schema
    assert {t.api_version for t in registry.for_version("v2")} == {"v2"}
    assert "v2" not in {t.api_version for t in registry.for_version("v1")}


def test_minimal_task_gets_defaults(tmp_path: Path) -> None:
    task = load_tasks(write(tmp_path, VALID_TASK)).get("v1", "echo")
    assert task is not None
    assert task.deadline_seconds == DEFAULT_DEADLINE_SECONDS[Tier.SIMPLE]
    assert task.max_output_tokens == 1024
    assert task.pricing == Pricing(0.0, 0.0)
    assert task.output_schema is None
    assert dict(task.provider_options) == {}


def test_versions_are_kept_apart(tmp_path: Path) -> None:
    text = VALID_TASK + VALID_TASK.replace("[v1.echo]", "[v2.echo]").replace("Echo:", "Say:")
    registry = load_tasks(write(tmp_path, text))
    v1, v2 = registry.get("v1", "echo"), registry.get("v2", "echo")
    assert v1 is not None
    assert v2 is not None
    assert v1.prompt_template == "Echo: $text"
    assert v2.prompt_template == "Say: $text"


# -- malformed files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(VALID_TASK.replace('tier = "simple"\n', ""), "missing key 'tier'", id="tier"),
        pytest.param(
            VALID_TASK.replace('prompt = "Echo: $text"\n', ""), "missing key 'prompt'", id="prompt"
        ),
        pytest.param(
            VALID_TASK.replace('provider = "simulated", ', ""),
            "missing key 'provider'",
            id="model.provider",
        ),
        pytest.param(
            VALID_TASK.replace("input_schema", "inputschema"),
            "missing key 'input_schema'",
            id="input_schema",
        ),
        pytest.param(VALID_TASK.replace('"simple"', '"wizard"'), "wizard", id="bad-tier"),
        pytest.param(
            VALID_TASK.replace('type = "object"', 'type = "nope"', 1), "nope", id="bad-input-schema"
        ),
        pytest.param(
            VALID_TASK + 'output_schema = { type = "object", required = "label" }\n',
            "label",
            id="bad-output-schema",
        ),
        pytest.param(
            VALID_TASK + 'max_output_tokens = "lots"\n', "lots", id="bad-max-output-tokens"
        ),
        pytest.param(VALID_TASK.replace("[v1.echo]", "[v1]\necho = 3\n[x]"), "", id="not-a-table"),
    ],
)
def test_malformed_task_names_the_task(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(TaskConfigError) as raised:
        load_tasks(write(tmp_path, text))
    message = str(raised.value)
    assert "task v1.echo" in message
    assert expected in message


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match="cannot read tasks file"):
        load_tasks(tmp_path / "missing.toml")
    with pytest.raises(TaskConfigError, match="cannot read tasks file"):
        load_tasks(write(tmp_path, "[v1.echo\n"))


@pytest.mark.parametrize("key", ["tasks", "version1", "v", "vx"])
def test_top_level_key_must_be_an_api_version(tmp_path: Path, key: str) -> None:
    with pytest.raises(TaskConfigError, match="is not an API version"):
        load_tasks(write(tmp_path, VALID_TASK.replace("[v1.echo]", f"[{key}.echo]")))


def test_non_table_pricing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match=r"task v1\.echo"):
        load_tasks(write(tmp_path, VALID_TASK + 'pricing = "cheap"\n'))


def test_non_table_version_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match="v1"):
        load_tasks(write(tmp_path, "v1 = 3\n"))


# -- prompts, prices, waits ----------------------------------------------------------------


def test_render_prompt_substitutes_fields() -> None:
    task = contract(prompt_template="Summarize in $max_words words:\n\n$text")
    assert task.render_prompt({"text": "The cat sat.", "max_words": 50}) == (
        "Summarize in 50 words:\n\nThe cat sat."
    )


def test_render_prompt_encodes_non_strings_as_sorted_json() -> None:
    task = contract(prompt_template="Data: $data; flag=$flag; tags=${tags}!")
    rendered = task.render_prompt({"data": {"b": 1, "a": [1, 2]}, "flag": True, "tags": ["x"]})
    assert rendered == 'Data: {"a": [1, 2], "b": 1}; flag=true; tags=["x"]!'


def test_render_prompt_leaves_unknown_placeholders_and_ignores_extras() -> None:
    task = contract(prompt_template="Hi $name, $missing costs $$5")
    assert task.render_prompt({"name": "Ada", "unused": "x"}) == "Hi Ada, $missing costs $5"


def test_render_prompt_does_not_expand_placeholders_inside_values() -> None:
    task = contract(prompt_template="Q: $question")
    assert task.render_prompt({"question": "what is $HOME?"}) == "Q: what is $HOME?"


@pytest.mark.parametrize(
    ("pricing", "input_tokens", "output_tokens", "micros"),
    [
        (Pricing(0.0, 0.0), 1_000_000, 1_000_000, 0),
        (Pricing(1.0, 2.0), 1000, 1000, 3_000_000),  # $1 + $2
        (Pricing(0.0005, 0.0015), 1000, 1000, 2000),  # $0.0005 + $0.0015
        (Pricing(0.003, 0.015), 1200, 345, 8775),  # $0.0036 + $0.005175
        (Pricing(0.01, 0.03), 0, 2000, 60_000),
        (Pricing(0.01, 0.03), 0, 0, 0),
        (Pricing(0.0005, 0.0), 1, 0, 0),  # 0.5 micros rounds to even: 0
        (Pricing(0.0015, 0.0), 1, 0, 2),  # 1.5 micros rounds to even: 2
        (Pricing(0.0025, 0.0), 1, 0, 2),  # 2.5 micros rounds to even: 2
        (Pricing(0.0004, 0.0), 1, 0, 0),
        (Pricing(0.0006, 0.0), 1, 0, 1),
    ],
)
def test_cost_micros(pricing: Pricing, input_tokens: int, output_tokens: int, micros: int) -> None:
    cost = pricing.cost_micros(input_tokens, output_tokens)
    assert isinstance(cost, int)
    assert cost == micros


def test_max_wait_seconds_per_tier() -> None:
    assert MAX_WAIT_SECONDS == {Tier.SIMPLE: 15, Tier.GENERATIVE: 60, Tier.AGENT: 0}
    assert contract(tier=Tier.SIMPLE).max_wait_seconds == 15
    assert contract(tier=Tier.GENERATIVE).max_wait_seconds == 60
    assert contract(tier=Tier.AGENT).max_wait_seconds == 0
    # A longer deadline does not lengthen the wait; the agent tier never waits.
    assert contract(tier=Tier.SIMPLE, deadline_seconds=600).max_wait_seconds == 15
    assert contract(tier=Tier.AGENT, deadline_seconds=7200).max_wait_seconds == 0


def test_max_wait_seconds_capped_by_deadline() -> None:
    assert contract(tier=Tier.SIMPLE, deadline_seconds=5).max_wait_seconds == 5
    assert contract(tier=Tier.GENERATIVE, deadline_seconds=30).max_wait_seconds == 30


def test_demo_tasks_max_wait() -> None:
    registry = load_tasks(DEMO_TASKS_FILE)
    waits = {t.name: t.max_wait_seconds for t in registry.for_version("v1")}
    assert waits == {"classify": 15, "summarize": 60, "research": 0}


@pytest.mark.parametrize("key", ["deadline_seconds", "max_output_tokens"])
@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_limits_are_config_errors(tmp_path: Path, key: str, value: int) -> None:
    with pytest.raises(TaskConfigError, match=key):
        load_tasks(write(tmp_path, VALID_TASK + f"{key} = {value}\n"))
