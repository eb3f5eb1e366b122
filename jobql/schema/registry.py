"""The API versions this server speaks, in one place. Each one is mounted at
``/<name>/graphql`` (HTTP and both WebSocket protocols), publishes its SDL snapshot and
possibleTypes file next to its schema package (``jobql/schema/<name>/``), and serves the
``[<name>.*]`` tables of the tasks file.

Adding a version: a schema package ``jobql/schema/vN`` with a ``build_schema(options)``, its
resolvers, a line below, and ``[vN.*]`` task tables (docs/versioning.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import strawberry

from jobql.schema.hardening import SchemaOptions
from jobql.schema.v1.schema import build_schema as build_v1
from jobql.schema.v2.schema import build_schema as build_v2

SCHEMA_DIR = Path(__file__).parent


@dataclass(frozen=True)
class ApiVersion:
    name: str  # "v1": the path segment, the tasks file's table and the types' prefix
    build: Callable[[SchemaOptions], strawberry.Schema]

    @property
    def path(self) -> str:
        """Where it is served (HTTP and WebSocket)."""
        return f"/{self.name}/graphql"

    @property
    def type_prefix(self) -> str:
        return self.name.upper()

    @property
    def sdl_file(self) -> Path:
        """The checked-in SDL snapshot: changes to it are additive only."""
        return SCHEMA_DIR / self.name / "schema.graphql"

    @property
    def possible_types_file(self) -> Path:
        """The checked-in possibleTypes (also served at /<name>/possible-types.json)."""
        return SCHEMA_DIR / self.name / "possible-types.json"


VERSIONS: tuple[ApiVersion, ...] = (ApiVersion("v1", build_v1), ApiVersion("v2", build_v2))


def version(name: str) -> ApiVersion:
    for candidate in VERSIONS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no API version {name!r} (known: {', '.join(v.name for v in VERSIONS)})")
