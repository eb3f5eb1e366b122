"""Write the current v1 SDL to jobql/schema/v1/schema.graphql (the frozen contract snapshot).

Usage:
    python scripts/export_sdl.py          # rewrite the snapshot
    python scripts/export_sdl.py --check  # exit 1 if the snapshot is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "jobql" / "schema" / "v1" / "schema.graphql"


def current_sdl() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from jobql.schema.v1.schema import build_schema

    return build_schema().as_str() + "\n"


def main(argv: list[str]) -> int:
    sdl = current_sdl()
    if "--check" in argv:
        if not SNAPSHOT.exists() or SNAPSHOT.read_text(encoding="utf-8") != sdl:
            print(f"{SNAPSHOT.relative_to(ROOT)} is out of date; run scripts/export_sdl.py")
            return 1
        return 0
    SNAPSHOT.write_text(sdl, encoding="utf-8")
    print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
