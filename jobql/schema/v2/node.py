"""The Relay Node interface: every object with a global id, refetchable with node(id:)."""

from __future__ import annotations

import strawberry


@strawberry.interface(
    description="An object with a global id: opaque, stable, refetchable with node(id:)."
)
class V2Node:
    id: strawberry.ID
