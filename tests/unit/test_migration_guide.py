"""Every GraphQL block of docs/migrating-to-v2.md is valid against the version it names on
its first line (`# v1` or `# v2`), so the side-by-side examples cannot drift from the
schemas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import parse, validate

from jobql.schema.hardening import SchemaOptions
from jobql.schema.registry import version

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "migrating-to-v2.md"
BLOCKS = re.findall(r"```graphql\n(.*?)```", GUIDE.read_text("utf-8"), flags=re.DOTALL)


def test_the_guide_shows_both_versions() -> None:
    versions = [block.splitlines()[0] for block in BLOCKS]
    assert versions.count("# v1") >= 5
    assert versions.count("# v2") == versions.count("# v1")
    assert set(versions) == {"# v1", "# v2"}


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.splitlines()[1][:40])
def test_each_block_is_valid_for_its_version(block: str) -> None:
    name = block.splitlines()[0].removeprefix("# ")
    schema = version(name).build(SchemaOptions())._schema
    errors = validate(schema, parse(block))
    assert errors == [], [e.message for e in errors]
