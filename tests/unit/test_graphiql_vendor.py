"""scripts/vendor_graphiql.py: the checked-in assets match versions.json and the pins, and
--check catches a changed, missing or unlisted file (offline: nothing is downloaded)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "vendor_graphiql.py"


@pytest.fixture(scope="module")
def vendor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_graphiql", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def copy(vendor: ModuleType, tmp_path: Path) -> Path:
    folder = tmp_path / "assets"
    shutil.copytree(vendor.ASSETS, folder)
    return folder


def test_the_checked_in_assets_match_versions_json(vendor: ModuleType) -> None:
    assert vendor.check() == []
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_changed_file_is_caught(vendor: ModuleType, copy: Path) -> None:
    script = copy / "graphiql.min.js"
    script.write_bytes(script.read_bytes() + b"\n")
    assert vendor.check(copy) == ["graphiql.min.js does not match its sha256 in versions.json"]


def test_a_missing_or_unlisted_file_is_caught(vendor: ModuleType, copy: Path) -> None:
    (copy / "LICENSES" / "react.txt").unlink()
    (copy / "extra.js").write_text("alert(1)")
    assert vendor.check(copy) == [
        "LICENSES/react.txt is missing",
        "extra.js is not listed in versions.json",
    ]


def test_every_pin_is_vendored_with_its_licence(vendor: ModuleType) -> None:
    record = json.loads((vendor.ASSETS / "versions.json").read_text("utf-8"))
    files = {(f["package"], f["version"], f["file"]) for f in record["files"]}
    for pin in vendor.PINS:
        assert (pin.name, pin.version, f"LICENSES/{pin.name}.txt") in files
        for name in pin.files.values():
            assert (pin.name, pin.version, name) in files


def test_a_tarball_must_match_the_registry_integrity(vendor: ModuleType) -> None:
    data = b"package contents"
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    vendor._check_integrity(data, good, "pkg@1.0.0")
    with pytest.raises(SystemExit, match="does not match"):
        vendor._check_integrity(data + b"!", good, "pkg@1.0.0")
    with pytest.raises(SystemExit, match="unsupported"):
        vendor._check_integrity(data, "md5-abc", "pkg@1.0.0")
