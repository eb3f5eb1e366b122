"""The two response media types of GraphQL over HTTP: which one a request gets, and, under
``application/graphql-response+json``, the status that goes with a result.

Under ``application/json`` (asked for, or no Accept, or ``*/*``) a GraphQL result is 200
unless jobql set a status of its own (401, 429, 503), as clients of that type expect.
Under ``application/graphql-response+json`` (Apollo Client 4, urql, graphql-http) a request
that could not be executed (no data) gets a 4xx, so clients read the error body instead of a
bare status: https://graphql.github.io/graphql-over-http/draft/#sec-application-graphql-response-json
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
GRAPHQL_RESPONSE_CONTENT_TYPE = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"

_ANY_JSON = frozenset({JSON, "application/*", "*/*"})


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def prefers_graphql_response(accept: str | None) -> bool:
    """Whether an Accept header value prefers ``application/graphql-response+json`` to
    ``application/json``. The higher quality wins; on a tie the GraphQL type does (urql sends
    both at q=1, the spec's type first). No Accept, or only ``*/*``, is ``application/json``."""
    if not accept:
        return False
    graphql_q = json_q = 0.0
    for item in accept.split(","):
        media_type, *params = item.split(";")
        media_type = media_type.strip().lower()
        if media_type == GRAPHQL_RESPONSE_JSON:
            graphql_q = max(graphql_q, _quality(params))
        elif media_type in _ANY_JSON:
            json_q = max(json_q, _quality(params))
    return graphql_q > 0 and graphql_q >= json_q


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header value takes a JSON answer (either GraphQL JSON type, or
    `*/*`), so that a query need not be wrapped in an event stream."""
    for item in (accept or "").split(","):
        media_type, *params = item.split(";")
        media_type = media_type.strip().lower()
        json_type = media_type in _ANY_JSON or media_type == GRAPHQL_RESPONSE_JSON
        if json_type and _quality(params) > 0:
            return True
    return False


def response_content_type(scope: Scope) -> bytes:
    """The content type of a JSON answer to this HTTP request."""
    if prefers_graphql_response(Headers(scope=scope).get("accept")):
        return GRAPHQL_RESPONSE_CONTENT_TYPE.encode()
    return JSON.encode()


@dataclass(frozen=True)
class Outcome:
    """What a GraphQL result says about the request, for its status."""

    has_data: bool
    # Every error is a request error (no path: the document did not parse or validate, or
    # the variables did not coerce), so execution never started.
    request_error: bool
    internal: bool

    @classmethod
    def of(cls, data: object, errors: Sequence[Mapping[str, object]]) -> Outcome:
        def code(error: Mapping[str, object]) -> object:
            extensions = error.get("extensions")
            return extensions.get("code") if isinstance(extensions, Mapping) else None

        return cls(
            has_data=data is not None,
            request_error=bool(errors) and all(error.get("path") is None for error in errors),
            internal=any(code(error) == "INTERNAL" for error in errors),
        )


def graphql_response_status(outcome: Outcome, status: int | None) -> int:
    """The status of an ``application/graphql-response+json`` answer. ``status`` is the one
    jobql set while resolving (401 bad key, 429 too many bad keys, 503 outage), or None."""
    if outcome.has_data:
        # Partial data and errors-as-data are a GraphQL response like any other: the spec
        # requires a 2xx whenever there is data.
        return 200 if status is None or status >= 300 else status
    if status is not None:
        return status
    if outcome.request_error:
        return 500 if outcome.internal else 400
    # Execution ran and a field error nulled the root: still a GraphQL response.
    return 200
