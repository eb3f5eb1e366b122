"""Schema extensions shared by every API version."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from jobql.schema.base import is_client_error


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
    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked
