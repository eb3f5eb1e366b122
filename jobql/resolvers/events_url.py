"""The `eventsUrl` field of every version's job type: the job's Server-Sent Events URL with
a stream ticket for the caller (jobql/services/tickets.py), for browsers' EventSource."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from jobql.resolvers.context import Context
from jobql.services.tickets import TicketsUnavailable, events_url

DESCRIPTION = (
    "This job's events as Server-Sent Events, for a browser's EventSource: a URL relative to "
    "this server, with a stream ticket for you that is good for 10 minutes and for this job "
    "only. The events are jobEvents' (the same seq as `id:`; Last-Event-ID resumes). Null, "
    "with a STREAM_TICKETS_UNAVAILABLE error, when this server issues no stream tickets "
    "(JOBQL_STREAM_TICKET_SECRET unset outside SQLite development): open the URL with an "
    "Authorization header instead."
)


class _Job(Protocol):
    @property
    def id(self) -> strawberry.ID: ...


def events_url_field(
    version: str,
) -> Callable[[_Job, Info[Context, None]], Awaitable[str | None]]:
    """The resolver of ``V<n>Job.eventsUrl`` for API ``version``."""

    async def resolve(root: _Job, info: Info[Context, None]) -> str | None:
        ctx = info.context
        caller = await ctx.caller()
        try:
            return events_url(ctx.services.settings, version, str(root.id), caller)
        except TicketsUnavailable as exc:
            raise GraphQLError(
                str(exc), extensions={"code": "STREAM_TICKETS_UNAVAILABLE"}
            ) from None

    return resolve
