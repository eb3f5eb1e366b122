"""Pure checks on what a client submits: task input, idempotency keys, fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jsonschema import Draft202012Validator

from jobql.errors import InvalidInput, Violation

MAX_IDEMPOTENCY_KEY = 255


def json_path(prefix: str, path: Any) -> str:
    parts = [prefix]
    for part in path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts)


def validate_task_input(schema: dict[str, Any], value: Any) -> InvalidInput | None:
    """Check ``value`` against the task's input schema; violations name the field path."""
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    violations = []
    for error in errors[:20]:
        path = list(error.path)
        if error.validator == "required" and isinstance(error.validator_value, list):
            missing = [
                p
                for p in error.validator_value
                if isinstance(error.instance, dict) and p not in error.instance
            ]
            path += missing[:1]
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            extra = sorted(k for k in error.instance if k not in allowed)
            path += extra[:1]
        violations.append(Violation(json_path("input", path), error.message))
    return InvalidInput(
        field=violations[0].path,
        violations=tuple(violations),
        message=f"The input does not match the task's input schema ({violations[0].path}).",
    )


def with_defaults(schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """Fill top-level properties the schema gives a default for."""
    filled = dict(value)
    for name, prop in schema.get("properties", {}).items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = prop["default"]
    return filled


def check_idempotency_key(key: str) -> InvalidInput | None:
    if 1 <= len(key) <= MAX_IDEMPOTENCY_KEY and all(0x20 <= ord(c) <= 0x7E for c in key):
        return None
    violation = Violation("idempotencyKey", "Must be 1 to 255 printable ASCII characters.")
    return InvalidInput(
        field="idempotencyKey", violations=(violation,), message="Invalid idempotency key."
    )


def fingerprint(payload: dict[str, Any]) -> str:
    """A canonical hash: key order and whitespace in JSON do not change it."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def printable(text: str) -> str:
    """Drop control characters (NUL and the like) from free text a client sends us."""
    return "".join(c for c in text if c.isprintable() or c in "\n\t")
