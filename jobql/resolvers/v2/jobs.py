"""V2 resolvers for jobs: read, list (Relay connection), submit and cancel."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

from jobql.errors import (
    InvalidInput,
    JobNotCancellable,
    NotFound,
    ServiceUnavailable,
)
from jobql.models import JobStatus
from jobql.resolvers.v2 import mapping
from jobql.resolvers.v2.lookup import API_VERSION, CtxInfo, find_job, unavailable
from jobql.resolvers.v2.submit import submit_request
from jobql.schema.v2.enums import V2JobStatus
from jobql.schema.v2.inputs import V2SubmitJobInput
from jobql.schema.v2.results import (
    V2CancelJobResult,
    V2CancelJobSuccess,
    V2JobLookup,
    V2SubmitJobResult,
    V2SubmitJobSuccess,
)
from jobql.schema.v2.types import V2JobConnection, V2JobEdge, V2PageInfo
from jobql.services.jobs import (
    IdempotencyKeyReused,
    InvalidCursor,
    JobPage,
    Submitted,
)


def bad_argument(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


async def job(info: CtxInfo, id: strawberry.ID) -> V2JobLookup:
    ctx = info.context
    found = await find_job(ctx, await ctx.caller(), str(id))
    if isinstance(found, NotFound):
        return mapping.not_found(ctx.request_id, found)
    if isinstance(found, ServiceUnavailable):
        return unavailable(ctx, found)
    return mapping.job(found)


async def jobs(
    info: CtxInfo,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
    status: list[V2JobStatus] | None = None,
) -> V2JobConnection:
    ctx = info.context
    if first is not None and last is not None:
        raise bad_argument("Pass `first` or `last`, not both.")
    if (first is not None and first < 0) or (last is not None and last < 0):
        raise bad_argument("`first` and `last` must not be negative.")
    try:
        page = await ctx.services.jobs.list(
            await ctx.caller(),
            first=first,
            after=after,
            last=last,
            before=before,
            statuses=[JobStatus(s.value) for s in status] if status else None,
            api_version=API_VERSION,
        )
    except InvalidCursor:
        raise bad_argument("Invalid `after` or `before` cursor.") from None
    edges = [V2JobEdge(cursor=JobPage.cursor(j), node=mapping.job(j)) for j in page.jobs]
    return V2JobConnection(
        edges=edges,
        page_info=V2PageInfo(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


async def submit_job(info: CtxInfo, input: V2SubmitJobInput) -> V2SubmitJobResult:
    ctx = info.context
    caller = await ctx.caller()
    request = submit_request(ctx, input)
    if isinstance(request, InvalidInput):
        return mapping.invalid_input(request, ctx.request_id)
    outcome = await ctx.services.jobs.submit(caller, request)
    if isinstance(outcome, InvalidInput):
        return mapping.invalid_input(outcome, ctx.request_id)
    if isinstance(outcome, ServiceUnavailable):
        return unavailable(ctx, outcome)
    if (rate := ctx.services.jobs.last_rate.get()) is not None:
        ctx.set_rate_limit_headers(rate)
    if isinstance(outcome, IdempotencyKeyReused):
        return mapping.key_reused(outcome, ctx.request_id)
    if isinstance(outcome, Submitted):
        ctx.extensions["job"] = mapping.cost_extension(outcome.job)
        return V2SubmitJobSuccess(job=mapping.job(outcome.job), deduplicated=outcome.deduplicated)
    return mapping.limit_error(outcome, ctx.request_id)


async def cancel_job(
    info: CtxInfo, id: strawberry.ID, reason: str | None = None
) -> V2CancelJobResult:
    ctx = info.context
    caller = await ctx.caller()
    found = await find_job(ctx, caller, str(id))
    if isinstance(found, NotFound):
        return mapping.not_found(ctx.request_id, found)
    if isinstance(found, ServiceUnavailable):
        return unavailable(ctx, found)
    outcome = await ctx.services.jobs.cancel(caller, found.id, reason)
    if isinstance(outcome, NotFound):
        return mapping.not_found(ctx.request_id, outcome)
    if isinstance(outcome, JobNotCancellable):
        return mapping.not_cancellable(outcome, ctx.request_id)
    if isinstance(outcome, ServiceUnavailable):
        return unavailable(ctx, outcome)
    return V2CancelJobSuccess(job=mapping.job(outcome))
