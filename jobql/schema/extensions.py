"""Schema extensions shared by every API version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from jobql.schema.base import is_client_error, retry_after_of

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


def should_mask(error: GraphQLError) -> bool:
    """Our own GraphQL errors (auth, bad cursor) and validation errors pass; anything an
    unexpected exception raised is masked, so no trace, SQL or provider text leaks."""
    return not is_client_error(error)


class MaskInternalErrors(MaskErrors):
    """Unexpected exceptions become INTERNAL; an outage (a database or bus that cannot be
    reached) becomes SERVICE_UNAVAILABLE with Retry-After, and HTTP 503 when the whole
    request failed. Neither says more than its code: no driver text, SQL or trace."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        if (seconds := retry_after_of(error)) is not None:
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
