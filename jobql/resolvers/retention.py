"""The retention fields of every version's job type: when a finished job's event log is
compacted and when the job is deleted, from the configured windows (services/retention.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Protocol

from strawberry.types import Info

from jobql.resolvers.context import Context
from jobql.services.retention import RetentionPolicy

LOG_EXPIRES_AT = (
    "When this job's full event log is compacted: from then on jobEvents replays only its "
    "terminal event, after one OutputDelta holding the whole output (if any). Null while "
    "the job is not finished."
)
EXPIRES_AT = (
    "When this job is deleted (it then answers NotFound everywhere; its usage still counts "
    "in usage reports and limits). Null while the job is not finished."
)
LOG_COMPACTED = "True once this job's event log was compacted (see logExpiresAt)."


class _Job(Protocol):
    @property
    def tier(self) -> Enum: ...

    @property
    def finished_at(self) -> datetime | None: ...


def _policy(info: Info[Context, None]) -> RetentionPolicy:
    return RetentionPolicy.from_settings(info.context.services.settings)


def log_expires_at_field() -> Callable[[_Job, Info[Context, None]], datetime | None]:
    """The resolver of ``V<n>Job.logExpiresAt``."""

    def resolve(root: _Job, info: Info[Context, None]) -> datetime | None:
        return _policy(info).log_expires_at(str(root.tier.value), root.finished_at)

    return resolve


def expires_at_field() -> Callable[[_Job, Info[Context, None]], datetime | None]:
    """The resolver of ``V<n>Job.expiresAt``."""

    def resolve(root: _Job, info: Info[Context, None]) -> datetime | None:
        return _policy(info).expires_at(str(root.tier.value), root.finished_at)

    return resolve
