"""V1 input types."""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON


@strawberry.input(description="What to run. See the `tasks` query for names and input schemas.")
class V1SubmitJobInput:
    task: str
    input: JSON
    wait: float | None = strawberry.field(
        default=None,
        description="Hold the answer up to this many seconds (capped by the task's tier) and "
        "return the finished job if it finished; otherwise the job as it is.",
    )
    deadline_seconds: int | None = strawberry.field(
        default=None, description="A deadline shorter than the task's default."
    )
    max_cost_usd: float | None = strawberry.field(
        default=None, description="Stop the job (BUDGET_EXCEEDED) once it costs more."
    )
    metadata: JSON | None = strawberry.field(
        default=None, description="Your own JSON object (at most 4 KB), returned with the job."
    )
