"""The dashboard on the days things go wrong, in headless Chromium against ``sematic-k8s server --local`` as a
process of its own: the server killed and started again under an open resolution page, a proxy answering its own
HTML 502 page, a cancel refused because the resolution ended behind the page's back, a run whose error is huge, and a
corrupt run record."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from outages import ServerProcess
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, RunRecord, utcnow
from serving import record_resolution

VIEWPORT = {"width": 1440, "height": 960}
WAIT_MS = 30_000
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    """A fresh page; closed before the server stops (its event stream holds a connection)."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield context.new_page()
    finally:
        context.close()


def _add_run(server: ServerProcess, root_id: str, func: str, **fields: Any) -> str:
    """Record a run of ``func`` under ``root_id`` through the API (as a resolver does); its id."""
    run_id = uuid.uuid4().hex
    batch = Batch()
    batch.add_run(RunRecord(id=run_id, root_id=root_id, parent_id=root_id, func_path=f"pipes:{func}",
                            func_name=func, created_at=utcnow(), **fields))
    store = HttpStore(server.url, None)
    try:
        store.write(batch)
    finally:
        store.close()
    return run_id


def _running(server: ServerProcess) -> str:
    """A running cloud resolution with one running step; its id."""
    root_id = record_resolution(server.url, "", kind="cloud", state="running", image=IMAGE)
    _add_run(server, root_id, "step", state="running")
    return root_id


def _sql(server: ServerProcess, statement: str, *args: Any) -> None:
    """Write the server's database directly: a writer whose changes the page hears nothing of."""
    with sqlite3.connect(server.home / "db.sqlite3") as db:
        assert db.execute(statement, args).rowcount == 1


def _tid(page: Any, testid: str) -> Any:
    return page.locator(f'[data-testid="{testid}"]')


def _live(page: Any) -> None:
    from playwright.sync_api import expect

    expect(_tid(page, "live-status")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)


