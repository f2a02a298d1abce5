"""The dashboard tests' pages in headless Chromium (the browser from tests/dashboard/conftest.py): a fresh page in a
context of its own, the dashboard opened at a run once its panel shows that run, and a resolution's actions menu opened
with a key. Playwright is imported when
used: a test without it skips (conftest.py says why)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

VIEWPORT = {"width": 1440, "height": 960}


@contextlib.contextmanager
def new_page(browser: Any, **options: Any) -> Iterator[Any]:
    """A fresh page in a browser context of its own (``options``: the context's, e.g. its viewport); the context
    closed afterwards (before the server stops: a page's event stream holds a connection)."""
    context = browser.new_context(**options)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Any, url: str, key: str) -> None:
    """The API key the dashboard at ``url`` asks for, stored where it looks (its origin's localStorage)."""
    page.goto(url + "/static/style.css")  # the page's origin, without starting the app
    page.evaluate(f"localStorage.setItem('sematic_k8s_api_key', '{key}')")


def open_run(page: Any, url: str, run_id: str, timeout: float | None = None) -> None:
    """The dashboard at ``url`` opened at run ``run_id``, once its panel shows that run (within ``timeout`` ms, or
    the default of Playwright's ``expect``)."""
    from playwright.sync_api import expect

    page.goto(f"{url}/#/runs/{run_id}")
    expect(page.get_by_test_id("run-panel")).to_have_attribute("data-run-id", run_id, timeout=timeout)


@contextlib.contextmanager
def actions_menu(browser: Any, url: str, key: str, resolution_id: str, progress: str) -> Iterator[Any]:
    """A fresh page of the dashboard at ``url`` logged in with ``key``, at resolution ``resolution_id`` once its header
    reads ``progress`` (the key reads the page), its actions menu opened: the page."""
    from playwright.sync_api import expect

    with new_page(browser, viewport=VIEWPORT) as page:
        log_in(page, url, key)
        page.goto(f"{url}/#/resolutions/{resolution_id}")
        expect(page.get_by_test_id("header-progress")).to_have_text(progress)
        page.get_by_test_id("resolution-actions").click()
        expect(page.get_by_test_id("resolution-actions-menu")).to_be_visible()
        yield page
