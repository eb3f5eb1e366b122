"""The query cost estimate, the directive cap and the profile's defaults, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import GraphQLSchema, parse

from jobql.cli import main
from jobql.runtime import ConfigError, check_configuration
from jobql.schema.cost import LARGE, CostModel, operation_cost
from jobql.schema.v1.schema import build_schema
from jobql.settings import Settings
from tests.api import CANCEL, EVENTS, JOB, SUBMIT

MODEL = CostModel(default_page_size=20, max_page_size=100)


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def cost(schema: GraphQLSchema, query: str, variables: dict[str, object] | None = None) -> int:
    return operation_cost(schema, parse(query), None, variables, MODEL)


def test_a_list_costs_its_page_times_what_it_selects(schema: GraphQLSchema) -> None:
    # jobs 1 + 100 edges x (edge 1 + node 1 + id 1 + status 1)
    assert cost(schema, "{ jobs(first: 100) { edges { node { id status } } } }") == 401
    assert cost(schema, "{ jobs { edges { node { id status } } } }") == 81  # default page
    assert cost(schema, "{ jobs(first: 5000) { edges { node { id } } } }") == 301  # capped


def test_heavy_fields_cost_their_size_class(schema: GraphQLSchema) -> None:
    light = cost(schema, "{ jobs(first: 10) { edges { node { id } } } }")
    heavy = cost(schema, "{ jobs(first: 10) { edges { node { input } } } }")
    assert heavy - light == 10 * (LARGE - 1)


def test_the_amplification_query_is_far_above_the_default_limit(schema: GraphQLSchema) -> None:
    page = "jobs(first: 100) { edges { node { input output } } }"
    query = "{ " + " ".join(f"a{i}: {page}" for i in range(30)) + " }"
    assert cost(schema, query) == 30 * cost(schema, "{ " + page + " }") > 100_000


def test_a_page_size_in_a_variable_counts_as_sent(schema: GraphQLSchema) -> None:
    query = "query P($n: Int) { jobs(first: $n) { edges { node { id } } } }"
    assert cost(schema, query, {"n": 2}) == 1 + 2 * 3
    assert cost(schema, query, {}) == 1 + 20 * 3  # absent: the default page
    assert cost(schema, query, {"n": None}) == 1 + 20 * 3
    assert cost(schema, query, {"n": "x"}) == 1 + 100 * 3  # invalid: the largest page
    assert cost(schema, "{ jobs(first: null) { edges { node { id } } } }") == 1 + 20 * 3
    defaulted = "query P($n: Int = 100) { jobs(first: $n) { edges { node { id } } } }"
    assert cost(schema, defaulted, {}) == 1 + 100 * 3  # as execution will use it
    assert cost(schema, defaulted, {"n": 1}) == 1 + 1 * 3


def test_fragments_count_and_cycles_end(schema: GraphQLSchema) -> None:
    spread = (
        "{ jobs(first: 10) { edges { node { ...F } } } } fragment F on V1Job { id ...G } "
        "fragment G on V1Job { status ...F }"
    )
    assert cost(schema, spread) == 1 + 10 * (2 + 2)


def test_the_clients_operations_are_well_under_the_limit(schema: GraphQLSchema) -> None:
    for query in (SUBMIT, JOB, CANCEL, EVENTS):
        assert cost(schema, query) < 500


def test_directives_are_capped_per_node_and_per_document() -> None:
    schema = build_schema(max_directives=6, max_directives_per_node=2)
    ok = schema.execute_sync("query Q($a: Boolean!) { __typename @include(if: $a) @skip(if: $a) }")
    assert ok.errors is None or all(
        (e.extensions or {}).get("code") != "TOO_MANY_DIRECTIVES" for e in ok.errors
    )
    per_node = schema.execute_sync("{ __typename @aa @aa @aa @aa @aa @aa @aa @aa @aa @aa }")
    assert per_node.errors is not None
    assert [(e.extensions or {}).get("code") for e in per_node.errors] == ["TOO_MANY_DIRECTIVES"]
    fields = " ".join(f"a{i}: __typename @skip(if: false)" for i in range(7))
    per_document = schema.execute_sync("{ " + fields + " }")
    assert per_document.errors is not None
    [error] = per_document.errors
    assert error.extensions == {"code": "TOO_MANY_DIRECTIVES", "directives": 7, "limit": 6}


def settings(**values: object) -> Settings:
    return Settings(**values, _env_file=None)  # type: ignore[arg-type,call-arg]


def test_the_profile_sets_defaults_and_switches_win() -> None:
    dev = settings()
    assert (dev.graphiql, dev.introspection, dev.allow_get_queries, dev.create_dev_key) == (
        True,
        True,
        True,
        True,
    )
    assert dev.field_suggestions is False
    prod = settings(profile="production")
    assert (prod.graphiql, prod.introspection, prod.allow_get_queries, prod.create_dev_key) == (
        False,
        False,
        False,
        False,
    )
    assert settings(profile="production", introspection=True).introspection is True
    assert settings(database_url="postgresql+asyncpg://h/db").create_dev_key is False
    assert settings(database_url="postgresql+asyncpg://h/db", create_dev_key=True).create_dev_key


def test_the_profile_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQL_PROFILE", "production")
    monkeypatch.setenv("JOBQL_GRAPHIQL", "true")
    from_env = settings()
    assert from_env.graphiql is True
    assert from_env.introspection is False


def test_production_needs_websocket_origins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="JOBQL_WS_ALLOWED_ORIGINS"):
        check_configuration(settings(profile="production"), with_worker=False, serving=True)
    check_configuration(settings(profile="production"), with_worker=False)  # a worker may
    check_configuration(
        settings(profile="production", ws_allowed_origins=["https://app.example"]),
        with_worker=False,
        serving=True,
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("jobql.cli.configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("JOBQL_PROFILE", "production")
    monkeypatch.setenv("JOBQL_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/x.db")
    assert main(["serve"]) == 2
    assert "JOBQL_WS_ALLOWED_ORIGINS" in capsys.readouterr().err


def test_v2_pages_backwards_cost_like_forwards() -> None:
    from jobql.schema.v2.schema import build_schema as build_v2

    v2 = build_v2()._schema
    forwards = cost(v2, "{ jobs(first: 100) { edges { node { id } } } }")
    assert cost(v2, "{ jobs(last: 100) { edges { node { id } } } }") == forwards
    # Both given: the larger page bounds it.
    assert cost(v2, "{ jobs(first: 5, last: 100) { edges { node { id } } } }") == forwards
    assert cost(v2, "query($n: Int) { jobs(last: $n) { edges { node { id } } } }", {"n": 100}) == (
        forwards
    )
    # Without either, the default page.
    default = cost(v2, "{ jobs { edges { node { id } } } }")
    assert default < forwards
    # v2's job input (params) is as heavy as v1's input.
    light = cost(v2, "{ jobs(last: 10) { edges { node { id } } } }")
    heavy = cost(v2, "{ jobs(last: 10) { edges { node { params } } } }")
    assert heavy - light == 10 * (LARGE - 1)
