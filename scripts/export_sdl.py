"""Write each API version's SDL snapshot (jobql/schema/vN/schema.graphql, the frozen
contract) and its possibleTypes (jobql/schema/vN/possible-types.json, served at
/vN/possible-types.json for Apollo Client and other normalized caches).

Usage:
    python scripts/export_sdl.py          # rewrite every version's files
    python scripts/export_sdl.py --check  # exit 1 if any is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def current_files() -> dict[Path, str]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from jobql.schema.exports import possible_types_json, sdl
    from jobql.schema.hardening import SchemaOptions
    from jobql.schema.registry import VERSIONS

    files: dict[Path, str] = {}
    for api in VERSIONS:
        schema = api.build(SchemaOptions())
        files[api.sdl_file] = sdl(schema)
        files[api.possible_types_file] = possible_types_json(schema)
    return files


def main(argv: list[str]) -> int:
    files = current_files()
    if "--check" in argv:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text("utf-8") != text]
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date; run scripts/export_sdl.py")
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
