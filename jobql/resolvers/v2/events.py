"""The v2 jobEvents subscription: replay after a seq, then live, then the terminal event
with the job's final state."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import strawberry

from jobql.errors import STREAM_CUT_MESSAGE, NotFound, ServiceUnavailable
from jobql.events.types import Heartbeat
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.v2 import mapping
from jobql.resolvers.v2.lookup import CtxInfo, find_job
from jobql.schema.v2.events import V2JobEventResult


async def job_events(
    info: CtxInfo, id: strawberry.ID, after_seq: int | None = None
) -> AsyncGenerator[V2JobEventResult, None]:
    ctx = info.context
    if ctx.resume_after is not None:  # Last-Event-ID over SSE wins over the argument
        after_seq = ctx.resume_after
    resume_at = max(after_seq or 0, 0)
    try:
        caller = await ctx.caller()
        # The job must be one of the caller's v2 jobs before anything is streamed.
        found = await find_job(ctx, caller, str(id))
    except ServiceUnavailableError as exc:
        # Over HTTP (multipart or SSE subscriptions); WebSockets authenticate on connect.
        yield mapping.service_unavailable(
            ServiceUnavailable(exc.retry_after_seconds, last_seq=resume_at), ctx.request_id
        )
        return
    if isinstance(found, NotFound):
        yield mapping.not_found(ctx.request_id, found)
        return
    if isinstance(found, ServiceUnavailable):
        cut = ServiceUnavailable(found.retry_after_seconds, resume_at, STREAM_CUT_MESSAGE)
        yield mapping.service_unavailable(cut, ctx.request_id)
        return
    stream = await ctx.services.streams.open(caller, found.id, after_seq)
    if isinstance(stream, NotFound):
        yield mapping.not_found(ctx.request_id, stream)
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
                # An outage cut the stream: the client resumes with afterSeq = item.last_seq.
                yield mapping.service_unavailable(item, ctx.request_id)
                return
            elif not item.is_terminal:
                ctx.stream_seq = item.seq
                yield mapping.event(item, ctx.request_id)  # type: ignore[misc]
            else:
                # The terminal event carries the job's final state (committed with it).
                final = await ctx.services.jobs.get(caller, item.job_id)
                if isinstance(final, NotFound):
                    yield mapping.not_found(ctx.request_id, final)
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
