"""V2 usage reports: your finished jobs, tokens and cost over a window of UTC days, grouped
by day, task and model."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import strawberry

from jobql.schema.v2.errors import V2InvalidInput, V2ServiceUnavailable
from jobql.schema.v2.money import V2Money
from jobql.schema.v2.types import V2Model

# Whole numbers, as Float: a year of a busy caller's tokens passes Int's 2^31 - 1, and a
# Float holds every whole number up to 2^53 exactly (a JavaScript number is one).
TOKENS = "A whole number of tokens (a Float: sums can pass Int's 32 bits; exact to 2^53)."


@strawberry.enum(description="What the rows of a usage report are grouped by.")
class V2UsageGroup(Enum):
    DAY = "day"
    TASK = "task"
    MODEL = "model"


@strawberry.type(description="A task as usage is grouped by it: its name and API version.")
class V2UsageTask:
    name: str
    api_version: str


@strawberry.type(
    description="Jobs that finished, by terminal status. A job cancelled before it started "
    "used nothing and is not counted."
)
class V2UsageJobs:
    total: int
    succeeded: int
    failed: int
    cancelled: int


@strawberry.type(description="What the jobs of a group (or of the whole window) used.")
class V2UsageTotals:
    jobs: V2UsageJobs
    input_tokens: float = strawberry.field(description=TOKENS)
    output_tokens: float = strawberry.field(description=TOKENS)
    cost: V2Money


@strawberry.type(
    description="One group of a usage report: the keys it is grouped by are set, the others "
    "are null."
)
class V2UsageRow:
    day: str | None = strawberry.field(description="The UTC day the jobs finished on, YYYY-MM-DD.")
    task: V2UsageTask | None
    model: V2Model | None
    jobs: V2UsageJobs
    input_tokens: float = strawberry.field(description=TOKENS)
    output_tokens: float = strawberry.field(description=TOKENS)
    cost: V2Money


@strawberry.type(
    description="Your usage from `from` to `to` (UTC days, both included): one row per group "
    "with any usage, ordered by day, task and model, and the total of the window."
)
class V2UsageReport:
    from_: str = strawberry.field(name="from", description="The first UTC day, YYYY-MM-DD.")
    to: str = strawberry.field(description="The last UTC day, YYYY-MM-DD, included.")
    group_by: list[V2UsageGroup] = strawberry.field(
        description="The groups asked for, in the order rows are sorted by."
    )
    rows: list[V2UsageRow]
    total: V2UsageTotals


V2UsageResult = Annotated[
    V2UsageReport | V2InvalidInput | V2ServiceUnavailable, strawberry.union("V2UsageResult")
]
