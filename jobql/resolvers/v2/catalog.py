"""V2 resolvers for what the caller can use: the tasks of v2 and the viewer."""

from __future__ import annotations

import strawberry

from jobql.resolvers.v2 import ids, mapping
from jobql.resolvers.v2.lookup import API_VERSION, CtxInfo
from jobql.schema.v2.money import money
from jobql.schema.v2.types import V2Limits, V2Task, V2UsageToday, V2Viewer
from jobql.services.auth import Caller
from jobql.services.viewer import ViewerUsage


async def tasks(info: CtxInfo) -> list[V2Task]:
    ctx = info.context
    await ctx.caller()
    return [mapping.task(t) for t in ctx.services.tasks.for_version(API_VERSION)]


async def viewer(info: CtxInfo) -> V2Viewer:
    ctx = info.context
    caller = await ctx.caller()
    return viewer_of(caller, await ctx.services.viewer.usage_today(caller))


def viewer_of(caller: Caller, usage: ViewerUsage) -> V2Viewer:
    return V2Viewer(
        id=strawberry.ID(ids.encode(ids.VIEWER, caller.id)),
        name=caller.name,
        plan=caller.tier,
        limits=V2Limits(
            rate_limit=usage.limits.rate_limit,
            rate_window_seconds=usage.limits.rate_window_seconds,
            daily_cost_cap=money(usage.limits.daily_cost_cap_micros),
            max_active_jobs=usage.limits.max_active_jobs,
        ),
        usage_today=V2UsageToday(
            day=usage.day,
            jobs=usage.jobs,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=money(usage.cost_micros),
            reserved=money(usage.reserved_micros),
            remaining=money(usage.remaining_micros),
        ),
        active_jobs=usage.active_jobs,
    )
