"""What every API version's schema is built with: the limits on documents (depth, aliases,
tokens, directives, cost), parse and validation caches, masked internal errors and the
response extensions. Built here once, so every version is hardened alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import strawberry
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.config import StrawberryConfig

from jobql.schema.base import Schema
from jobql.schema.cost import CostModel, QueryCostLimiter
from jobql.schema.directives import LimitErrorsOnly, directives_rule
from jobql.schema.extensions import (
    MaskInternalErrors,
    ResponseExtensions,
    SafeParserCache,
    should_mask,
)
from jobql.settings import Settings


@dataclass(frozen=True)
class SchemaOptions:
    """The settings a schema is built with (Settings' JOBQL_MAX_QUERY_* and friends)."""

    introspection: bool = True
    field_suggestions: bool = False
    max_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_directives: int = 50
    max_directives_per_node: int = 4
    max_cost: int = 5000
    default_page_size: int = 20
    max_page_size: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> SchemaOptions:
        return cls(
            introspection=settings.introspection,
            field_suggestions=settings.field_suggestions,
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_query_aliases,
            max_tokens=settings.max_query_tokens,
            max_directives=settings.max_query_directives,
            max_directives_per_node=settings.max_query_directives_per_field,
            max_cost=settings.max_query_cost,
            default_page_size=settings.default_page_size,
            max_page_size=settings.max_page_size,
        )

    @classmethod
    def of(cls, **options: Any) -> SchemaOptions:
        """Defaults, with some set by name (unknown names are an error)."""
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown schema options: {sorted(unknown)}")
        return cls(**options)


def hardened_schema(
    *,
    query: type,
    mutation: type | None,
    subscription: type | None,
    types: Sequence[type],
    options: SchemaOptions,
) -> strawberry.Schema:
    # Validation rules are built once so that, with the parser cache handing back the same
    # document for the same query text, ValidationCache hits: repeated operations (what
    # real clients send) skip parsing and validation, about half of a submit's CPU.
    rules: list[type[ASTValidationRule]] = [
        depth_rule(options.max_depth, None),
        aliases_rule(options.max_aliases),
        directives_rule(options.max_directives, options.max_directives_per_node),
    ]
    if not options.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    cost_model = CostModel(
        default_page_size=options.default_page_size, max_page_size=options.max_page_size
    )
    # Factories, not instances: Strawberry builds fresh extensions for every operation.
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        ResponseExtensions,
        lambda: MaxTokensLimiter(max_token_count=options.max_tokens),
        lambda: SafeParserCache(maxsize=256),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=256),
        LimitErrorsOnly,
        lambda: QueryCostLimiter(options.max_cost, cost_model),
        lambda: MaskInternalErrors(
            should_mask_error=should_mask,
            error_message="Internal error; quote the request id when reporting it.",
        ),
    ]
    return Schema(
        query=query,
        mutation=mutation,
        subscription=subscription,
        types=list(types),
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=not options.field_suggestions),
    )
