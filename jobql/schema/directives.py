"""A cap on directives in a document, and on one node (a field, a fragment, the operation):
piling up directives (`@include @skip @aa @aa ...`) costs the server work per directive and,
when they are unknown, one error each, which makes a small request a large response."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import DirectiveNode, GraphQLError, Node
from graphql.validation import ASTValidationRule, ValidationContext
from strawberry.extensions import SchemaExtension

TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES"
# Codes of the limits a document can break; when one is broken, only that is reported.
LIMIT_CODES = frozenset({TOO_MANY_DIRECTIVES})


def directives_rule(max_per_document: int, max_per_node: int) -> type[ASTValidationRule]:
    class MaxDirectivesRule(ASTValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.total = 0
            self.reported = False

        def enter(self, node: Node, *_args: Any) -> None:
            directives = getattr(node, "directives", None)
            if not directives or isinstance(node, DirectiveNode) or self.reported:
                return
            self.total += len(directives)
            if len(directives) > max_per_node:
                self.refuse(
                    f"{len(directives)} directives on one node; at most {max_per_node} "
                    "are allowed.",
                    len(directives),
                    max_per_node,
                    node,
                )
            elif self.total > max_per_document:
                self.refuse(
                    f"More than {max_per_document} directives in the document.",
                    self.total,
                    max_per_document,
                    node,
                )

        def refuse(self, message: str, count: int, limit: int, node: Node) -> None:
            self.reported = True
            self.report_error(
                GraphQLError(
                    message,
                    node,
                    extensions={"code": TOO_MANY_DIRECTIVES, "directives": count, "limit": limit},
                )
            )

    return MaxDirectivesRule


class LimitErrorsOnly(SchemaExtension):
    """When a document breaks a limit, the response says that alone: the other validation
    errors of such a document (one per unknown directive, say) are what its sender wants the
    server to produce. Comes after ValidationCache, which sets the validation errors."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        errors = context.pre_execution_errors or []
        limits = [e for e in errors if (e.extensions or {}).get("code") in LIMIT_CODES]
        if limits:
            context.pre_execution_errors = limits[:1]
        yield
