"""What a schema publishes for client tooling: its SDL, and its possibleTypes (the object
types behind each interface and union), which Apollo Client's cache needs to match
fragments on interfaces (``... on V1JobEvent { seq }``) and unions."""

from __future__ import annotations

import json

import strawberry
from graphql import GraphQLInterfaceType, GraphQLUnionType, is_introspection_type


def sdl(schema: strawberry.Schema) -> str:
    return schema.as_str() + "\n"


def possible_types(schema: strawberry.Schema) -> dict[str, list[str]]:
    """Each interface and union, sorted, with its object types sorted (the shape of
    graphql-codegen's fragment-matcher output, under "possibleTypes")."""
    graphql_schema = schema._schema
    found: dict[str, list[str]] = {}
    for name, named in sorted(graphql_schema.type_map.items()):
        if is_introspection_type(named):
            continue
        if isinstance(named, GraphQLInterfaceType | GraphQLUnionType):
            found[name] = sorted(t.name for t in graphql_schema.get_possible_types(named))
    return found


def possible_types_json(schema: strawberry.Schema) -> str:
    """The file clients load: ``new InMemoryCache({ possibleTypes: file.possibleTypes })``."""
    return json.dumps({"possibleTypes": possible_types(schema)}, indent=2) + "\n"
