"""Each released API version's SDL is frozen: breaking changes fail, additions are
snapshotted on purpose; its possibleTypes file follows its SDL."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import graphql
import pytest
import strawberry
from graphql import (
    BreakingChangeType,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    find_breaking_changes,
    is_introspection_type,
    is_specified_scalar_type,
)

from jobql.schema.exports import possible_types
from jobql.schema.hardening import SchemaOptions
from jobql.schema.registry import VERSIONS, ApiVersion

REPO = Path(__file__).resolve().parents[2]
EXPORT_SCRIPT = REPO / "scripts" / "export_sdl.py"
REGENERATE = (
    "if the change is deliberate and non-breaking, run `make sdl` "
    "(python scripts/export_sdl.py) and commit jobql/schema/<version>/schema.graphql"
)

ROOT_TYPES = {"Query", "Mutation", "Subscription"}
CUSTOM_SCALARS = {"JSON", "DateTime"}


@pytest.fixture(params=VERSIONS, ids=lambda api: api.name)
def api(request: pytest.FixtureRequest) -> ApiVersion:
    version: ApiVersion = request.param
    return version


@pytest.fixture
def snapshot_text(api: ApiVersion) -> str:
    assert api.sdl_file.exists(), f"missing SDL snapshot {api.sdl_file}; {REGENERATE}"
    return api.sdl_file.read_text(encoding="utf-8")


@pytest.fixture
def strawberry_schema(api: ApiVersion) -> strawberry.Schema:
    return api.build(SchemaOptions())


@pytest.fixture
def current(strawberry_schema: strawberry.Schema) -> GraphQLSchema:
    return strawberry_schema._schema


def load_export_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_sdl", EXPORT_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def object_fields(schema: GraphQLSchema, name: str) -> set[str]:
    named = schema.type_map[name]
    assert isinstance(named, GraphQLObjectType)
    return set(named.fields)


def _remove_field(sdl: str, type_name: str, field_line: str) -> str:
    """Drop one field line from one type's block of SDL text (and fail loudly if absent)."""
    start = sdl.index(f"type {type_name} {{")
    end = sdl.index("\n}", start)
    block = sdl[start:end]
    assert f"\n  {field_line}\n" in block, f"{field_line!r} not in {type_name}"
    return sdl[:start] + block.replace(f"\n  {field_line}\n", "\n", 1) + sdl[end:]


def test_no_breaking_changes_against_snapshot(
    api: ApiVersion, snapshot_text: str, current: GraphQLSchema
) -> None:
    released = graphql.build_schema(snapshot_text)
    changes = find_breaking_changes(released, current)
    assert changes == [], (
        f"breaking changes to the released {api.name} schema (ship them as a new API version, "
        "never by editing the v1 snapshot):\n"
        + "\n".join(f"  {c.type.name}: {c.description}" for c in changes)
    )


def test_every_named_type_is_versioned(api: ApiVersion, current: GraphQLSchema) -> None:
    exempt = ROOT_TYPES | CUSTOM_SCALARS
    checked = []
    unversioned = []
    for name, named_type in current.type_map.items():
        if is_introspection_type(named_type) or is_specified_scalar_type(named_type):
            continue
        if name in exempt:
            continue
        checked.append(named_type)
        if not name.startswith(api.type_prefix):
            unversioned.append(name)
    assert unversioned == []
    # Every kind of named type is covered, so the rule is not vacuous for any of them.
    for kind in (
        GraphQLObjectType,
        GraphQLInputObjectType,
        GraphQLEnumType,
        GraphQLUnionType,
        GraphQLInterfaceType,
    ):
        assert any(isinstance(t, kind) for t in checked), kind.__name__
    # The exemptions are real types of this schema, not stale names.
    assert exempt <= set(current.type_map)


def test_breaking_change_check_detects_a_removed_field() -> None:
    snapshot_text = VERSIONS[0].sdl_file.read_text(encoding="utf-8")
    original = graphql.build_schema(snapshot_text)
    modified = graphql.build_schema(_remove_field(snapshot_text, "V1Job", "tier: V1Tier!"))
    assert "tier" in object_fields(original, "V1Job")
    assert "tier" not in object_fields(modified, "V1Job")

    changes = find_breaking_changes(original, modified)

    assert len(changes) == 1, changes
    assert changes[0].type == BreakingChangeType.FIELD_REMOVED
    assert "V1Job.tier" in changes[0].description


def test_snapshot_matches_current_sdl(
    api: ApiVersion, snapshot_text: str, strawberry_schema: strawberry.Schema
) -> None:
    current_sdl = strawberry_schema.as_str() + "\n"
    assert snapshot_text == current_sdl, f"the {api.name} SDL changed; {REGENERATE}"


def test_possible_types_file_matches_the_schema(
    api: ApiVersion, strawberry_schema: strawberry.Schema, current: GraphQLSchema
) -> None:
    published = json.loads(api.possible_types_file.read_text(encoding="utf-8"))
    assert published == {"possibleTypes": possible_types(strawberry_schema)}, REGENERATE
    # Every interface and union is there, each with the object types that implement it.
    abstract = {
        name
        for name, t in current.type_map.items()
        if isinstance(t, GraphQLInterfaceType | GraphQLUnionType) and not is_introspection_type(t)
    }
    assert set(published["possibleTypes"]) == abstract
    for name, members in published["possibleTypes"].items():
        assert members, name
        for member in members:
            assert isinstance(current.type_map[member], GraphQLObjectType)


def test_export_script_writes_what_the_tests_expect(
    api: ApiVersion, strawberry_schema: strawberry.Schema
) -> None:
    files = load_export_script().current_files()
    assert files[api.sdl_file] == strawberry_schema.as_str() + "\n"
    assert json.loads(files[api.possible_types_file]) == {
        "possibleTypes": possible_types(strawberry_schema)
    }
