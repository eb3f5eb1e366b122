"""The job state machine: every transition, every refusal, and what each one writes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from jobql.errors import ErrorCode, JobError
from jobql.events.types import EventType
from jobql.states import (
    ACTIVE,
    ALLOWED,
    TERMINAL,
    CancelAction,
    Guard,
    JobStatus,
    Requeue,
    Transition,
    TransitionRefused,
    Usage,
    allowed,
    cancel,
    cancel_action,
    check,
    claim_values,
    fail,
    rescue,
    rescue_guard,
    succeed,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Facts:
    status: str = JobStatus.RUNNING.value
    attempts: int = 1
    max_attempts: int = 3
    created_at: datetime = T0
    started_at: datetime | None = T0 + timedelta(seconds=1)
    provider: str = "simulated"
    model_name: str = "sim"
    model_version: str = "sim-1"
    cancel_requested_at: datetime | None = None
    cancel_reason: str | None = None
    lease_owner: str | None = "w1"
    input_tokens: int = 7
    output_tokens: int = 11
    cost_micros: int = 123


EXPECTED = {
    Transition.CLAIM: ({JobStatus.QUEUED}, {JobStatus.RUNNING}),
    Transition.SUCCEED: ({JobStatus.RUNNING}, {JobStatus.SUCCEEDED}),
    Transition.FAIL: ({JobStatus.RUNNING}, {JobStatus.FAILED}),
    Transition.CANCEL: ({JobStatus.QUEUED, JobStatus.RUNNING}, {JobStatus.CANCELLED}),
    Transition.REQUEUE: ({JobStatus.RUNNING}, {JobStatus.QUEUED}),
    Transition.HAND_BACK: ({JobStatus.RUNNING}, {JobStatus.QUEUED}),
    Transition.LOSE: ({JobStatus.RUNNING}, {JobStatus.FAILED, JobStatus.CANCELLED}),
}


def test_the_table_is_the_documented_diagram() -> None:
    assert {t: (set(a), set(b)) for t, (a, b) in ALLOWED.items()} == EXPECTED
    assert {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED} == TERMINAL
    assert {JobStatus.QUEUED, JobStatus.RUNNING} == ACTIVE


@pytest.mark.parametrize("transition", list(Transition))
@pytest.mark.parametrize("status", list(JobStatus))
def test_every_transition_is_allowed_exactly_from_its_states(
    transition: Transition, status: JobStatus
) -> None:
    expected = status in EXPECTED[transition][0]
    assert allowed(transition, status) is expected
    if expected:
        check(transition, status)
    else:
        with pytest.raises(TransitionRefused) as refused:
            check(transition, status)
        assert (refused.value.transition, refused.value.status) == (transition, status)


def test_no_transition_leaves_a_terminal_state() -> None:
    for transition, (sources, _) in ALLOWED.items():
        assert not sources & TERMINAL, transition


def test_succeed_writes_output_result_usage_and_the_aggregate() -> None:
    usage = Usage(5, 9, 42)
    finish = succeed(Facts(), output="hi", result={"a": 1}, usage=usage, at=T0 + timedelta(2))
    assert finish.status is JobStatus.SUCCEEDED
    assert finish.event_type is EventType.JOB_SUCCEEDED
    assert finish.payload["output"] == "hi"
    assert finish.payload["result"] == {"a": 1}
    assert finish.payload["usage"] == {"inputTokens": 5, "outputTokens": 9, "costUsd": 42e-6}
    assert finish.payload["costUsd"] == 42e-6
    assert finish.payload["durationMs"] == 2 * 86400 * 1000 - 1000
    assert finish.payload["model"] == {"provider": "simulated", "name": "sim", "version": "sim-1"}
    values = finish.values()
    assert values["status"] == "SUCCEEDED"
    assert values["output"] == "hi"
    assert values["result"] == {"a": 1}
    assert (values["lease_owner"], values["lease_expires_at"], values["phase"]) == (None,) * 3
    assert (values["input_tokens"], values["output_tokens"], values["cost_micros"]) == (5, 9, 42)
    assert "cancel_requested_at" not in values
    assert finish.billed


def test_fail_records_the_error() -> None:
    error = JobError(ErrorCode.PROVIDER_UNAVAILABLE)
    finish = fail(Facts(), error, output="part", usage=Usage(1, 2, 3), at=T0)
    assert finish.status is JobStatus.FAILED
    assert finish.event_type is EventType.JOB_FAILED
    assert finish.payload["error"] == error.to_json()
    assert finish.values()["error"] == error.to_json()
    assert finish.values()["output"] == "part"
    assert finish.billed


@pytest.mark.parametrize("status", sorted(TERMINAL | {JobStatus.QUEUED}))
def test_succeed_and_fail_are_refused_unless_running(status: JobStatus) -> None:
    facts = Facts(status=status.value)
    with pytest.raises(TransitionRefused):
        succeed(facts, output="", result=None, usage=Usage(), at=T0)
    with pytest.raises(TransitionRefused):
        fail(facts, JobError(ErrorCode.INTERNAL), output="", usage=Usage(), at=T0)


def test_cancel_of_a_queued_job_records_the_request_and_bills_nothing() -> None:
    finish = cancel(Facts(status="QUEUED"), "changed my mind", output="", usage=Usage(), at=T0)
    assert finish.status is JobStatus.CANCELLED
    assert finish.payload["reason"] == "changed my mind"
    assert finish.values()["cancel_requested_at"] == T0
    assert finish.values()["cancel_reason"] == "changed my mind"
    assert not finish.billed


def test_cancel_of_a_running_job_keeps_partial_output_and_bills_it() -> None:
    finish = cancel(Facts(), "stop", output="partial", usage=Usage(3, 4, 5), at=T0)
    assert finish.values()["output"] == "partial"
    assert "cancel_requested_at" not in finish.values()  # requested earlier, by cancelJob
    assert finish.billed
    assert finish.payload["usage"]["outputTokens"] == 4


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_cancel_is_refused_once_terminal(status: JobStatus) -> None:
    assert cancel_action(status) is CancelAction.REFUSE
    with pytest.raises(TransitionRefused):
        cancel(Facts(status=status.value), None, output="", usage=Usage(), at=T0)


def test_cancel_action_by_state() -> None:
    assert cancel_action(JobStatus.QUEUED) is CancelAction.NOW
    assert cancel_action(JobStatus.RUNNING) is CancelAction.REQUEST


def test_rescue_requeues_while_attempts_are_left() -> None:
    decision = rescue(Facts(attempts=2, max_attempts=3), T0)
    assert decision == Requeue(Transition.REQUEUE)
    assert Requeue.values() == {"status": "QUEUED", "lease_owner": None, "lease_expires_at": None}


def test_rescue_after_the_last_attempt_fails_as_worker_lost_with_recorded_usage() -> None:
    decision = rescue(Facts(attempts=3, max_attempts=3), T0)
    assert not isinstance(decision, Requeue)
    assert decision.status is JobStatus.FAILED
    assert decision.error == JobError(ErrorCode.WORKER_LOST).to_json()
    assert decision.usage == Usage(7, 11, 123)
    assert decision.output is None  # what the log holds


def test_rescue_of_a_job_whose_cancel_was_requested_cancels_it() -> None:
    decision = rescue(Facts(attempts=1, cancel_requested_at=T0, cancel_reason="bye"), T0)
    assert not isinstance(decision, Requeue)
    assert decision.status is JobStatus.CANCELLED
    assert decision.payload["reason"] == "bye"


@pytest.mark.parametrize("status", [s for s in JobStatus if s is not JobStatus.RUNNING])
def test_rescue_is_refused_unless_running(status: JobStatus) -> None:
    with pytest.raises(TransitionRefused):
        rescue(Facts(status=status.value), T0)
    with pytest.raises(TransitionRefused):
        rescue(Facts(status=status.value, attempts=3), T0)


def test_guards() -> None:
    assert Guard.lease("w1") == Guard(JobStatus.RUNNING, lease_owner="w1")
    facts = replace(Facts(), lease_owner="gone")
    assert rescue_guard(facts, T0) == Guard(JobStatus.RUNNING, "gone", T0)


def test_claim_starts_the_attempt_from_nothing() -> None:
    values = claim_values("w9", T0 + timedelta(seconds=30), T0)
    assert values["status"] == "RUNNING"
    assert values["lease_owner"] == "w9"
    assert values["lease_expires_at"] == T0 + timedelta(seconds=30)
    assert values["started_at"] == T0
    assert (values["output"], values["result"], values["phase"]) == ("", None, None)
    assert (values["input_tokens"], values["output_tokens"], values["cost_micros"]) == (0, 0, 0)
