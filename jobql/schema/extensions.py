"""Schema extensions shared by every API version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, SchemaExtension

from jobql.schema.base import is_client_error, is_unsupported_operation, retry_after_of

SERVICE_UNAVAILABLE_MESSAGE = (
    "The service is briefly unavailable; retry after extensions.retryAfterSeconds "
    "(also the Retry-After header)."
)


class ResponseExtensions(SchemaExtension):
    """``extensions.requestId`` on every response, plus what resolvers put in
    ``context.extensions`` (submitJob adds the job's cost and model)."""

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        results: dict[str, Any] = dict(getattr(context, "extensions", None) or {})
        request_id = getattr(context, "request_id", None)
        if request_id:
            results["requestId"] = request_id
        return results


UNSUPPORTED_OPERATION_MESSAGE = (
    "The graphql-ws protocol carries subscriptions only; send queries and mutations over "
    "HTTP or the graphql-transport-ws protocol."
)


def should_mask(error: GraphQLError) -> bool:
    """Our own GraphQL errors (auth, bad cursor) and validation errors pass; anything an
    unexpected exception raised is masked, so no trace, SQL or provider text leaks. (An
    operation the protocol does not carry is rewritten here too, into a clear message.)"""
    return not is_client_error(error) or is_unsupported_operation(error)


class MaskInternalErrors(MaskErrors):
    """Unexpected exceptions become INTERNAL; an outage (a database or bus that cannot be
    reached) becomes SERVICE_UNAVAILABLE with Retry-After, and HTTP 503 when the whole
    request failed. Neither says more than its code: no driver text, SQL or trace."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        if is_unsupported_operation(error):
            masked.message = UNSUPPORTED_OPERATION_MESSAGE
            masked.extensions = {"code": "OPERATION_NOT_SUPPORTED"}
        elif (seconds := retry_after_of(error)) is not None:
            masked.message = SERVICE_UNAVAILABLE_MESSAGE
            masked.extensions = {"code": "SERVICE_UNAVAILABLE", "retryAfterSeconds": seconds}
        else:
            masked.extensions = {"code": "INTERNAL"}
        return masked

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()
        result = self.execution_context.result
        seconds = [
            (error.extensions or {}).get("retryAfterSeconds", 0)
            for error in getattr(result, "errors", None) or ()
            if (error.extensions or {}).get("code") == "SERVICE_UNAVAILABLE"
        ]
        context = self.execution_context.context
        if seconds and hasattr(context, "service_unavailable"):
            context.service_unavailable(
                max(seconds), whole_request=getattr(result, "data", None) is None
            )


class SafeParserCache(ParserCache):
    """Strawberry's ParserCache, except that a document that does not parse is left to
    Strawberry, which parses it again inside its own error handling and answers the syntax
    error as the operation's error. ParserCache raises it from ``on_parse``, where a
    subscription does not catch it: the WebSocket handler logged an ERROR with the
    traceback, and on the legacy protocol the client got no answer at all."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except GraphQLError:
            context.graphql_document = None
        yield
