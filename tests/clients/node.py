"""Run the JavaScript client tests (Node, npm packages, Chromium) from pytest.

Without Node, the installed packages or Chromium the tests skip and say why; under CI=true
they fail instead, because CI must run them for real.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import IN_CI

CLIENTS = Path(__file__).parent
NODE_MODULES = CLIENTS / "node_modules"
BIN = NODE_MODULES / ".bin"
CHROMIUM = Path("/usr/bin/chromium")


def missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def require_node() -> str:
    """The node executable, with the client packages installed from the lockfile."""
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (the JavaScript client tests need Node 20+)")
    assert node is not None
    if not (NODE_MODULES / ".package-lock.json").exists():
        missing(f"{NODE_MODULES} is missing: run `make clients` (npm ci in tests/clients)")
    return node


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing: apt-get install chromium")
    return CHROMIUM


@dataclass(frozen=True)
class Finished:
    code: int
    output: str


async def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> Finished:
    """Run a command in tests/clients without blocking the event loop (the server under
    test runs in it); stdout and stderr interleaved, as a developer would read them."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=CLIENTS,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        return Finished(-1, f"timed out after {timeout} s\n{out.decode(errors='replace')}")
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(errors="replace"))


async def node_test(file: str, env: Mapping[str, str], timeout: float = 60) -> None:
    """`node --test <file>`; fails with Node's report unless every test passed."""
    node = require_node()
    finished = await run(node, "--test", "--test-reporter=spec", file, env=env, timeout=timeout)
    print(finished.output)  # pytest shows it with the failure, or with -rP
    assert finished.code == 0, f"node --test {file} exited {finished.code}:\n{finished.output}"
    assert "\u2139 pass 0\n" not in finished.output, f"no test ran in {file}"
