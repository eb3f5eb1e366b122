"""The v2 task tables: their own prompt, model and output schema versions, and a job's
output checked against the contract of its own version."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobql.errors import ErrorCode
from jobql.providers.base import ProviderRequest
from jobql.providers.simulated import simulated_tokens
from jobql.settings import DEMO_TASKS_FILE
from jobql.tasks import TaskContract
from jobql.tasks.loader import load_tasks
from jobql.worker.runner import validate_output

TEST_TASKS = Path(__file__).parent.parent / "tasks.toml"


def contract(path: Path, version: str, name: str) -> TaskContract:
    task = load_tasks(path).get(version, name)
    assert task is not None, f"{version}.{name} in {path.name}"
    return task


def simulated_output(task: TaskContract, text: str) -> str:
    """What the simulated model answers for this task (deterministic for a prompt)."""
    request = ProviderRequest(
        request_id="r",
        model=task.model.name,
        model_version=task.model.version,
        prompt=task.render_prompt({"text": text}),
        max_output_tokens=task.max_output_tokens,
        output_schema=task.output_schema,
        options=task.provider_options,
    )
    return "".join(simulated_tokens(request))


@pytest.mark.parametrize("path", [DEMO_TASKS_FILE, TEST_TASKS], ids=["demo", "tests"])
def test_v2_classify_is_a_contract_of_its_own(path: Path) -> None:
    v1 = contract(path, "v1", "classify")
    v2 = contract(path, "v2", "classify")
    assert (v2.api_version, v1.api_version) == ("v2", "v1")
    assert v2.prompt_version != v1.prompt_version
    assert v2.model.version != v1.model.version
    assert v1.output_schema is not None
    assert v2.output_schema is not None
    assert "scores" in v2.output_schema["required"]
    assert "scores" not in v1.output_schema["properties"]


@pytest.mark.parametrize("path", [DEMO_TASKS_FILE, TEST_TASKS], ids=["demo", "tests"])
def test_each_version_lists_its_own_tables_only(path: Path) -> None:
    registry = load_tasks(path)
    v2 = registry.for_version("v2")
    assert v2
    assert {t.api_version for t in v2} == {"v2"}
    assert {t.api_version for t in registry.for_version("v1")} == {"v1"}


def test_output_is_checked_against_the_schema_of_its_own_version() -> None:
    v1 = contract(TEST_TASKS, "v1", "classify")
    v2 = contract(TEST_TASKS, "v2", "classify")
    v2_output = simulated_output(v2, "I love it")
    result, error = validate_output(v2, v2_output)
    assert error is None
    assert result is not None
    assert result["label"] == "positive"
    assert set(result["scores"]) == {"positive", "negative", "neutral"}

    v1_output = simulated_output(v1, "I love it")
    v1_result, v1_error = validate_output(v1, v1_output)
    assert v1_error is None
    assert v1_result is not None
    assert "scores" not in v1_result
    # The v1 answer lacks the scores v2 requires: under the v2 contract it is a mismatch.
    _, mismatch = validate_output(v2, v1_output)
    assert mismatch is not None
    assert mismatch.code is ErrorCode.OUTPUT_SCHEMA_MISMATCH
    assert [v.path for v in mismatch.violations] == ["result"]
    assert "scores" in mismatch.violations[0].message
