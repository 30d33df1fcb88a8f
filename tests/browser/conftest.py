"""Fixtures for browser tests: headless Chromium (Debian's) driven by Playwright.

The cluster fixtures (``redis_server``, ``db_path``, ``cluster``) are the suite's own,
from ``tests/conftest.py``, which also attaches the nodes' log tails to a failing test's
report. Tests here are skipped only where ``/usr/bin/chromium`` is absent; Playwright
itself is a test requirement.

Screenshots go to ``$STOMP_SCREENSHOTS`` when set (``STOMP_SCREENSHOTS=docs/_static``
refreshes the ones the docs show), to the test's temporary directory otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")

# Debian's Chromium, without the network chatter and features a CI box has no use for.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module; each test opens its own contexts.

    Not per session: while Playwright's sync API is open, its event loop counts as running
    in the main thread, and later tests calling ``async_to_sync`` would fail.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package chromium; `make deps` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where the test saves its screenshots (see the module docstring)."""
    target = Path(os.environ.get("STOMP_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def new_context(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new_context(width=1280, height=800)``: a fresh browser profile, closed at teardown."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 800) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        with contextlib.suppress(Exception):  # already closed by the test
            context.close()
