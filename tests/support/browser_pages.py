"""The dashboard tests' pages in headless Chromium (the browser from tests/dashboard/conftest.py): a fresh page in a
context of its own, and the dashboard opened at a run once its panel shows that run. Playwright is imported when
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
