"""What every v2 resolver shares: the version, the context type, outages as data and
finding a v2 job by its global id."""

from __future__ import annotations

from strawberry.types import Info

from jobql.errors import NotFound, ServiceUnavailable
from jobql.models import Job
from jobql.resolvers.context import Context
from jobql.resolvers.v2 import ids, mapping
from jobql.schema.v2.errors import V2ServiceUnavailable
from jobql.services.auth import Caller

API_VERSION = "v2"

CtxInfo = Info[Context, None]


def unavailable(ctx: Context, error: ServiceUnavailable) -> V2ServiceUnavailable:
    """The answer for an outage as data: Retry-After on the response, which is still a 200
    (the request itself was answered)."""
    ctx.service_unavailable(error.retry_after_seconds, whole_request=False)
    return mapping.service_unavailable(error, ctx.request_id)


async def find_job(
    ctx: Context, caller: Caller, global_id: str
) -> Job | NotFound | ServiceUnavailable:
    """The caller's v2 job with this global id. A malformed id, another caller's job and a
    job submitted through another API version (its contract differs) are all NotFound."""
    job_id = ids.job_id(global_id)
    if job_id is None:
        return NotFound()
    return await ctx.services.jobs.get(caller, job_id, api_version=API_VERSION)
