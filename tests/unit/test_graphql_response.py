"""Which response media type a request gets, and the status under
application/graphql-response+json."""

from __future__ import annotations

import pytest

from jobql.http.graphql_response import Outcome, graphql_response_status, prefers_graphql_response

APOLLO_CLIENT_4 = "application/graphql-response+json,application/json;q=0.9"
URQL = (
    "application/graphql-response+json, application/graphql+json, application/json, "
    "text/event-stream, multipart/mixed"
)


@pytest.mark.parametrize(
    "accept",
    [
        APOLLO_CLIENT_4,
        URQL,
        "application/graphql-response+json",
        "Application/GraphQL-Response+JSON",
        "application/json;q=0.5, application/graphql-response+json",
        "application/graphql-response+json;q=0.8, */*;q=0.5",
    ],
)
def test_graphql_response_json_when_preferred(accept: str) -> None:
    assert prefers_graphql_response(accept)


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "*/*",
        "application/json",
        "application/json, application/graphql-response+json;q=0.9",
        "application/graphql-response+json;q=0",
        "application/graphql-response+json;q=0.5, */*",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ],
)
def test_application_json_otherwise(accept: str | None) -> None:
    assert not prefers_graphql_response(accept)


PARSE_ERROR = {"message": "Syntax Error: Unexpected Name 'nope'.", "locations": []}
FIELD_ERROR = {"message": "Missing or invalid API key", "path": ["viewer"]}
INTERNAL = {"message": "Internal error", "extensions": {"code": "INTERNAL"}}


@pytest.mark.parametrize(
    ("data", "errors", "set_status", "status"),
    [
        ({"viewer": {"id": "1"}}, [], None, 200),
        ({"job": {"__typename": "V1NotFound"}}, [], None, 200),  # errors as data
        ({"tasks": [], "viewer": None}, [FIELD_ERROR], None, 200),  # partial data
        ({"tasks": []}, [FIELD_ERROR], 401, 200),  # data present: always 2xx
        (None, [PARSE_ERROR], None, 400),  # did not parse, validate or coerce
        (None, [INTERNAL], None, 500),
        (None, [FIELD_ERROR], 401, 401),  # the status the context set
        (None, [FIELD_ERROR], 503, 503),
        (None, [FIELD_ERROR], None, 200),  # a field error nulled the root
    ],
)
def test_status(
    data: object, errors: list[dict[str, object]], set_status: int | None, status: int
) -> None:
    assert graphql_response_status(Outcome.of(data, errors), set_status) == status
