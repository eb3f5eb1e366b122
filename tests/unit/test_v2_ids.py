"""Global ids of API v2: base64 of "<Type>:<key>", decoded back, and nothing else accepted."""

from __future__ import annotations

import base64
import uuid

import pytest

from jobql.resolvers.v2 import ids


def test_a_job_id_round_trips() -> None:
    job_id = str(uuid.uuid4())
    global_id = ids.encode(ids.JOB, job_id)
    assert base64.b64decode(global_id).decode() == f"V2Job:{job_id}"
    assert ids.decode(global_id) == ids.GlobalId("V2Job", job_id)
    assert ids.job_id(global_id) == job_id


def test_a_task_name_with_a_colon_or_dash_round_trips() -> None:
    for name in ("classify", "bad-output", "a:b"):
        assert ids.decode(ids.encode(ids.TASK, name)) == ids.GlobalId("V2Task", name)


@pytest.mark.parametrize(
    "global_id",
    [
        "",
        "not base64!",
        str(uuid.uuid4()),  # a bare job uuid (what v1 takes) is not a v2 id
        base64.b64encode(b"V2Job:not-a-uuid").decode(),
        base64.b64encode(b"V1Job:" + str(uuid.uuid4()).encode()).decode(),
        base64.b64encode(b"V2Job").decode(),
        base64.b64encode(b"V2Task:").decode(),
        base64.b64encode(b"\xff\xfe:x").decode(),
        base64.b64encode(b"V2Task:echo").decode().rstrip("="),  # not canonical
        "A" * (ids.MAX_ID_LENGTH + 4),
    ],
)
def test_anything_else_decodes_to_none(global_id: str) -> None:
    assert ids.decode(global_id) is None
    assert ids.job_id(global_id) is None


def test_a_task_id_is_not_a_job_id() -> None:
    assert ids.job_id(ids.encode(ids.TASK, str(uuid.uuid4()))) is None
