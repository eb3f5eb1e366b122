"""V2 input types."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON


@strawberry.input(description="What to run. See the `tasks` query for names and params schemas.")
class V2SubmitJobInput:
    task: str
    params: JSON = strawberry.field(description="The task's parameters (its paramsSchema).")
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Retries with the same key return the same job (the Idempotency-Key header "
        "is used when this is null).",
    )
    wait_seconds: float | None = strawberry.field(
        default=None,
        description="Hold the answer up to this many seconds (capped by the task's tier) and "
        "return the finished job if it finished; otherwise the job as it is.",
    )
    deadline_seconds: int | None = strawberry.field(
        default=None, description="A deadline shorter than the task's default."
    )
    max_cost: str | None = strawberry.field(
        default=None,
        description='A budget in USD as a decimal string with at most six places, e.g. "0.05": '
        "the job stops (BUDGET_EXCEEDED) once it costs more.",
    )
    metadata: JSON | None = strawberry.field(
        default=None, description="Your own JSON object (at most 4 KB), returned with the job."
    )
