"""The vendored GraphiQL files (listed with their hashes in assets/versions.json) and the
route that serves them: only listed files, each under its content hash, cached for a year."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

# Long enough that a browser never asks again: a new file has a new hash, so a new URL.
CACHE_FOREVER = "public, max-age=31536000, immutable"
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    name: str
    package: str
    version: str
    sha256: str
    content_type: str

    @property
    def digest(self) -> str:
        return self.sha256[:16]

    @property
    def path(self) -> str:
        """Where the page loads it from, relative to /<version>/graphql."""
        return f"graphiql/{self.digest}/{self.name}"

    def read(self) -> bytes:
        return _folder().joinpath(*self.name.split("/")).read_bytes()


def _folder() -> Traversable:
    return resources.files(__package__).joinpath("assets")


def _content_type(name: str) -> str:
    return _CONTENT_TYPES[name[name.rindex(".") :]]


@functools.cache
def assets() -> dict[str, Asset]:
    """Every vendored file by name, as versions.json lists it."""
    record = json.loads(_folder().joinpath("versions.json").read_text("utf-8"))
    return {
        entry["file"]: Asset(
            entry["file"],
            entry["package"],
            entry["version"],
            entry["sha256"],
            _content_type(entry["file"]),
        )
        for entry in record["files"]
    }


@functools.cache
def _body(name: str) -> bytes:
    return assets()[name].read()


async def _serve(request: Request) -> Response:
    asset = assets().get(request.path_params["name"])
    if asset is None or request.path_params["digest"] != asset.digest:
        return PlainTextResponse("Not Found", status_code=404)
    return Response(
        _body(asset.name),
        media_type=asset.content_type,
        headers={
            "Cache-Control": CACHE_FOREVER,
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _disabled(request: Request) -> Response:
    return PlainTextResponse("Not Found", status_code=404)


def asset_route(prefix: str, enabled: bool) -> Route:
    """GET <prefix>/<hash>/<file> (/v1/graphiql/… next to /v1/graphql); every path answers
    404 when GraphiQL is off."""
    return Route(
        prefix + "/{digest}/{name:path}", _serve if enabled else _disabled, methods=["GET"]
    )
