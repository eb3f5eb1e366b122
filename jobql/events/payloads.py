"""Payloads shared by several writers of the event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobql.models import Job
from jobql.tasks.contracts import MICROS_PER_DOLLAR


def usage_payload(input_tokens: int, output_tokens: int, cost_micros: int) -> dict[str, Any]:
    return {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "costUsd": cost_micros / MICROS_PER_DOLLAR,
    }


def terminal_payload(
    job: Job, *, input_tokens: int, output_tokens: int, cost_micros: int, finished_at: datetime
) -> dict[str, Any]:
    """The aggregate every terminal event carries: tokens, cost, wall time, model version."""
    started_at = job.started_at or job.created_at
    return {
        "usage": usage_payload(input_tokens, output_tokens, cost_micros),
        "costUsd": cost_micros / MICROS_PER_DOLLAR,
        "durationMs": max(0, int((finished_at - started_at).total_seconds() * 1000)),
        "model": {"provider": job.provider, "name": job.model_name, "version": job.model_version},
    }
