"""V1 resolvers for jobs, tasks and the viewer."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from jobql.errors import (
    STREAM_CUT_MESSAGE,
    InvalidInput,
    JobNotCancellable,
    NotFound,
    ServiceUnavailable,
)
from jobql.events.types import Heartbeat
from jobql.models import Job, JobStatus
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Context
from jobql.resolvers.v1 import mapping
from jobql.schema.v1.enums import V1JobStatus
from jobql.schema.v1.errors import V1ServiceUnavailable
from jobql.schema.v1.events import V1JobEventResult
from jobql.schema.v1.inputs import V1SubmitJobInput
from jobql.schema.v1.results import (
    V1CancelJobResult,
    V1CancelJobSuccess,
    V1JobLookup,
    V1SubmitJobResult,
    V1SubmitJobSuccess,
)
from jobql.schema.v1.types import (
    V1JobConnection,
    V1JobEdge,
    V1Limits,
    V1PageInfo,
    V1Task,
    V1UsageToday,
    V1Viewer,
)
from jobql.services.auth import Caller
from jobql.services.jobs import (
    IdempotencyKeyReused,
    InvalidCursor,
    JobPage,
    SubmitRequest,
    Submitted,
)
from jobql.tasks.contracts import MICROS_PER_DOLLAR

API_VERSION = "v1"

CtxInfo = Info[Context, None]


def unavailable(ctx: Context, error: ServiceUnavailable) -> V1ServiceUnavailable:
    """The answer for an outage as data: Retry-After on the response, which is still a 200
    (the request itself was answered)."""
    ctx.service_unavailable(error.retry_after_seconds, whole_request=False)
    return mapping.service_unavailable(error, ctx.request_id)


async def find_job(
    ctx: Context, caller: Caller, job_id: str
) -> Job | NotFound | ServiceUnavailable:
    """The caller's v1 job. A job submitted through another API version is NotFound here:
    its contract (output schema, task versions) is not v1's."""
    return await ctx.services.jobs.get(caller, job_id, api_version=API_VERSION)


async def job(info: CtxInfo, id: strawberry.ID) -> V1JobLookup:
    ctx = info.context
    found = await find_job(ctx, await ctx.caller(), str(id))
    if isinstance(found, NotFound):
        return mapping.not_found(found, ctx.request_id)
    if isinstance(found, ServiceUnavailable):
        return unavailable(ctx, found)
    return mapping.job(found)


async def jobs(
    info: CtxInfo,
    first: int | None = None,
    after: str | None = None,
    status: list[V1JobStatus] | None = None,
) -> V1JobConnection:
    ctx = info.context
    if first is not None and first < 0:
        raise GraphQLError("`first` must not be negative.", extensions={"code": "BAD_USER_INPUT"})
    try:
        page = await ctx.services.jobs.list(
            await ctx.caller(),
            first=first,
            after=after,
            statuses=[JobStatus(s.value) for s in status] if status else None,
            api_version=API_VERSION,
        )
    except InvalidCursor:
        raise GraphQLError(
            "Invalid `after` cursor.", extensions={"code": "BAD_USER_INPUT"}
        ) from None
    edges = [V1JobEdge(cursor=JobPage.cursor(j), node=mapping.job(j)) for j in page.jobs]
    return V1JobConnection(
        edges=edges,
        page_info=V1PageInfo(
            has_next_page=page.has_next_page, end_cursor=edges[-1].cursor if edges else None
        ),
    )


async def tasks(info: CtxInfo) -> list[V1Task]:
    ctx = info.context
    await ctx.caller()
    return [mapping.task(t) for t in ctx.services.tasks.for_version(API_VERSION)]


async def viewer(info: CtxInfo) -> V1Viewer:
    ctx = info.context
    caller = await ctx.caller()
    usage = await ctx.services.viewer.usage_today(caller)
    return V1Viewer(
        id=strawberry.ID(caller.id),
        name=caller.name,
        tier=caller.tier,
        limits=V1Limits(
            rate_limit=usage.limits.rate_limit,
            rate_window_seconds=usage.limits.rate_window_seconds,
            daily_cost_cap_usd=usage.limits.daily_cost_cap_micros / MICROS_PER_DOLLAR,
            max_active_jobs=usage.limits.max_active_jobs,
        ),
        usage_today=V1UsageToday(
            day=usage.day,
            jobs=usage.jobs,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_micros / MICROS_PER_DOLLAR,
            reserved_usd=usage.reserved_micros / MICROS_PER_DOLLAR,
            remaining_usd=usage.remaining_micros / MICROS_PER_DOLLAR,
        ),
        active_jobs=usage.active_jobs,
    )


