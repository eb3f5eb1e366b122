"""Vendor the GraphiQL explorer's browser files into jobql/http/graphiql/assets/, so the IDE
works with no outside network.

Downloads the pinned packages from the npm registry, checks each tarball against the
registry's `dist.integrity`, extracts the files the page loads and each package's licence,
and writes versions.json (package, version, file, sha256 of every file).

Usage:
    python scripts/vendor_graphiql.py          # download and rewrite the assets
    python scripts/vendor_graphiql.py --check  # exit 1 unless the files match versions.json
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "jobql" / "http" / "graphiql" / "assets"
VERSIONS = ASSETS / "versions.json"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Pin:
    """One npm package: the files the page loads (tarball path -> asset name)."""

    name: str
    version: str
    files: dict[str, str]
    license: str = "package/LICENSE"


# graphiql 3.9 is the last line with a minified UMD build that needs no bundler. The page
# runs subscriptions on graphql-ws's own browser build rather than the copy bundled in
# graphiql, whose client retries a refused key five times before it reports the refusal.
PINS = [
    Pin("react", "18.3.1", {"package/umd/react.production.min.js": "react.production.min.js"}),
    Pin(
        "react-dom",
        "18.3.1",
        {"package/umd/react-dom.production.min.js": "react-dom.production.min.js"},
    ),
    Pin(
        "graphiql",
        "3.9.0",
        {
            "package/graphiql.min.js": "graphiql.min.js",
            "package/graphiql.min.css": "graphiql.min.css",
        },
    ),
    Pin(
        "graphql-ws",
        "6.4.2",
        {"package/umd/graphql-ws.min.js": "graphql-ws.min.js"},
        license="package/LICENSE.md",
    ),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
    return body


def _check_integrity(data: bytes, integrity: str, what: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in ("sha512", "sha384", "sha256"):
        raise SystemExit(f"{what}: unsupported integrity {integrity!r}")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{what}: tarball does not match the registry's integrity")


def _fetch(pin: Pin) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The package's registry record and the wanted members of its verified tarball."""
    meta = json.loads(_get(f"{REGISTRY}/{pin.name}/{pin.version}"))
    dist = meta["dist"]
    tarball = _get(dist["tarball"])
    _check_integrity(tarball, dist["integrity"], f"{pin.name}@{pin.version}")
    wanted = {*pin.files, pin.license}
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.name in wanted and member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                members[member.name] = extracted.read()
    missing = wanted - members.keys()
    if missing:
        raise SystemExit(f"{pin.name}@{pin.version}: not in the tarball: {sorted(missing)}")
    return meta, members


def vendor(assets: Path = ASSETS) -> dict[str, Any]:
    """Download every pinned package and rewrite the assets folder and versions.json."""
    (assets / "LICENSES").mkdir(parents=True, exist_ok=True)
    packages: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for pin in PINS:
        meta, members = _fetch(pin)
        license_file = f"LICENSES/{pin.name}.txt"
        packages.append(
            {
                "name": pin.name,
                "version": pin.version,
                "integrity": meta["dist"]["integrity"],
                "license": meta.get("license"),
            }
        )
        for source, name in [*pin.files.items(), (pin.license, license_file)]:
            data = members[source]
            (assets / name).write_bytes(data)
            files.append(
                {
                    "file": name,
                    "package": pin.name,
                    "version": pin.version,
                    "source": source.removeprefix("package/"),
                    "sha256": sha256(data),
                    "bytes": len(data),
                }
            )
    record = {"packages": packages, "files": files}
    (assets / "versions.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    return record


def check(assets: Path = ASSETS) -> list[str]:
    """What differs between the assets folder and its versions.json (empty: all match)."""
    versions = assets / "versions.json"
    if not versions.is_file():
        return [f"{versions} is missing"]
    record = json.loads(versions.read_text("utf-8"))
    pinned = {(pin.name, pin.version) for pin in PINS}
    recorded = {(p["name"], p["version"]) for p in record["packages"]}
    problems = [f"{n}@{v} is pinned but not vendored" for n, v in sorted(pinned - recorded)]
    problems += [f"{n}@{v} is vendored but not pinned" for n, v in sorted(recorded - pinned)]
    listed = set()
    for entry in record["files"]:
        listed.add(entry["file"])
        path = assets / entry["file"]
        if not path.is_file():
            problems.append(f"{entry['file']} is missing")
        elif sha256(path.read_bytes()) != entry["sha256"]:
            problems.append(f"{entry['file']} does not match its sha256 in versions.json")
    present = {
        p.relative_to(assets).as_posix()
        for p in assets.rglob("*")
        if p.is_file() and p.name != "versions.json"
    }
    problems += [f"{name} is not listed in versions.json" for name in sorted(present - listed)]
    return problems


def main(argv: list[str]) -> int:
    if "--check" in argv:
        problems = check()
        for problem in problems:
            print(f"{problem}; run scripts/vendor_graphiql.py", file=sys.stderr)
        return 1 if problems else 0
    record = vendor()
    for entry in record["files"]:
        print(f"{entry['package']}@{entry['version']}: {entry['file']} ({entry['bytes']} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
