"""Schema extensions shared by every API version."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension


class RequestIdExtension(SchemaExtension):
    """Put the request id in ``extensions.requestId`` of every response."""

    def get_results(self) -> dict[str, Any]:
        request_id = getattr(self.execution_context.context, "request_id", None)
        return {"requestId": request_id} if request_id else {}


def should_mask(error: GraphQLError) -> bool:
    """Our own GraphQL errors (auth, bad cursor) and validation errors pass; anything an
    unexpected exception raised is masked, so no trace, SQL or provider text leaks."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class MaskInternalErrors(MaskErrors):
    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked
