"""The Schema class every API version builds on: Strawberry's, with error logging fit for
an API that untrusted clients call."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext

from jobql.outages import RETRY_AFTER_SECONDS, ServiceUnavailableError, is_outage
from jobql.services.unavailable import ThrottledWarning

log = logging.getLogger("jobql.graphql")
_warn_unavailable = ThrottledWarning(
    log, "a request failed on an outage; answered SERVICE_UNAVAILABLE"
)


def is_client_error(error: GraphQLError) -> bool:
    """Raised on purpose (authentication, bad arguments) or by validation: the client's
    mistake, answered in the response. Anything else is an exception nobody expected."""
    return (
        error.original_error is None
        or isinstance(error.original_error, GraphQLError)
        or is_unsupported_operation(error)
    )


def is_unsupported_operation(error: GraphQLError) -> bool:
    """A query or mutation sent over the legacy graphql-ws protocol, which carries
    subscriptions only (Strawberry raises this for it)."""
    return isinstance(error.original_error, InvalidOperationTypeError)


def retry_after_of(error: GraphQLError) -> int | None:
    """When an outage raised ``error`` (a server could not be reached, not a bug): the
    seconds after which the client should retry; else None."""
    original = error.original_error
    if isinstance(original, ServiceUnavailableError):
        return original.retry_after_seconds
    if original is not None and not isinstance(original, GraphQLError) and is_outage(original):
        return RETRY_AFTER_SECONDS
    return None


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Strawberry logs every error at ERROR with its text, and a GraphQLError's text
        quotes the document around the error, where a prompt may be written inline; its
        message can echo a literal value too. Here a client's mistake is logged at DEBUG by
        its code alone, and an unexpected exception at ERROR with the field path and the
        traceback, which the response masks (the request id ties the two together)."""
        for error in errors:
            path = ".".join(str(p) for p in error.path or ())
            if is_client_error(error):
                code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
                log.debug("GraphQL client error", extra={"code": code, "path": path or None})
            elif retry_after_of(error) is not None:
                assert error.original_error is not None
                _warn_unavailable(error.original_error)
            else:
                log.error(
                    "unexpected error resolving %s",
                    path or "the operation",
                    exc_info=error.original_error,
                )
