"""`GET /<version>/jobs/{id}/events`: one job's `jobEvents` as Server-Sent Events, for a
browser's EventSource (which cannot send an Authorization header).

The caller is the `Authorization: Bearer <key>` header's (curl, servers) or, without one,
the stream ticket in `?ticket=` (the job's `eventsUrl`, jobql/services/tickets.py). The
stream itself is the GraphQL-over-SSE transport's (jobql/http/sse.py) for a fixed
`jobEvents` subscription of that job: the same events and `id:`s, `Last-Event-ID` resume and
budgets. A ticket grants nothing else: the operation is chosen here, never by the client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.responses import Response

from jobql.http.sse import LAST_EVENT_ID, parse_last_event_id, sse_response
from jobql.http.subscriptions import refusal
from jobql.outages import ServiceUnavailableError
from jobql.resolvers.context import Services
from jobql.services.auth import Caller, TooManyFailedLookups, parse_bearer
from jobql.services.tickets import Refusal, caller_of_ticket

if TYPE_CHECKING:
    from jobql.http.graphql import GraphQLView

# Every field of every event, and the job in its final state on the terminal one.
V1_EVENTS = """
subscription JobEvents($jobId: ID!, $after: Int) {
  jobEvents(jobId: $jobId, after: $after) {
    __typename
    ... on V1JobEvent { jobId seq at }
    ... on V1JobStarted { attempt }
    ... on V1OutputDelta { text }
    ... on V1Progress { phase message }
    ... on V1Heartbeat { jobId at status currentPhase elapsedMs outputTokens costUsd }
    ... on V1JobFinished {
      costUsd durationMs
      usage { inputTokens outputTokens costUsd }
      model { provider name version }
      job { id status cancelRequested }
    }
    ... on V1JobSucceeded { output result }
    ... on V1JobFailed { error { __typename code message retryable } }
    ... on V1JobCancelled { reason }
    ... on V1Error { code message retryable }
    ... on V1ServiceUnavailable { retryAfterSeconds resumeAfter }
  }
}
"""

V2_EVENTS = """
subscription JobEvents($id: ID!, $afterSeq: Int) {
  jobEvents(id: $id, afterSeq: $afterSeq) {
    __typename
    ... on V2JobEvent { jobId seq at }
    ... on V2JobStarted { attempt }
    ... on V2OutputDelta { text }
    ... on V2Progress { phase message }
    ... on V2Heartbeat { jobId at status phase elapsedMs outputTokens cost { amount currency } }
    ... on V2JobFinished {
      durationMs
      usage { inputTokens outputTokens cost { amount currency } }
      model { provider name version }
      job { id status cancelRequested }
    }
    ... on V2JobSucceeded { output result }
    ... on V2JobFailed { error { code message retryable } }
    ... on V2JobCancelled { reason }
    ... on V2Error { code message retryable }
    ... on V2ServiceUnavailable { retryAfterSeconds resumeAfterSeq }
  }
}
"""

# The subscription of each version, and the names of its job id and cursor variables.
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "v1": (V1_EVENTS, "jobId", "after"),
    "v2": (V2_EVENTS, "id", "afterSeq"),
}

MISSING = (
    "Missing or invalid API key: send `Authorization: Bearer <key>`, or open the job's "
    "eventsUrl (it carries a stream ticket)."
)
REFUSED = {
    Refusal.MALFORMED: "Malformed stream ticket: use the job's eventsUrl as it was given.",
    Refusal.EXPIRED: "The stream ticket expired: read the job's eventsUrl again for a new one.",
    Refusal.INVALID: "Invalid stream ticket: it is for another job, was altered, its API key "
    "was revoked, or this server cannot check it. Read the job's eventsUrl again.",
}


class ViewHolder(Protocol):
    """Holds a version's GraphQL view once the app has started (app.py's endpoint)."""

    view: GraphQLView | None


def _error(request: Request, status: int, code: str, message: str, **headers: str) -> Response:
    return refusal(request.scope, status, code, message, headers)


def resume_cursor(request: Request) -> int | Response | None:
    """Where to resume: the `Last-Event-ID` an EventSource sends when it reconnects (the
    `id:` of the last event it got), else `?after=` (a new EventSource cannot set that
    header); None for the start. A value that is not a seq is a 400."""
    for name, value in (
        ("Last-Event-ID", request.headers.get(LAST_EVENT_ID)),
        ("after", request.query_params.get("after")),
    ):
        parsed = parse_last_event_id(value)
        if isinstance(parsed, str):
            return _error(request, 400, "BAD_REQUEST", parsed.replace("Last-Event-ID", name))
        if parsed is not None:
            return parsed
    return None


async def _caller(
    request: Request, services: Services, version: str, job_id: str
) -> Caller | Response:
    """The header's key if one is sent, else the ticket; an answer for anything else."""
    address = request.client.host if request.client is not None else None
    try:
        if "authorization" in request.headers:
            caller = await services.keys.authenticate(
                parse_bearer(request.headers["authorization"]), address
            )
            if caller is None:
                return _error(request, 401, "UNAUTHENTICATED", MISSING)
            return caller
        ticket = request.query_params.get("ticket")
        if not ticket:
            return _error(request, 401, "UNAUTHENTICATED", MISSING)
        found = await caller_of_ticket(services.settings, services.keys, ticket, version, job_id)
    except TooManyFailedLookups as exc:
        return _error(
            request,
            429,
            "TOO_MANY_REQUESTS",
            "Too many requests with invalid API keys from this address; retry later.",
            **{"retry-after": str(exc.retry_after_seconds)},
        )
    except ServiceUnavailableError as exc:
        return _error(
            request,
            503,
            "SERVICE_UNAVAILABLE",
            "Service unavailable; connect again shortly.",
            **{"retry-after": str(exc.retry_after_seconds)},
        )
    if isinstance(found, Refusal):
        return _error(request, 401, "UNAUTHENTICATED", REFUSED[found])
    return found


def event_source_endpoint(
    version: str, endpoint: ViewHolder
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of ``/<version>/jobs/{id}/events``."""
    query, id_variable, cursor_variable = OPERATIONS[version]

    async def events(request: Request) -> Response:
        view = endpoint.view
        if view is None:  # pragma: no cover - only before startup completes
            return _error(request, 503, "SERVICE_UNAVAILABLE", "Starting; retry shortly.")
        job_id: str = request.path_params["id"]
        cursor = resume_cursor(request)
        if isinstance(cursor, Response):
            return cursor
        caller = await _caller(request, view.services, version, job_id)
        if isinstance(caller, Response):
            return caller
        variables: dict[str, object] = {id_variable: job_id, cursor_variable: cursor}
        return await sse_response(
            view,
            request,
            query=query,
            variables=variables,
            caller_override=caller,
            resume_after=cursor,
        )

    return events
