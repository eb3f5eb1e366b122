"""What a GraphQL operation may cost before it runs: the size of the response it can ask for,
estimated from the document, and the limit that refuses an operation above it.

A field costs 1 per value it can produce. A list multiplies what is selected under it: a
paged field (one with a ``first`` or ``last`` argument) by its page size, any other list by a fixed
estimate. Heavy fields (a job's input, output, result and metadata, a task's schemas) cost
their size class instead of 1. Fragments count as if every one of them applied (an upper
bound: on a union only one member's fragment does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_interface_type,
    is_list_type,
    is_object_type,
    value_from_ast_untyped,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"

# Size classes: what one value of a field may weigh, in units of a plain scalar.
SMALL = 1
MEDIUM = 10  # bounded JSON: metadata, a task's schemas
LARGE = 20  # a prompt's input, a model's output (text or structured)

HEAVY_FIELDS: Mapping[str, int] = MappingProxyType(
    {
        "input": LARGE,
        "params": LARGE,  # v2's name for a job's input
        "output": LARGE,
        "result": LARGE,
        "metadata": MEDIUM,
        "inputSchema": MEDIUM,
        "paramsSchema": MEDIUM,
        "outputSchema": MEDIUM,
    }
)
# The arguments that size a page (Relay: forwards and backwards).
PAGE_ARGUMENTS = frozenset({"first", "last"})
# Lists without a `first` argument (tasks, violations, findings) are short; counted as this.
LIST_ESTIMATE = 10


@dataclass(frozen=True)
class CostModel:
    default_page_size: int
    max_page_size: int
    heavy_fields: Mapping[str, int] = field(default_factory=lambda: HEAVY_FIELDS)
    list_estimate: int = LIST_ESTIMATE


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    model: CostModel,
) -> int:
    """The cost of the operation of ``document`` that would run (0 if none can)."""
    operation = _operation(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    # A variable left out takes its default from the document, as execution will.
    values = {
        d.variable.name.value: value_from_ast_untyped(d.default_value)
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }
    values.update(variables or {})
    walk = _Walk(schema, fragments, values, model)
    return walk.selection_set(operation.selection_set, root, frozenset())


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


class _Walk:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        model: CostModel,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.model = model

    def selection_set(
        self,
        selections: SelectionSetNode,
        parent: GraphQLNamedType,
        seen: frozenset[str],
        page: int | None = None,
    ) -> int:
        return sum(
            self.field(node, owner, seen, page)
            for node, owner, seen in self._fields(selections, parent, seen)
        )

    def _fields(
        self, selections: SelectionSetNode, parent: GraphQLNamedType, seen: frozenset[str]
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType, frozenset[str]]]:
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent, seen
            elif isinstance(selection, InlineFragmentNode):
                owner = self._type(selection.type_condition, parent)
                yield from self._fields(selection.selection_set, owner, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:  # validation reports both
                    continue
                owner = self._type(fragment.type_condition, parent)
                yield from self._fields(fragment.selection_set, owner, seen | {name})

    def _type(self, condition: Any, parent: GraphQLNamedType) -> GraphQLNamedType:
        if condition is None:
            return parent
        named = self.schema.get_type(condition.name.value)
        return named if named is not None else parent

    def field(
        self,
        node: FieldNode,
        parent: GraphQLNamedType,
        seen: frozenset[str],
        page: int | None,
    ) -> int:
        name = node.name.value
        weight = self.model.heavy_fields.get(name, SMALL)
        if not (is_object_type(parent) or is_interface_type(parent)):
            return weight
        definition = parent.fields.get(name)
        if definition is None:  # __typename, introspection, or unknown (validation says)
            return weight
        if any(a in PAGE_ARGUMENTS for a in definition.args):
            page = self._page_size(node)
        items = 1
        field_type = get_nullable_type(definition.type)
        if is_list_type(field_type):
            items = page if page is not None else self.model.list_estimate
            page = None
        if node.selection_set is None:
            return items * weight
        child = get_named_type(definition.type)
        assert child is not None
        return items * (weight + self.selection_set(node.selection_set, child, seen, page))

    def _page_size(self, node: FieldNode) -> int:
        """The page a paged field can return: its `first` or `last` (a literal or a
        variable; the larger when both are given), capped at the largest page; the default
        page when both are absent or null, the largest when one is not an integer
        (validation or the resolver refuses it)."""
        sizes = [
            self._page_argument(argument)
            for argument in node.arguments or ()
            if argument.name.value in PAGE_ARGUMENTS
        ]
        given = [size for size in sizes if size is not None]
        return max(given) if given else self.model.default_page_size

    def _page_argument(self, argument: ArgumentNode) -> int | None:
        value: Any = None
        if isinstance(argument.value, NullValueNode):
            return None
        if isinstance(argument.value, IntValueNode):
            value = int(argument.value.value)
        elif isinstance(argument.value, VariableNode):
            value = self.variables.get(argument.value.name.value)
            if value is None:
                return None
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, min(value, self.model.max_page_size))
        return self.model.max_page_size


def too_costly(cost: int, limit: int) -> GraphQLError:
    return GraphQLError(
        f"The query's cost ({cost}) is above the limit ({limit}): ask for fewer items "
        "(first) or leave out heavy fields (input, output, result, metadata).",
        extensions={"code": QUERY_TOO_COSTLY, "cost": cost, "maxCost": limit},
    )


class QueryCostLimiter(SchemaExtension):
    """Refuses a query or mutation whose cost is above the limit, before it runs (once its
    variables are known, so a page size given as a variable counts as sent)."""

    def __init__(self, max_cost: int, model: CostModel) -> None:
        self.max_cost = max_cost
        self.model = model

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.operation_type is not OperationType.SUBSCRIPTION:
            cost = operation_cost(
                context.schema._schema,
                document,
                context.operation_name,
                context.variables,
                self.model,
            )
            if cost > self.max_cost:
                # A result set here is answered instead of executing the operation.
                context.result = GraphQLExecutionResult(
                    data=None, errors=[too_costly(cost, self.max_cost)]
                )
        yield
