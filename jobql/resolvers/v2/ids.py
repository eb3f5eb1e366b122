"""Global ids: the base64 of "<Type>:<key>" (a job's uuid, a task's name, a caller's id).
Clients treat them as opaque; node(id:) finds the object again."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from jobql.models.jobs import is_job_id

JOB = "V2Job"
TASK = "V2Task"
VIEWER = "V2Viewer"
TYPES = frozenset({JOB, TASK, VIEWER})
MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class GlobalId:
    type: str
    key: str


def encode(type_name: str, key: str) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode("ascii")


def decode(global_id: str) -> GlobalId | None:
    """The type and key of a global id of ours; None for anything else."""
    if len(global_id) > MAX_ID_LENGTH:
        return None
    try:
        raw = base64.b64decode(global_id.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    type_name, colon, key = raw.partition(":")
    if not colon or type_name not in TYPES or not key:
        return None
    if type_name == JOB and not is_job_id(key):
        return None
    # Canonical ids only: one object, one id.
    if encode(type_name, key) != global_id:
        return None
    return GlobalId(type_name, key)


def job_id(global_id: str) -> str | None:
    """The job uuid a V2Job global id stands for; None when it stands for none."""
    found = decode(global_id)
    return found.key if found is not None and found.type == JOB else None
