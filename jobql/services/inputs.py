"""Pure checks on what a client submits: task input, idempotency keys, fingerprints."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from jsonschema import Draft202012Validator

from jobql.errors import InvalidInput, Violation

MAX_IDEMPOTENCY_KEY = 255

MAX_JSON_DEPTH = 64
"""Nesting of arrays and objects in a JSON value a client sends (a request body too)."""
MAX_INT_DIGITS = 100
"""Digits of one integer in a JSON value a client sends."""
_INT_BOUND = 10**MAX_INT_DIGITS


def json_problem(value: Any) -> str | None:
    """Why ``value`` (JSON a client sent, already parsed) cannot be stored and read back
    as JSON, or None. GraphQL literals reach us unchecked: `1e999` is infinity, an integer
    literal over 4300 digits is NaN, and an object literal may nest deeper than any
    reader wants; a lone UTF-16 surrogate cannot be encoded as UTF-8 at all."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return "Numbers must be finite (no NaN or Infinity)."
        elif isinstance(item, int):
            if not -_INT_BOUND < item < _INT_BOUND:
                return f"Integers may have at most {MAX_INT_DIGITS} digits."
        elif isinstance(item, str):
            if not item.isascii() and _has_lone_surrogate(item):
                return "Strings must not contain lone UTF-16 surrogates."
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"JSON may nest arrays and objects at most {MAX_JSON_DEPTH} deep."
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_json(field: str, value: Any) -> InvalidInput | None:
    """InvalidInput for ``field`` when its JSON value cannot be stored (see json_problem)."""
    if (problem := json_problem(value)) is None:
        return None
    return InvalidInput(
        field=field, violations=(Violation(field, problem),), message=f"Invalid {field}: {problem}"
    )


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
