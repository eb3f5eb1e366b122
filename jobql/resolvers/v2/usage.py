"""V2 resolver for the caller's usage report."""

from __future__ import annotations

from typing import Annotated

import strawberry

from jobql.errors import InvalidInput, ServiceUnavailable
from jobql.resolvers.v2 import mapping
from jobql.resolvers.v2.lookup import CtxInfo, unavailable
from jobql.schema.v2.money import money
from jobql.schema.v2.types import V2Model
from jobql.schema.v2.usage import (
    V2UsageGroup,
    V2UsageJobs,
    V2UsageReport,
    V2UsageResult,
    V2UsageRow,
    V2UsageTask,
    V2UsageTotals,
)
from jobql.services.usage_report import (
    UsageGroup,
    UsageReport,
    UsageRow,
    UsageTotals,
    parse_day,
)


async def usage(
    info: CtxInfo,
    from_: Annotated[
        str, strawberry.argument(name="from", description="The first UTC day, YYYY-MM-DD.")
    ],
    to: Annotated[
        str,
        strawberry.argument(
            description="The last UTC day, YYYY-MM-DD, included; at most 366 days after "
            "`from`, counting both."
        ),
    ],
    group_by: Annotated[
        list[V2UsageGroup] | None,
        strawberry.argument(description="Group rows by any of DAY, TASK, MODEL; none: one row."),
    ] = None,
) -> V2UsageResult:
    ctx = info.context
    caller = await ctx.caller()
    groups = [UsageGroup(group.value) for group in group_by or ()]
    first, last = parse_day("from", from_), parse_day("to", to)
    if isinstance(first, InvalidInput):
        return mapping.invalid_input(first, ctx.request_id)
    if isinstance(last, InvalidInput):
        return mapping.invalid_input(last, ctx.request_id)
    report = await ctx.services.viewer.usage_report(caller, first, last, groups)
    if isinstance(report, InvalidInput):
        return mapping.invalid_input(report, ctx.request_id)
    if isinstance(report, ServiceUnavailable):
        return unavailable(ctx, report)
    return report_of(report)


def report_of(report: UsageReport) -> V2UsageReport:
    return V2UsageReport(
        from_=report.window.first.isoformat(),
        to=report.window.last.isoformat(),
        group_by=[V2UsageGroup(group.value) for group in report.group_by],
        rows=[row_of(row) for row in report.rows],
        total=totals_of(report.total),
    )


def jobs_of(totals: UsageTotals) -> V2UsageJobs:
    return V2UsageJobs(
        total=totals.jobs,
        succeeded=totals.succeeded,
        failed=totals.failed,
        cancelled=totals.cancelled,
    )


def totals_of(totals: UsageTotals) -> V2UsageTotals:
    return V2UsageTotals(
        jobs=jobs_of(totals),
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost=money(totals.cost_micros),
    )


def row_of(row: UsageRow) -> V2UsageRow:
    return V2UsageRow(
        day=row.day.isoformat() if row.day is not None else None,
        task=V2UsageTask(name=row.task.name, api_version=row.task.api_version)
        if row.task is not None
        else None,
        model=V2Model(provider=row.model.provider, name=row.model.name, version=row.model.version)
        if row.model is not None
        else None,
        jobs=jobs_of(row.totals),
        input_tokens=row.totals.input_tokens,
        output_tokens=row.totals.output_tokens,
        cost=money(row.totals.cost_micros),
    )
