"""The v2 runJob subscription: submit a job and stream it in one operation; the job belongs
to the subscription that created it unless it is detached (jobql/services/run.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from jobql.errors import (
    STREAM_CUT_MESSAGE,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from jobql.events.types import Heartbeat, StoredEvent
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Context
from jobql.resolvers.v2 import mapping
from jobql.resolvers.v2.lookup import CtxInfo
from jobql.resolvers.v2.submit import submit_request
from jobql.schema.v2.inputs import V2SubmitJobInput
from jobql.schema.v2.run import V2RunJobAccepted, V2RunJobEvent
from jobql.services.auth import Caller
from jobql.services.jobs import IdempotencyKeyReused
from jobql.services.run import RunAccepted, RunItem


async def run_job(
    info: CtxInfo, input: V2SubmitJobInput, detach: bool | None = False
) -> AsyncGenerator[V2RunJobEvent, None]:
    ctx = info.context
    try:
        caller = await ctx.caller()
    except ServiceUnavailableError as exc:
        # Over HTTP (multipart or SSE subscriptions); WebSockets authenticate on connect.
        yield mapping.service_unavailable(
            ServiceUnavailable(exc.retry_after_seconds), ctx.request_id
        )
        return
    request = submit_request(ctx, input)
    if isinstance(request, InvalidInput):
        yield mapping.invalid_input(request, ctx.request_id)
        return
    # aclosing: a client that goes away closes the run at once, which cancels a job it owns.
    async with aclosing(ctx.services.run.run(caller, request, detach=bool(detach))) as run:
        async for item in run:
            answer = await _answer(ctx, caller, item)
            if isinstance(item, StoredEvent):
                ctx.stream_seq = item.seq  # the SSE id of this item
            yield answer
            if isinstance(item, StoredEvent) and item.is_terminal:
                return  # also when its job could not be read and the stream was cut there


async def _answer(ctx: Context, caller: Caller, item: RunItem) -> V2RunJobEvent:
    if isinstance(item, RunAccepted):
        return V2RunJobAccepted(
            job=mapping.job(item.job), deduplicated=item.deduplicated, owned=item.owned
        )
    if isinstance(item, Heartbeat):
        return mapping.heartbeat(item)
    if isinstance(item, StoredEvent):
        if not item.is_terminal:
            return mapping.event(item, ctx.request_id)  # type: ignore[return-value]
        # The terminal event carries the job's final state (committed with it).
        final = await ctx.services.jobs.get(caller, item.job_id)
        if isinstance(final, NotFound):
            return mapping.not_found(ctx.request_id, final)
        if isinstance(final, ServiceUnavailable):
            # Resume just before the terminal event, to get it with its job (jobEvents).
            cut = ServiceUnavailable(final.retry_after_seconds, item.seq - 1, STREAM_CUT_MESSAGE)
            return mapping.service_unavailable(cut, ctx.request_id)
        return mapping.event(item, ctx.request_id, final)  # type: ignore[return-value]
    if isinstance(item, NotFound):
        return mapping.not_found(ctx.request_id, item)
    if isinstance(item, ServiceUnavailable):
        return mapping.service_unavailable(item, ctx.request_id)
    if isinstance(item, InvalidInput):
        return mapping.invalid_input(item, ctx.request_id)
    if isinstance(item, IdempotencyKeyReused):
        return mapping.key_reused(item, ctx.request_id)
    return mapping.limit_error(item, ctx.request_id)
