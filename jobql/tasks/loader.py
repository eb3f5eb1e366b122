"""Load task contracts from a TOML file: one table per API version, one sub-table per task."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from jobql.tasks.contracts import (
    DEFAULT_DEADLINE_SECONDS,
    InjectionPolicy,
    ModelRef,
    Pricing,
    TaskContract,
    TaskRegistry,
    Tier,
    parse_policy,
)


class TaskConfigError(ValueError):
    """The tasks file is malformed; the message names the task and the key."""


def load_tasks(path: Path) -> TaskRegistry:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskConfigError(f"cannot read tasks file {path}: {exc}") from exc
    tasks: list[TaskContract] = []
    for api_version, version_table in data.items():
        if not (api_version.startswith("v") and api_version[1:].isdigit()):
            raise TaskConfigError(f"{path}: top-level key {api_version!r} is not an API version")
        if not isinstance(version_table, dict):
            raise TaskConfigError(f"{path}: {api_version} must be a table of tasks")
        for name, spec in version_table.items():
            tasks.append(_parse_task(api_version, name, spec))
    return TaskRegistry(tasks)


def _parse_task(api_version: str, name: str, spec: dict[str, Any]) -> TaskContract:
    where = f"task {api_version}.{name}"
    if not isinstance(spec, dict):
        raise TaskConfigError(f"{where}: must be a table")
    try:
        tier = Tier(spec["tier"])
        model = spec["model"]
        pricing = spec.get("pricing", {})
        input_schema = spec["input_schema"]
        output_schema = spec.get("output_schema")
        for schema in (input_schema, output_schema):
            if schema is not None:
                Draft202012Validator.check_schema(schema)
        return TaskContract(
            api_version=api_version,
            name=name,
            tier=tier,
            description=spec.get("description", ""),
            prompt_template=spec["prompt"],
            prompt_version=str(spec["prompt_version"]),
            model=ModelRef(
                provider=model["provider"], name=model["name"], version=str(model["version"])
            ),
            input_schema=input_schema,
            output_schema=output_schema,
            pricing=Pricing(
                input_per_1k=float(pricing.get("input_per_1k", 0.0)),
                output_per_1k=float(pricing.get("output_per_1k", 0.0)),
            ),
            max_output_tokens=_positive(spec.get("max_output_tokens", 1024), "max_output_tokens"),
            deadline_seconds=_positive(
                spec.get("deadline_seconds", DEFAULT_DEADLINE_SECONDS[tier]), "deadline_seconds"
            ),
            provider_options=dict(model.get("options", {})),
            injection=parse_policy(spec.get("injection", InjectionPolicy.FLAG.value)),
        )
    except KeyError as exc:
        raise TaskConfigError(f"{where}: missing key {exc}") from exc
    except (ValueError, TypeError, AttributeError, SchemaError) as exc:
        raise TaskConfigError(f"{where}: {exc}") from exc


def _positive(value: Any, key: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{key} must be a positive integer")
    return number
