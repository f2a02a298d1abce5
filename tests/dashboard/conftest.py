"""The dashboard tests' browser: Debian's headless Chromium driven by Playwright.

Needs ``chromium`` (apt-get install chromium) and ``playwright`` (pip install playwright; never
``playwright install``). Without them a browser test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_pages import VIEWPORT, new_page
from outages import ServerProcess, running

CHROMIUM = os.environ.get("SEMATIC_K8S_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright; never `playwright install`)")
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or set SEMATIC_K8S_CHROMIUM)")
    if missing:
        message = "dashboard browser test needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """``sematic-k8s server --local`` over ``tmp_path``, a process of its own."""
    srv = ServerProcess(tmp_path)
    with running(srv):
        yield srv


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    """A fresh page on :func:`server`, closed before the server stops (its event stream holds a connection). Tests
    with a server of another kind define a ``page`` of their own."""
    with new_page(browser, viewport=VIEWPORT) as p:
        yield p
