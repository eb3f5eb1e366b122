"""Apollo's multipart HTTP subscription protocol (`Accept: multipart/mixed;
subscriptionSpec=1.0`): each result is a JSON part `{"payload": <result>}`, `{}` parts keep an
idle response open, and `{"payload": null, "errors": [...]}` ends it for a reason outside
GraphQL. https://www.apollographql.com/docs/graphos/routing/operations/subscriptions/multipart-protocol
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

BOUNDARY = "graphql"
CONTENT_TYPE = f'multipart/mixed;boundary="{BOUNDARY}";subscriptionSpec=1.0'
_PART_HEADERS = b"\r\nContent-Type: application/json; charset=utf-8\r\n\r\n"
_DELIMITER = f"\r\n--{BOUNDARY}".encode()


def accepts_multipart(media_type: str, params: Mapping[str, str]) -> bool:
    """Whether one Accept entry asks for multipart subscriptions (spec 1.0)."""
    boundary = params.get("boundary", BOUNDARY).strip("'\"")
    spec = params.get("subscriptionspec", "").strip("'\"")
    return media_type == "multipart/mixed" and boundary == BOUNDARY and spec.startswith("1.0")


def _part(value: object) -> bytes:
    return _PART_HEADERS + json.dumps(value, separators=(",", ":")).encode() + _DELIMITER


class MultipartFraming:
    content_type = CONTENT_TYPE
    extra_headers: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

    def opening(self) -> bytes:
        return _DELIMITER

    def result(self, payload: Mapping[str, object], seq: int | None) -> bytes:
        return _part({"payload": payload})

    def fatal(self, errors: Sequence[Mapping[str, object]]) -> bytes:
        return _part({"payload": None, "errors": list(errors)})

    def keepalive(self) -> bytes:
        return _part({})

    def complete(self) -> bytes:
        return b"--\r\n"