async def submit_job(
    info: CtxInfo, input: V1SubmitJobInput, idempotency_key: str | None = None
) -> V1SubmitJobResult:
    ctx = info.context
    caller = await ctx.caller()
    if idempotency_key is None:
        idempotency_key = ctx.request.headers.get("idempotency-key")
    outcome = await ctx.services.jobs.submit(
        caller,
        SubmitRequest(
            api_version=API_VERSION,
            task=input.task,
            input=input.input,
            idempotency_key=idempotency_key,
            wait_seconds=input.wait,
            deadline_seconds=input.deadline_seconds,
            max_cost_usd=input.max_cost_usd,
            metadata=input.metadata,
            request_id=ctx.request_id,
        ),
    )
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
        return V1SubmitJobSuccess(job=mapping.job(outcome.job), deduplicated=outcome.deduplicated)
    return mapping.limit_error(outcome, ctx.request_id)


async def cancel_job(
    info: CtxInfo, id: strawberry.ID, reason: str | None = None
) -> V1CancelJobResult:
    ctx = info.context
    caller = await ctx.caller()
    found = await find_job(ctx, caller, str(id))
    if isinstance(found, NotFound):
        return mapping.not_found(found, ctx.request_id)
    if isinstance(found, ServiceUnavailable):
        return unavailable(ctx, found)
    outcome = await ctx.services.jobs.cancel(caller, str(id), reason)
    if isinstance(outcome, NotFound):
        return mapping.not_found(outcome, ctx.request_id)
    if isinstance(outcome, JobNotCancellable):
        return mapping.not_cancellable(outcome, ctx.request_id)
    if isinstance(outcome, ServiceUnavailable):
        return unavailable(ctx, outcome)
    return V1CancelJobSuccess(job=mapping.job(outcome))


async def job_events(
    info: CtxInfo, job_id: strawberry.ID, after: int | None = None
) -> AsyncGenerator[V1JobEventResult, None]:
    ctx = info.context
    if ctx.resume_after is not None:  # Last-Event-ID over SSE wins over the argument
        after = ctx.resume_after
    try:
        caller = await ctx.caller()
    except ServiceUnavailableError as exc:
        # Over HTTP (multipart or SSE subscriptions); WebSockets authenticate on connect.
        yield mapping.service_unavailable(
            ServiceUnavailable(exc.retry_after_seconds, last_seq=max(after or 0, 0)),
            ctx.request_id,
        )
        return
    stream = await ctx.services.streams.open(caller, str(job_id), after, api_version=API_VERSION)
    if isinstance(stream, NotFound):
        yield mapping.not_found(stream, ctx.request_id)
        return
    if isinstance(stream, ServiceUnavailable):
        yield mapping.service_unavailable(stream, ctx.request_id)
        return
    # aclosing: a client that goes away must release the bus subscription at once.
    async with aclosing(stream):
        async for item in stream:
            if isinstance(item, Heartbeat):
                yield mapping.heartbeat(item)
            elif isinstance(item, ServiceUnavailable):
                # An outage cut the stream: the client resumes with after = item.last_seq.
                yield mapping.service_unavailable(item, ctx.request_id)
                return
            elif not item.is_terminal:
                ctx.stream_seq = item.seq
                yield mapping.event(item, ctx.request_id)  # type: ignore[misc]
            else:
                # The terminal event carries the job's final state (committed with it).
                final = await ctx.services.jobs.get(caller, item.job_id)
                if isinstance(final, NotFound):
                    yield mapping.not_found(final, ctx.request_id)
                elif isinstance(final, ServiceUnavailable):
                    # Resume just before the terminal event, to get it with its job.
                    cut = ServiceUnavailable(
                        final.retry_after_seconds, item.seq - 1, STREAM_CUT_MESSAGE
                    )
                    yield mapping.service_unavailable(cut, ctx.request_id)
                else:
                    ctx.stream_seq = item.seq
                    yield mapping.event(item, ctx.request_id, final)  # type: ignore[misc]
                return
