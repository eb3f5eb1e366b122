"""Pub/sub channel names and the small messages sent on them."""

from __future__ import annotations

from typing import Any

from jobql.events.types import StoredEvent

CONTROL = "jobql.control"
WAKEUP = "jobql.wakeup"
# API keys revoked ({"revoked": [key id, ...]}) or callers whose limits changed
# ({"changed": [principal id, ...]}): every API process drops them from its key cache and
# closes the revoked keys' WebSockets.
KEYS = "jobql.keys"

# Bigger events travel as a reference (seq only) and subscribers read them from the
# database; this keeps every payload far below the Postgres backend's 8000-byte limit.
MAX_INLINE_BYTES = 4000


def job_channel(job_id: str) -> str:
    return f"jobql.job.{job_id}"


def event_message(event: StoredEvent, encoded_size: int) -> dict[str, Any]:
    if encoded_size > MAX_INLINE_BYTES:
        return {"seq": event.seq}
    return {
        "seq": event.seq,
        "type": event.type.value,
        "payload": event.payload,
        "at": event.at.isoformat(),
    }
