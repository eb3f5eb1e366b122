"""node(id:): any object with a global id, found again; null for an id that stands for
nothing this caller may see."""

from __future__ import annotations

import strawberry

from jobql.errors import ServiceUnavailable
from jobql.models import Job
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.v2 import ids, mapping
from jobql.resolvers.v2.catalog import viewer_of
from jobql.resolvers.v2.lookup import API_VERSION, CtxInfo, find_job
from jobql.schema.v2.node import V2Node


async def node(info: CtxInfo, id: strawberry.ID) -> V2Node | None:
    ctx = info.context
    caller = await ctx.caller()
    found = ids.decode(str(id))
    if found is None:
        return None
    if found.type == ids.JOB:
        job = await find_job(ctx, caller, str(id))
        if isinstance(job, ServiceUnavailable):
            # node's type has no room for errors as data: a top-level error with Retry-After.
            raise ServiceUnavailableError("the database", job.retry_after_seconds)
        return mapping.job(job) if isinstance(job, Job) else None
    if found.type == ids.TASK:
        task = ctx.services.tasks.get(API_VERSION, found.key)
        return mapping.task(task) if task is not None else None
    if found.key != caller.id:
        return None
    return viewer_of(caller, await ctx.services.viewer.usage_today(caller))