def test_a_server_restarted_under_a_resolution_page_is_said_and_followed_again(page: Any,
                                                                               server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id = _running(server)
    page.goto(f"{server.url}/#/resolutions/{root_id}")
    _live(page)
    expect(_tid(page, "run-node")).to_have_count(2, timeout=WAIT_MS)

    server.kill()
    expect(_tid(page, "live-status")).to_have_attribute("data-mode", "polling", timeout=WAIT_MS)
    notice = _tid(page, "resolution-stale")
    expect(notice).to_have_text("the server cannot be reached: it is stopped or restarting, or the network is down;"
                                " showing what was last seen, retrying", timeout=WAIT_MS)
    expect(_tid(page, "resolution-view")).to_have_attribute("data-stale", "true")
    expect(_tid(page, "graph-wrap")).to_be_visible()  # what was last seen stays, greyed
    expect(_tid(page, "run-node")).to_have_count(2)
    expect(_tid(page, "resolution-state")).to_have_text("running")
    expect(_tid(page, "resolution-missing")).to_have_count(0)

    server.start()
    _live(page)  # back by itself, no reload
    expect(_tid(page, "resolution-state")).to_have_text("running", timeout=WAIT_MS)
    expect(_tid(page, "run-node")).to_have_count(2)  # nothing drawn twice
    expect(_tid(page, "resolution-missing")).to_have_count(0)
    expect(notice).to_be_hidden()
    expect(_tid(page, "resolution-view")).to_have_attribute("data-stale", "false")
    _add_run(server, root_id, "late", state="running")
    expect(_tid(page, "run-node")).to_have_count(3, timeout=WAIT_MS)  # live updates again
    expect(page.locator('[data-testid="run-node"][data-func="late"]')).to_have_count(1)


class HtmlErrorProxy:
    """An HTTP proxy on 127.0.0.1 before ``target``, as nginx would stand before the server: GETs are passed on,
    except the event stream (it does not pass streams) and, while :attr:`failing`, every /api/v1 request, which
    it answers with its own HTML 502 page."""

    PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
            b"<hr><center>nginx/1.25.3</center></body></html>")

    def __init__(self, target: str) -> None:
        self.failing = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/api/v1/") and (proxy.failing or self.path.startswith("/api/v1/events")):
                    self._answer(502, "text/html", proxy.PAGE)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "x-api-key")}
                resp = httpx.get(target + self.path, headers=headers, timeout=30)
                self._answer(resp.status_code, resp.headers.get("content-type", "text/plain"), resp.content,
                             {k: v for k, v in resp.headers.items() if k.lower().startswith("x-")})

            def _answer(self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": ctype, "Content-Length": str(len(body)), **(extra or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="html-error-proxy").start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_proxys_html_error_page_reads_as_one_plain_line(page: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id = _running(server)
    proxy = HtmlErrorProxy(server.url)
    try:
        page.goto(f"{proxy.url}/#/resolutions/{root_id}")
        expect(_tid(page, "run-node")).to_have_count(2, timeout=WAIT_MS)  # through the proxy, polled

        proxy.failing = True
        line = ("the server (or a proxy before it) answered 502 Bad Gateway: "
                "502 Bad Gateway 502 Bad Gateway nginx/1.25.3")
        expect(_tid(page, "resolution-stale")).to_have_text(f"{line}; showing what was last seen, retrying",
                                                            timeout=WAIT_MS)
        expect(_tid(page, "run-node")).to_have_count(2)

        proxy.failing = False
        expect(_tid(page, "resolution-stale")).to_be_hidden(timeout=WAIT_MS)
        proxy.failing = True
        page.goto(f"{proxy.url}/#/resolutions/{'cd' * 16}")  # nothing seen yet: the problem page says it
        problem = _tid(page, "resolution-missing")
        expect(problem).to_contain_text(line, timeout=WAIT_MS)
        assert "<html>" not in page.locator("body").inner_text()
        assert "<center>" not in page.locator("body").inner_text()
    finally:
        proxy.close()


def test_a_refused_cancel_says_why_and_shows_the_state_it_ended_in(page: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id = _running(server)
    page.goto(f"{server.url}/#/resolutions/{root_id}")
    _live(page)
    expect(_tid(page, "resolution-state")).to_have_text("running", timeout=WAIT_MS)
    _sql(server, "UPDATE resolutions SET state = 'resolved', ended_at = CURRENT_TIMESTAMP WHERE id = ?", root_id)

    _tid(page, "resolution-actions").click()
    _tid(page, "action-cancel").click()  # the server answers 409
    expect(_tid(page, "error-banner")).to_have_text(
        f"Cancel of {root_id[:8]} failed: resolution {root_id} is already resolved", timeout=WAIT_MS)
    expect(_tid(page, "resolution-state")).to_have_text("resolved", timeout=WAIT_MS)  # not left saying "running"
    expect(_tid(page, "action-cancel")).to_be_disabled()


def test_a_huge_run_error_is_folded_with_a_way_to_see_it_all(page: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id = record_resolution(server.url, "", kind="cloud", state="failed", image=IMAGE)
    message = "the shard's checksum did not match " + "0123456789abcdef " * 3000 + "\n" + "detail line\n" * 5000
    traceback = "".join(f'  File "pipes.py", line {i}, in step\n' for i in range(8000))  # within the server's cap
    run_id = _add_run(server, root_id, "step", state="failed",
                      error={"type": "ValueError", "message": message, "traceback": traceback})
    page.goto(f"{server.url}/#/runs/{run_id}")
    error = _tid(page, "run-error")
    expect(error).to_contain_text("ValueError: the shard's checksum did not match", timeout=WAIT_MS)

    assert error.bounding_box()["height"] < VIEWPORT["height"] / 2, "the error pushes the run's tabs off the page"
    expect(_tid(page, "tab-output")).to_be_in_viewport()
    whole = _tid(page, "run-error-message")
    expect(whole).to_contain_text(f"{message.count(chr(10)) + 1} lines")
    whole.locator("summary").click()
    shown = whole.locator("pre")
    expect(shown).to_be_visible()
    assert shown.text_content() == message, "the whole message is not there to read"
    assert shown.bounding_box()["height"] < VIEWPORT["height"] / 2  # it scrolls in its own box


def test_a_corrupt_run_record_shows_the_servers_words(page: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id = _running(server)
    _sql(server, "UPDATE runs SET notes = '{not json' WHERE root_id = ? AND id != root_id", root_id)
    page.goto(f"{server.url}/#/resolutions/{root_id}")
    problem = _tid(page, "resolution-missing")
    expect(problem).to_contain_text(f"Cannot load resolution {root_id}", timeout=WAIT_MS)
    expect(problem).to_contain_text("the metadata database holds a value that is not JSON ('{not json'")
    expect(problem).to_contain_text("SELECT id FROM runs WHERE NOT json_valid(notes)")  # how to find it
