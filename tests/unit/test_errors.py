"""The error taxonomy: default messages, which failures are retryable, JSON round trips."""

from __future__ import annotations

import json

import pytest

from jobql.errors import (
    DEFAULT_MESSAGES,
    RETRYABLE,
    ErrorCode,
    InvalidInput,
    JobError,
    JobNotCancellable,
    NotFound,
    Violation,
    is_retryable,
)

JOB_FAILURES = [
    ErrorCode.PROVIDER_UNAVAILABLE,
    ErrorCode.PROVIDER_TIMEOUT,
    ErrorCode.PROVIDER_RATE_LIMITED,
    ErrorCode.OUTPUT_SCHEMA_MISMATCH,
    ErrorCode.CONTENT_FILTERED,
    ErrorCode.DEADLINE_EXCEEDED,
    ErrorCode.BUDGET_EXCEEDED,
    ErrorCode.WORKER_LOST,
    ErrorCode.INTERNAL,
]


@pytest.mark.parametrize("code", JOB_FAILURES, ids=str)
def test_job_error_default_message(code: ErrorCode) -> None:
    error = JobError(code)
    assert error.message == DEFAULT_MESSAGES[code]
    assert error.message
    assert error.retry_after_seconds is None
    assert error.violations == ()


def test_every_job_failure_has_its_own_default_message() -> None:
    assert set(DEFAULT_MESSAGES) == set(JOB_FAILURES)
    assert len(set(DEFAULT_MESSAGES.values())) == len(JOB_FAILURES)


def test_job_error_generic_default_for_request_codes() -> None:
    assert JobError(ErrorCode.NOT_FOUND).message == "The job failed."


def test_explicit_message_is_kept() -> None:
    assert JobError(ErrorCode.INTERNAL, message="Custom.").message == "Custom."


def test_job_error_is_immutable() -> None:
    error = JobError(ErrorCode.INTERNAL)
    with pytest.raises(AttributeError):
        error.message = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.PROVIDER_UNAVAILABLE,
        ErrorCode.PROVIDER_TIMEOUT,
        ErrorCode.PROVIDER_RATE_LIMITED,
        ErrorCode.OUTPUT_SCHEMA_MISMATCH,
    ],
    ids=str,
)
def test_retryable_codes(code: ErrorCode) -> None:
    assert is_retryable(code)
    assert JobError(code).retryable


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.CONTENT_FILTERED,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.BUDGET_EXCEEDED,
        ErrorCode.INVALID_INPUT,
        ErrorCode.NOT_FOUND,
        ErrorCode.JOB_NOT_CANCELLABLE,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
    ],
    ids=str,
)
def test_non_retryable_codes(code: ErrorCode) -> None:
    assert not is_retryable(code)
    assert not JobError(code).retryable


def test_every_provider_code_is_retryable() -> None:
    provider_codes = {c for c in ErrorCode if c.value.startswith("PROVIDER_")}
    assert len(provider_codes) == 3
    assert provider_codes <= RETRYABLE


def test_retryable_set_is_exactly() -> None:
    assert {
        ErrorCode.RATE_LIMITED,
        ErrorCode.CONCURRENCY_LIMIT_EXCEEDED,
        ErrorCode.SERVICE_UNAVAILABLE,
        ErrorCode.PROVIDER_UNAVAILABLE,
        ErrorCode.PROVIDER_TIMEOUT,
        ErrorCode.PROVIDER_RATE_LIMITED,
        ErrorCode.OUTPUT_SCHEMA_MISMATCH,
        ErrorCode.WORKER_LOST,
        ErrorCode.INTERNAL,
    } == RETRYABLE


@pytest.mark.parametrize(
    "error",
    [
        JobError(ErrorCode.INTERNAL),
        JobError(ErrorCode.PROVIDER_RATE_LIMITED, retry_after_seconds=2.5),
        JobError(ErrorCode.PROVIDER_TIMEOUT, message="Slow upstream.", retry_after_seconds=0.0),
        JobError(
            ErrorCode.OUTPUT_SCHEMA_MISMATCH,
            violations=(
                Violation("output.label", "'maybe' is not one of ['positive', 'negative']"),
                Violation("output", "'confidence' is a required property"),
            ),
        ),
    ],
)
def test_json_round_trip(error: JobError) -> None:
    data = error.to_json()
    # It survives real JSON encoding too, as stored in a job row or an event payload.
    restored = JobError.from_json(json.loads(json.dumps(data)))
    assert restored == error
    assert restored.retryable == error.retryable


def test_to_json_shape() -> None:
    error = JobError(
        ErrorCode.PROVIDER_RATE_LIMITED,
        retry_after_seconds=3.0,
        violations=(Violation("a.b", "bad"),),
    )
    assert error.to_json() == {
        "code": "PROVIDER_RATE_LIMITED",
        "message": "The model provider is rate limiting requests.",
        "retryAfterSeconds": 3.0,
        "violations": [{"path": "a.b", "message": "bad"}],
    }


def test_from_json_minimal_fills_defaults() -> None:
    restored = JobError.from_json({"code": "DEADLINE_EXCEEDED"})
    assert restored == JobError(ErrorCode.DEADLINE_EXCEEDED)
    assert restored.message == DEFAULT_MESSAGES[ErrorCode.DEADLINE_EXCEEDED]


def test_from_json_rejects_unknown_code() -> None:
    with pytest.raises(ValueError, match="NOPE"):
        JobError.from_json({"code": "NOPE"})


def test_request_error_defaults() -> None:
    assert NotFound().code == ErrorCode.NOT_FOUND
    assert JobNotCancellable(status="SUCCEEDED").code == ErrorCode.JOB_NOT_CANCELLABLE
    invalid = InvalidInput(field="input.text", violations=(Violation("input.text", "bad"),))
    assert invalid.code == ErrorCode.INVALID_INPUT
    assert invalid.message == "The input is invalid."
