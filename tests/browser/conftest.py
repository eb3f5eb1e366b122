"""Debian's Chromium, headless, driven by Playwright, against a real jobql server; every
request to another origin is refused and recorded.

Without Chromium or the playwright package the browser tests skip and say why; with CI=true
they fail instead: CI must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobql.settings import Settings
from tests.api import Server, serve
from tests.backends import IN_CI, Databases
from tests.conftest import TEST_TASKS

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Keep Chromium quiet and local: no background fetches, updates, sync or QUIC probes.
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires the browser tests to run", pytrace=False)
    pytest.skip(f"{reason}; the browser tests need it")


@pytest.fixture
def chromium() -> str:
    """The Chromium executable, once playwright and Chromium are both there."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    path = os.environ.get("JOBQL_TEST_CHROMIUM") or shutil.which("chromium")
    if path is None or not os.access(path, os.X_OK):
        _missing(f"Chromium is not installed at {path or 'chromium'} (apt-get install chromium)")
    assert path is not None
    return path


@dataclass
class Browsing:
    """One page in a fresh browser profile, allowed to reach only the server's origin."""

    page: Any  # playwright.async_api.Page
    origin: str
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    sent_frames: list[str] = field(default_factory=list)
    received_frames: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


_RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@pytest.fixture
async def graphiql_server(databases: Databases, chromium: str) -> AsyncIterator[Server]:
    settings = Settings(
        database_url=databases.sqlite(),
        broadcast_url="memory://",
        tasks_file=TEST_TASKS,
        migrate_on_start=False,
        create_dev_key=False,
        graphiql=True,
        heartbeat_seconds=30,  # the stream's frames carry only the job's events
        coalesce_ms=10,
        shutdown_grace_seconds=0,
        enforce_limits=False,
        _env_file=None,  # type: ignore[call-arg]
    )
    async with serve(settings) as running:
        yield running


# Playwright's objects are typed in its package; the fixtures here hand them on as Any so
# the tests import nothing from it when it is missing.
@pytest.fixture
async def browsing(
    graphiql_server: Server, chromium: str, tmp_path: Path
) -> AsyncIterator[Browsing]:
    from playwright.async_api import async_playwright

    origin = graphiql_server.http_url.rstrip("/")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
            service_workers="block",
        )
        try:
            browsing = Browsing(page=context.pages[0], origin=origin)

            async def only_the_server(route: Any) -> None:
                url: str = route.request.url
                if url == origin or url.startswith(origin + "/"):
                    await route.continue_()
                else:
                    browsing.blocked.append(url)
                    await route.abort("blockedbyclient")

            await context.route("**/*", only_the_server)
            page = browsing.page
            page.on("pageerror", lambda error: browsing.errors.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    browsing.errors.append(f"console {message.type}: {message.text}")
                    if message.type == "error"
                    else None
                ),
            )

            def watch(socket: Any) -> None:
                browsing.sockets.append(socket.url)
                socket.on("framesent", lambda payload: browsing.sent_frames.append(str(payload)))
                socket.on(
                    "framereceived", lambda payload: browsing.received_frames.append(str(payload))
                )

            page.on("websocket", watch)
            await context.add_init_script(_RECORD_CSP_VIOLATIONS)
            yield browsing
        finally:
            await context.close()
