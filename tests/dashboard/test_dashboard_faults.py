"""The dashboard on the days things go wrong, in headless Chromium against ``sematic-k8s server --local`` as a
process of its own: the server killed and started again under an open resolution page, a proxy answering its own
HTML 502 page (to every request, or to the Run panel's run alone for a moment: the run kept, greyed; a 403 said), a
live-events stream refused (429: the machine holds all the streams it may), a cancel refused because the resolution
ended behind the page's back, a run whose error is huge, a corrupt run record, answers that come back in another order
than they were asked, and requests superseded (aborted) while on their way."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import big_resolution as big
from browser_pages import VIEWPORT, new_page
from outages import ServerProcess, running
from sematic_k8s.storage.base import log_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from serving import record_resolution

WAIT_MS = 30_000
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32


def _write(server: ServerProcess, batch: Batch) -> None:
    """``batch`` written through the API, as a resolver writes: a live event of each state it sets."""
    store = HttpStore(server.url, None)
    try:
        store.write(batch)
    finally:
        store.close()


def _add_run(server: ServerProcess, root_id: str, func: str, **fields: Any) -> str:
    """Record a run of ``func`` under ``root_id`` through the API (as a resolver does); its id."""
    run_id = uuid.uuid4().hex
    batch = Batch()
    batch.add_run(RunRecord(id=run_id, root_id=root_id, parent_id=root_id, func_path=f"pipes:{func}",
                            func_name=func, created_at=utcnow(), **fields))
    _write(server, batch)
    return run_id


def _running_step(server: ServerProcess) -> tuple[str, str]:
    """A running cloud resolution with one running step; their ids."""
    root_id = record_resolution(server.url, "", kind="cloud", state="running", image=IMAGE)
    return root_id, _add_run(server, root_id, "step", state="running")


def _running(server: ServerProcess) -> str:
    """A running cloud resolution with one running step; its id."""
    return _running_step(server)[0]


def _sql(server: ServerProcess, statement: str, *args: Any) -> None:
    """Write the server's database directly: a writer whose changes the page hears nothing of."""
    with sqlite3.connect(server.home / "db.sqlite3") as db:
        assert db.execute(statement, args).rowcount == 1


def _tid(page: Any, testid: str) -> Any:
    return page.locator(f'[data-testid="{testid}"]')


def _live(page: Any) -> None:
    from playwright.sync_api import expect

    expect(_tid(page, "live-status")).to_have_attribute("data-mode", "live", timeout=WAIT_MS)


def _open_live(page: Any, url: str) -> None:
    """``url`` opened, once the page follows the server live."""
    page.goto(url)
    _live(page)


def test_a_server_restarted_under_a_resolution_page_is_said_and_followed_again(page: Any,
                                                                               server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id, step_id = _running_step(server)
    _open_live(page, f"{server.url}/#/resolutions/{root_id}")
    expect(_tid(page, "run-node")).to_have_count(2, timeout=WAIT_MS)
    page.locator(f'[data-testid="run-node"][data-run-id="{step_id}"]').click()
    expect(_tid(page, "run-func-name")).to_have_text("step", timeout=WAIT_MS)

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
    root_node = page.locator(f'[data-testid="run-node"][data-run-id="{root_id}"]')
    root_node.click(position={"x": 4, "y": 4})  # another run (its own box, not the step's inside), no server to ask
    expect(_tid(page, "run-loading")).to_have_text(f"Loading run {root_id}…")  # was: the run shown before, as if
    expect(_tid(page, "run-func-name")).to_have_count(0)  # it were the one clicked

    server.start()
    _live(page)  # back by itself, no reload
    expect(_tid(page, "resolution-state")).to_have_text("running", timeout=WAIT_MS)
    expect(_tid(page, "run-node")).to_have_count(2)  # nothing drawn twice
    expect(_tid(page, "resolution-missing")).to_have_count(0)
    expect(notice).to_be_hidden()
    expect(_tid(page, "resolution-view")).to_have_attribute("data-stale", "false")
    expect(_tid(page, "run-func-name")).to_have_text("pipeline", timeout=WAIT_MS)  # the run clicked, once it answers
    _add_run(server, root_id, "late", state="running")
    expect(_tid(page, "run-node")).to_have_count(3, timeout=WAIT_MS)  # live updates again
    expect(page.locator('[data-testid="run-node"][data-func="late"]')).to_have_count(1)


class HtmlErrorProxy:
    """An HTTP proxy on 127.0.0.1 before ``target``, as nginx would stand before the server: GETs are passed on,
    except the event stream (it does not pass streams) and, while :attr:`failing`, every request under
    :attr:`failing_under` (/api/v1/), which it answers with its own HTML page of status :attr:`failing_status` (502;
    the stream: 502 always, unless ``streams``: then passed on, as nginx does with its buffering off)."""

    @staticmethod
    def page(status: int) -> bytes:
        """nginx's own HTML error page of ``status``."""
        line = f"{status} {HTTPStatus(status).phrase}"
        return (f"<html><head><title>{line}</title></head><body><center><h1>{line}</h1></center>"
                "<hr><center>nginx/1.25.3</center></body></html>").encode()

    def __init__(self, target: str, streams: bool = False) -> None:
        self.failing = False
        self.failing_under = "/api/v1/"
        self.failing_status = 502
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "x-api-key")}
                if self.path.startswith("/api/v1/events"):
                    if streams:
                        self._stream(target + self.path, headers)
                    else:
                        self._answer(502, "text/html", proxy.page(502))
                    return
                if proxy.failing and self.path.startswith(proxy.failing_under):
                    self._answer(proxy.failing_status, "text/html", proxy.page(proxy.failing_status))
                    return
                resp = httpx.get(target + self.path, headers=headers, timeout=30)
                self._answer(resp.status_code, resp.headers.get("content-type", "text/plain"), resp.content,
                             {k: v for k, v in resp.headers.items() if k.lower().startswith("x-")})

            def _stream(self, url: str, headers: dict[str, str]) -> None:
                """The server's answer passed on as it comes, its end the connection's."""
                self.close_connection = True
                try:
                    with httpx.stream("GET", url, headers=headers, timeout=None) as resp:
                        self.send_response(resp.status_code)
                        self.send_header("Content-Type", resp.headers.get("content-type", "text/plain"))
                        self.send_header("Connection", "close")
                        self.end_headers()
                        for chunk in resp.iter_raw():
                            self.wfile.write(chunk)
                            self.wfile.flush()
                except (OSError, httpx.HTTPError):
                    pass  # the page went, or the server

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


def test_a_page_refused_a_stream_polls_and_asks_again_when_the_server_said(browser: Any, tmp_path: Any) -> None:
    """A page whose stream the server refuses (429: this machine holds the one stream it may) polls, so it still
    shows what is recorded, and asks for a stream again only after the refusal's Retry-After (30 s), not every 5 s;
    once a slot is free, it follows live again."""
    from playwright.sync_api import expect

    server = ServerProcess(tmp_path, args=("--max-streams-per-key", "1"))
    with running(server), new_page(browser, viewport=VIEWPORT) as page:
        holder = socket.create_connection(("127.0.0.1", server.port))
        holder.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b" 200 " in holder.recv(65536)
        asked: list[int] = []
        page.on("response", lambda r: asked.append(r.status) if r.url.endswith("/api/v1/events") else None)
        page.goto(server.url)
        expect(_tid(page, "live-status")).to_have_attribute("data-mode", "polling", timeout=WAIT_MS)
        root_id = record_resolution(server.url, "", kind="local", state="running")
        expect(page.locator(f'[data-testid="resolution-row"][data-id="{root_id}"]')).to_have_count(1, timeout=WAIT_MS)
        time.sleep(12)  # two of the old 5 s retries, each refused again
        holder.close()
        expect(_tid(page, "live-status")).to_have_attribute("data-mode", "live", timeout=60_000)
        assert asked == [429, 200], asked


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


def test_a_run_panel_that_could_not_load_its_run_shows_it_again_once_it_can(page: Any,
                                                                            server: ServerProcess) -> None:
    """The Run panel's run asked for while the proxy before the server answers 502 to it (the resolution's overview
    still answered): the panel keeps the run it drew, greyed, under one line saying it cannot load it (was: the run
    replaced by that line), as the resolution view does; a refusal that is no outage (403) replaces it with the
    error. Once the proxy passes its requests on, the run is shown again, though it did not change meanwhile (was:
    the load error kept, the run's answer taken as the one already drawn)."""
    from playwright.sync_api import expect

    root_id, step_id = _running_step(server)
    proxy = HtmlErrorProxy(server.url)
    try:
        page.goto(f"{proxy.url}/#/runs/{step_id}")
        expect(_tid(page, "run-func-name")).to_have_text("step", timeout=WAIT_MS)  # through the proxy, polled
        wrap, notice = _tid(page, "run-panel-wrap"), _tid(page, "run-stale")

        proxy.failing_under, proxy.failing = f"/api/v1/runs/{step_id}", True
        line = (f"Cannot load run {step_id}: the server (or a proxy before it) answered 502 Bad Gateway: "
                "502 Bad Gateway 502 Bad Gateway nginx/1.25.3; showing what was last seen, retrying")
        expect(notice).to_have_text(line, timeout=WAIT_MS)
        expect(wrap).to_have_attribute("data-stale", "true")
        expect(_tid(page, "run-func-name")).to_have_text("step")  # what was drawn stays, greyed
        expect(_tid(page, "run-load-error")).to_have_count(0)
        expect(_tid(page, "run-node")).to_have_count(2)  # the overview still answered

        proxy.failing = False
        expect(notice).to_be_hidden(timeout=WAIT_MS)
        expect(wrap).to_have_attribute("data-stale", "false")
        expect(_tid(page, "run-func-name")).to_have_text("step")

        proxy.failing_status, proxy.failing = 403, True  # not an outage: the panel says it in place of the run
        expect(_tid(page, "run-load-error")).to_contain_text(f"Cannot load run {step_id}: the server (or a proxy "
                                                             "before it) answered 403 Forbidden", timeout=WAIT_MS)
        expect(_tid(page, "run-func-name")).to_have_count(0)
        expect(wrap).to_have_attribute("data-stale", "false")

        proxy.failing_status = 502  # the error shown, the run not: nothing to keep, the error stays
        expect(_tid(page, "run-load-error")).to_contain_text("answered 502 Bad Gateway", timeout=WAIT_MS)
        expect(_tid(page, "run-func-name")).to_have_count(0)

        proxy.failing = False
        expect(_tid(page, "run-func-name")).to_have_text("step", timeout=WAIT_MS)
        expect(_tid(page, "run-load-error")).to_have_count(0)
        expect(notice).to_be_hidden()
        _tid(page, "tab-details").click()  # the panel drawn again works
        expect(_tid(page, "run-id")).to_have_text(step_id)
    finally:
        proxy.close()


def test_a_greyed_page_following_live_events_tries_again_by_itself(page: Any, server: ServerProcess) -> None:
    """A page following live events (the proxy passes the stream on) whose load of the Run panel's run, then of the
    resolution's overview, is answered 502 for a moment keeps what it drew, greyed, and shows it current again once
    the proxy passes the requests on, though no event comes meanwhile (was: greyed under "retrying" until the next
    event of the resolution: forever for one that ended, nothing asked again while the stream was live); a resolution
    page opened while the overview fails, or a run's page while its run cannot be looked up, says so and that it
    retries, then shows the resolution (the run) once it answers (was: the problem kept)."""
    from playwright.sync_api import expect

    root_id, step_id = _running_step(server)
    proxy = HtmlErrorProxy(server.url, streams=True)
    try:
        _open_live(page, f"{proxy.url}/#/runs/{step_id}")
        expect(_tid(page, "run-func-name")).to_have_text("step", timeout=WAIT_MS)
        for testid, path in (("run-stale", f"/api/v1/runs/{step_id}"), ("resolution-stale", "/api/v1/resolutions/")):
            notice = _tid(page, testid)
            proxy.failing_under, proxy.failing = path, True
            _add_run(server, root_id, "other", state="created")  # an event: the page loads the resolution and run
            expect(notice).to_contain_text("answered 502 Bad Gateway", timeout=WAIT_MS)
            proxy.failing = False  # no event from here on
            expect(notice).to_be_hidden(timeout=WAIT_MS)
            expect(_tid(page, "run-func-name")).to_have_text("step")
        proxy.failing = True  # a page opened meanwhile: nothing seen yet, the problem said
        page.goto("about:blank")
        _open_live(page, f"{proxy.url}/#/resolutions/{root_id}")
        expect(_tid(page, "resolution-missing")).to_contain_text("answered 502 Bad Gateway", timeout=WAIT_MS)
        proxy.failing = False
        expect(_tid(page, "resolution-id")).to_have_text(root_id, timeout=WAIT_MS)
        expect(_tid(page, "resolution-missing")).to_have_count(0)
        expect(_tid(page, "live-status")).to_have_attribute("data-mode", "live")  # live all along: no polling
        proxy.failing_under, proxy.failing = f"/api/v1/runs/{step_id}", True  # a run's page: its lookup fails
        page.goto("about:blank")
        _open_live(page, f"{proxy.url}/#/runs/{step_id}")
        expect(_tid(page, "load-error")).to_contain_text("answered 502 Bad Gateway: 502 Bad Gateway 502 Bad Gateway "
                                                         "nginx/1.25.3; retrying every 2 s", timeout=WAIT_MS)
        proxy.failing = False
        expect(_tid(page, "run-func-name")).to_have_text("step", timeout=WAIT_MS)
        expect(_tid(page, "load-error")).to_have_count(0)
        expect(_tid(page, "live-status")).to_have_attribute("data-mode", "live")
    finally:
        proxy.close()


def test_a_refused_cancel_says_why_and_shows_the_state_it_ended_in(page: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    root_id = _running(server)
    _open_live(page, f"{server.url}/#/resolutions/{root_id}")
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


# -- answers that come back out of order -------------------------------------------------------------------------

# Run in the page before its own scripts: the /api/v1 requests it makes, and those whose answer it has read (or that
# failed), by URL. The code that asked goes on from the read in the same task, so once a request counts as read here,
# what the page does with its answer is done.
TRACK_REQUESTS_JS = """(() => {
  const asked = [];
  const read = [];
  window.__requests = { asked, read };
  const realFetch = window.fetch;
  window.fetch = function (resource, init) {
    const url = new URL(typeof resource === "string" ? resource : resource.url, location.href).href;
    asked.push(url);
    return realFetch.call(this, resource, init).catch((e) => { read.push(url); throw e; });
  };
  for (const name of ["json", "text", "blob"]) {
    const body = Response.prototype[name];
    Response.prototype[name] = function () {
      const url = this.url;
      return body.call(this).then((v) => { read.push(url); return v; }, (e) => { read.push(url); throw e; });
    };
  }
})();"""


def _on_their_way(page: Any, pattern: str, n: int) -> None:
    """Wait until exactly ``n`` of the page's requests to URLs matching ``pattern`` (a JS regex) are on their way:
    asked, their answer not read yet."""
    page.wait_for_function("""([pattern, n]) => {
      const re = new RegExp(pattern);
      const { asked, read } = window.__requests;
      return asked.filter((u) => re.test(u)).length - read.filter((u) => re.test(u)).length === n;
    }""", arg=[pattern, n], timeout=WAIT_MS)


class HeldAnswers:
    """The server's first ``count`` answers to the page's requests whose URL ``wanted`` accepts (and, given ``keep``,
    that it keeps; the others are passed on), held on their way back (the server answered each as it was asked; the
    page has not got it yet) until :meth:`release`."""

    def __init__(self, page: Any, wanted: Callable[[str], bool], count: int = 1,
                 keep: Callable[[Any], bool] = lambda answer: True) -> None:
        self.page, self.left = page, count
        self.held: list[tuple[Any, Any]] = []

        def hold(route: Any) -> None:
            if self.left == 0:
                route.continue_()
                return
            answer = route.fetch()
            if not keep(answer):
                route.fulfill(response=answer)
                return
            self.left -= 1
            self.held.append((route, answer))

        page.route(wanted, hold)

    def wait(self, n: int = 1) -> None:
        """Until ``n`` answers are held (Playwright runs the route handler while the page is waited on)."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(self.held) < n:
            assert time.monotonic() < deadline, f"the page did not make the request to hold ({len(self.held)} of {n})"
            self.page.wait_for_timeout(50)

    def release(self, *, fail: bool = False) -> None:
        """Give the page the oldest held answer, or instead (``fail``) a connection reset."""
        self.wait()
        route, answer = self.held.pop(0)
        if fail:
            route.abort("connectionreset")
        else:
            route.fulfill(response=answer)


class Withheld:
    """The page's requests whose URL ``wanted`` accepts, never answered (the server is not asked): they stay on their
    way until the page aborts them. ``aborted``: the URLs of the page's requests (any) that it aborted, in order."""

    def __init__(self, page: Any, wanted: Callable[[str], bool]) -> None:
        self.page = page
        self.asked: list[str] = []
        self.aborted: list[str] = []
        page.on("requestfailed", lambda r: self.aborted.append(r.url) if r.failure == "net::ERR_ABORTED" else None)
        page.route(wanted, lambda route: self.asked.append(route.request.url))

    def wait(self, part: str) -> str:
        """Until a request whose URL holds ``part`` is withheld (Playwright runs the route handler while the page is
        waited on); its URL."""
        self._until(lambda: any(part in url for url in self.asked), f"the page did not ask for {part}")
        return next(url for url in self.asked if part in url)

    def wait_aborted(self, url: str) -> None:
        """Until the page has aborted its request to ``url``."""
        self._until(lambda: url in self.aborted, f"the page did not abort its request to {url}")

    def _until(self, done: Callable[[], bool], problem: str) -> None:
        deadline = time.monotonic() + WAIT_MS / 1000
        while not done():
            assert time.monotonic() < deadline, f"{problem}; aborted: {self.aborted}"
            self.page.wait_for_timeout(50)


# Run in the page before its own scripts: the text of every error the page shows, even for a moment (an error line
# or box, a problem page, the banner, the stale notice), as it is shown.
ERRORS_SEEN_JS = """(() => {
  const seen = new Set();
  window.__errorsSeen = seen;
  const shown = '.error, .error-box, .problem, [data-testid="error-banner"]:not([hidden]), ' +
    '[data-testid="resolution-stale"]:not([hidden])';
  const look = () => document.querySelectorAll(shown).forEach((el) => seen.add(el.textContent));
  document.addEventListener("DOMContentLoaded", () => {
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true,
                                                        characterData: true });
  });
})();"""


def _no_error_shown(page: Any) -> None:
    """The page has shown no error since it loaded (with ERRORS_SEEN_JS), not even for a moment."""
    assert page.evaluate("[...window.__errorsSeen]") == []


def test_a_filter_changed_or_typed_on_aborts_the_query_it_supersedes(page: Any, server: ServerProcess) -> None:
    """State "failed", its query never answered, then "canceled": the "failed" query is aborted and "canceled"'s
    answer shown, no error said; the same for a search typed on ("st", then "step")."""
    from playwright.sync_api import expect

    record_resolution(server.url, "", kind="local", state="failed", func_path="pipes:step")
    page.add_init_script(TRACK_REQUESTS_JS)
    page.add_init_script(ERRORS_SEEN_JS)
    _open_live(page, f"{server.url}/#/")
    rows = _tid(page, "resolution-row")
    expect(rows).to_have_count(1, timeout=WAIT_MS)
    none = _tid(page, "no-resolutions")
    pipelines = r"/api/v1/pipelines\?"
    superseded = re.compile(r"/api/v1/pipelines\?.*[?&](state=failed|q=st)(&|$)")
    held = Withheld(page, lambda url: bool(superseded.search(url)))

    _tid(page, "state-filter").select_option("failed")
    failed = held.wait("state=failed")
    _tid(page, "state-filter").select_option("canceled")
    held.wait_aborted(failed)
    expect(none).to_have_text("No resolution matches these filters.", timeout=WAIT_MS)
    _on_their_way(page, pipelines, 0)
    expect(rows).to_have_count(0)
    _no_error_shown(page)

    _tid(page, "state-filter").select_option("")
    expect(rows).to_have_count(1, timeout=WAIT_MS)
    _tid(page, "search").fill("st")
    typed = held.wait("q=st")
    _tid(page, "search").fill("step")
    held.wait_aborted(typed)
    _on_their_way(page, pipelines, 0)
    expect(page.locator('[data-testid="pipeline-group"][data-func="pipes:step"]')).to_have_count(1, timeout=WAIT_MS)
    expect(_tid(page, "search")).to_have_value("step")
    _no_error_shown(page)


def test_a_groups_page_turned_then_hidden_aborts_the_turned_pages_request(page: Any, server: ServerProcess) -> None:
    """A group's next page asked, then the group hidden before that page came: the page's request is aborted and the
    group stays hidden, nothing said of the abort; a connection reset to an older request for the same pages, after
    the newer one's answer was shown, is dropped."""
    from playwright.sync_api import expect

    store = HttpStore(server.url, None)
    try:
        root_id = big.record_fanout(store, 120, func_module="fan")
    finally:
        store.close()
    page.add_init_script(TRACK_REQUESTS_JS)
    page.add_init_script(ERRORS_SEEN_JS)
    _open_live(page, f"{server.url}/#/resolutions/{root_id}")
    group = _tid(page, "group-node")
    adds = page.locator('[data-testid="run-node"][data-func="add"]')
    expect(group).to_have_count(1, timeout=WAIT_MS)
    _tid(page, "group-expand").click()
    expect(_tid(page, "group-page")).to_have_text("runs 1–50 of 120 shown", timeout=WAIT_MS)
    expect(adds).to_have_count(50)
    overview = r"/overview\?"

    second_page = Withheld(page, lambda url: "/overview?" in url and "%4050" in url)  # expand=<group>@50
    _tid(page, "group-next").click()
    turned = second_page.wait("%4050")
    _tid(page, "group-hide").click()  # before the next page came
    second_page.wait_aborted(turned)
    expect(adds).to_have_count(0, timeout=WAIT_MS)
    _on_their_way(page, overview, 0)
    expect(_tid(page, "group-page")).to_have_count(0)
    expect(_tid(page, "group-expand")).to_be_visible()
    _no_error_shown(page)
    expect(_tid(page, "resolution-view")).to_have_attribute("data-stale", "false")

    first_page = HeldAnswers(page, lambda url: "/overview?" in url and url.endswith("%400"))  # expand=<group>@0
    _tid(page, "group-expand").click()  # asked, and its answer lost on the way (a connection reset, given later)
    first_page.wait()
    _tid(page, "group-expand").click()  # asked again: answered
    expect(adds).to_have_count(50, timeout=WAIT_MS)
    _on_their_way(page, overview, 1)
    first_page.release(fail=True)
    _on_their_way(page, overview, 0)
    expect(_tid(page, "resolution-stale")).to_be_hidden()
    expect(_tid(page, "resolution-view")).to_have_attribute("data-stale", "false")
    expect(adds).to_have_count(50)


def test_a_value_replaced_while_its_whole_is_on_its_way_is_not_drawn_back(page: Any, server: ServerProcess) -> None:
    """The Run panel's output, a JSON list cut short in its summary, is fetched whole; while that answer is held on
    its way, the run records another output, shown at once; the first's whole value, come back then, is dropped
    (the panel draws each value in place: it would set the output back to the value replaced)."""
    from playwright.sync_api import expect

    from sematic_k8s import serialization
    from sematic_k8s.storage.base import put_artifact

    root_id, step_id = _running_step(server)
    storage = LocalStorage(server.home / "storage")
    batch = Batch()
    values = [serialization.serialize(v) for v in (list(range(3000)), "the second output")]
    for v in values:
        batch.artifacts[v.id] = {**put_artifact(storage, v), "created_at": utcnow()}
    batch.update_run(step_id, output_id=values[0].id)
    _write(server, batch)
    page.add_init_script(TRACK_REQUESTS_JS)
    data = f"/artifacts/{values[0].id}/data"
    whole = HeldAnswers(page, lambda url: data in url)
    _open_live(page, f"{server.url}/#/runs/{step_id}")
    whole.wait()
    out = _tid(page, "run-output")
    expect(out).to_contain_text("2980 more")  # its summary, until the whole comes
    batch = Batch()
    batch.update_run(step_id, output_id=values[1].id, state="running")  # a live event
    _write(server, batch)
    expect(out).to_contain_text("the second output", timeout=WAIT_MS)
    whole.release()
    _on_their_way(page, data, 0)  # the first's whole value read by the page
    page.wait_for_timeout(500)  # and parsed: drawn, were it not dropped
    expect(out).to_contain_text("the second output")
    expect(out).not_to_contain_text("2999")


def _end_run(server: ServerProcess, run_id: str) -> None:
    """Record through the API that run ``run_id`` resolved (as its resolver does)."""
    batch = Batch()
    batch.update_run(run_id, state="resolved", ended_at=utcnow())
    _write(server, batch)


def test_a_runs_older_record_come_late_does_not_set_its_panel_back(page: Any, server: ServerProcess) -> None:
    """The Run panel asks for its run's record, then the run ends and the panel asks again: the newer record
    ("resolved") shown first, the older ("running") coming after it is dropped."""
    from playwright.sync_api import expect

    root_id, step_id = _running_step(server)
    page.add_init_script(TRACK_REQUESTS_JS)
    _open_live(page, f"{server.url}/#/runs/{step_id}")
    state = _tid(page, "run-state")
    expect(state).to_have_text("running", timeout=WAIT_MS)
    run_url = f"/api/v1/runs/{step_id}"

    older = HeldAnswers(page, lambda url: url.endswith(run_url))
    _add_run(server, root_id, "late", state="running")  # an event: the page redraws, asking for the run again
    older.wait()  # the server's answer: "running"
    _end_run(server, step_id)
    expect(state).to_have_text("resolved", timeout=WAIT_MS)
    _on_their_way(page, f"{run_url}$", 1)
    older.release()
    _on_their_way(page, f"{run_url}$", 0)
    expect(state).to_have_text("resolved")
    expect(_tid(page, "run-panel")).to_have_attribute("data-state", "resolved")


def test_a_runs_log_followed_as_it_ends_shows_each_line_once(page: Any, server: ServerProcess) -> None:
    """A part of the log on its way when the run's record changes: the log is not asked for a second time from the
    same offset meanwhile (two answers would show the same lines twice)."""
    from playwright.sync_api import expect

    _, step_id = _running_step(server)
    _log_followed(page, server, step_id, "step 1\n")
    logs = _tid(page, "run-logs")
    storage = LocalStorage(server.home / "storage")
    log_requests = f"/runs/{step_id}/logs\\?"

    part = HeldAnswers(page, lambda url: f"/runs/{step_id}/logs?" in url, keep=lambda a: a.body() == b"step 2\n")
    storage.append(log_key(step_id), b"step 2\n")
    part.wait()  # the part holding "step 2", held
    _end_run(server, step_id)
    expect(_tid(page, "run-state")).to_have_text("resolved", timeout=WAIT_MS)
    _on_their_way(page, log_requests, 1)  # the held part only: no second request from the same offset
    part.release()
    _on_their_way(page, log_requests, 0)
    expect(logs).to_have_text("step 1\nstep 2\n")
    expect(_tid(page, "logs-follow")).to_have_text("", timeout=WAIT_MS)  # ended: its last bytes read, no more
    expect(logs).to_have_text("step 1\nstep 2\n")


def _log_followed(page: Any, server: ServerProcess, run_id: str, line: str, *, through: str = "",
                  clock: bool = False) -> None:
    """Run ``run_id``'s page opened (its requests and the errors it shows tracked; through the proxy at ``through``
    when given; its timers on Playwright's clock with ``clock``), its log holding ``line`` followed."""
    from playwright.sync_api import expect

    LocalStorage(server.home / "storage").append(log_key(run_id), line.encode())
    if clock:
        page.clock.install()
    page.add_init_script(TRACK_REQUESTS_JS)
    page.add_init_script(ERRORS_SEEN_JS)
    _open_live(page, f"{through or server.url}/#/runs/{run_id}")
    _tid(page, "tab-logs").click()
    expect(_tid(page, "run-logs")).to_have_text(line, timeout=WAIT_MS)


def _log_asked_no_more(page: Any, run_id: str, what: str) -> None:
    """No request for run ``run_id``'s log on its way, and none asked while the page's timers run ahead a second,
    then ten (Playwright's clock; a follower left behind asks every second, every 5 s after an error)."""
    log_requests = f"/runs/{run_id}/logs\\?"
    _on_their_way(page, log_requests, 0)
    count = "(re) => window.__requests.asked.filter((u) => new RegExp(re).test(u)).length"
    asked = page.evaluate(count, log_requests)
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    page.clock.run_for(10_000)
    assert page.evaluate(count, log_requests) == asked, what


# Run in the page before its own scripts: how many times the HTML of an element holding a run's log (the Logs pane,
# the log's view, the log itself, the Run panel...) is read, in window.__logReads.
LOG_READS_JS = """(() => {
  window.__logReads = 0;
  const outer = Object.getOwnPropertyDescriptor(Element.prototype, "outerHTML");
  const log = '[data-testid="run-logs"]';
  Object.defineProperty(Element.prototype, "outerHTML", { ...outer, get() {
    if (this.matches(log) || this.querySelector(log)) window.__logReads += 1;
    return outer.get.call(this);
  } });
})();"""


def test_a_run_panel_redrawn_under_a_big_log_reads_none_of_it(page: Any, server: ServerProcess) -> None:
    """A running run whose log holds 3 MB (the page holds its last megabyte), its Logs tab open, its record changed by
    ten live events (its attempts), each redrawing the Run panel: the Logs pane and its log stay the same elements,
    and their HTML is never read (was: read whole twice per redraw, a megabyte each time, to be compared with what was
    drawn: dom.fillKeepingDrawn now keeps a part already in place as it is)."""
    from playwright.sync_api import expect

    _, step_id = _running_step(server)
    LocalStorage(server.home / "storage").append(log_key(step_id), (("x" * 99 + "\n") * 30_000).encode())
    page.add_init_script(LOG_READS_JS)
    _open_live(page, f"{server.url}/#/runs/{step_id}")
    _tid(page, "tab-logs").click()
    expect(_tid(page, "logs-skipped")).to_contain_text("of earlier output not shown here", timeout=WAIT_MS)
    page.evaluate("""() => {
      window.__pane = document.querySelector('[data-testid="tabpane-logs"]');
      window.__log = document.querySelector('[data-testid="run-logs"]');
      window.__logReads = 0;
    }""")
    assert page.evaluate("window.__log.textContent.length") > 900_000

    for attempts in range(1, 11):
        batch = Batch()
        batch.update_run(step_id, attempts=attempts, state="running")  # a state set: a live event
        _write(server, batch)
        expect(_tid(page, "run-attempts")).to_have_text(str(attempts), timeout=WAIT_MS)  # the panel redrawn
    assert page.evaluate("""() => document.querySelector('[data-testid="tabpane-logs"]') === window.__pane
      && document.querySelector('[data-testid="run-logs"]') === window.__log""")
    assert page.evaluate("window.__logReads") == 0
    expect(_tid(page, "logs-follow")).to_have_text("following…")


def test_runs_clicked_through_abort_the_requests_of_the_run_left(page: Any, server: ServerProcess) -> None:
    """Run a's log followed, its next part never answered; run b clicked, its record never answered; run c clicked:
    a's log part and b's record are aborted as each run is left, c is shown, and nothing is said of the aborts."""
    from playwright.sync_api import expect

    root_id, a_id = _running_step(server)
    b_id = _add_run(server, root_id, "b", state="running")
    c_id = _add_run(server, root_id, "c", state="resolved")
    _log_followed(page, server, a_id, "a 1\n")
    held = Withheld(page, lambda url: f"/runs/{a_id}/logs?" in url or url.endswith(f"/api/v1/runs/{b_id}"))
    node = '[data-testid="run-node"][data-run-id="{}"]'.format

    a_log = held.wait(f"/runs/{a_id}/logs?")  # the follower's next ask
    page.locator(node(b_id)).click()
    held.wait_aborted(a_log)
    b_record = held.wait(f"/runs/{b_id}")
    expect(_tid(page, "run-loading")).to_be_visible()
    page.locator(node(c_id)).click()
    held.wait_aborted(b_record)
    expect(_tid(page, "run-func-name")).to_have_text("c", timeout=WAIT_MS)
    expect(_tid(page, "run-panel")).to_have_attribute("data-run-id", c_id)
    _on_their_way(page, "/api/v1/runs/", 0)
    _no_error_shown(page)


def test_a_resolution_page_left_aborts_its_requests_on_their_way(page: Any, server: ServerProcess) -> None:
    """A run's page with its log followed, a refresh of the graph and the log's next part on their way (never
    answered): the pipelines index opened, both are aborted. Then a run's page asked for from the index (the run looked
    up, never answered), and the index again: the lookup is aborted. Nothing is said of the aborts."""
    from playwright.sync_api import expect

    root_id, step_id = _running_step(server)
    _log_followed(page, server, step_id, "step 1\n")
    held = Withheld(page, lambda url: f"/resolutions/{root_id}/overview?" in url or f"/runs/{step_id}/logs?" in url)
    log_part = held.wait("/logs?")
    _add_run(server, root_id, "late", state="running")  # an event: the page refreshes its graph
    refresh = held.wait("/overview?")

    _tid(page, "nav-resolutions").click()
    held.wait_aborted(log_part)
    held.wait_aborted(refresh)
    expect(_tid(page, "resolution-row")).to_have_count(1, timeout=WAIT_MS)
    _on_their_way(page, r"/overview\?|/logs\?", 0)
    _no_error_shown(page)

    lookup = Withheld(page, lambda url: url.endswith(f"/api/v1/runs/{step_id}"))
    page.evaluate("(id) => { location.hash = `#/runs/${id}`; }", step_id)  # not in the index: looked up
    looked_up = lookup.wait(f"/runs/{step_id}")
    _tid(page, "nav-resolutions").click()
    lookup.wait_aborted(looked_up)
    _on_their_way(page, "/api/v1/runs/", 0)
    expect(_tid(page, "resolution-row")).to_have_count(1)
    _no_error_shown(page)


def test_a_run_page_left_stops_following_its_log(page: Any, server: ServerProcess) -> None:
    """A running run's log followed, then the pipelines index opened: the log is asked for no more (the page's
    timers run ahead ten seconds on Playwright's clock)."""
    from playwright.sync_api import expect

    _, step_id = _running_step(server)
    _log_followed(page, server, step_id, "step 1\n", clock=True)
    expect(_tid(page, "logs-follow")).to_have_text("following…")

    _tid(page, "nav-resolutions").click()  # the app goes on: no page load
    expect(_tid(page, "resolution-row")).to_have_count(1, timeout=WAIT_MS)
    _log_asked_no_more(page, step_id, "the log of a run no longer shown is still asked for")


def test_a_run_panel_replaced_by_its_load_error_stops_following_its_log(page: Any, server: ServerProcess) -> None:
    """A running run's log followed, then its record refused by the proxy before the server (403: no outage) as a
    live event has the panel load it again: the panel says the error in the run's place, and the run's log is asked
    for no more (the page's timers run ahead ten seconds on Playwright's clock; was: still followed, every 5 s while
    its parts were refused too, every second once they were not)."""
    from playwright.sync_api import expect

    root_id, step_id = _running_step(server)
    proxy = HtmlErrorProxy(server.url, streams=True)
    try:
        _log_followed(page, server, step_id, "step 1\n", through=proxy.url, clock=True)
        expect(_tid(page, "logs-follow")).to_have_text("following…")

        proxy.failing_status, proxy.failing_under, proxy.failing = 403, f"/api/v1/runs/{step_id}", True
        _add_run(server, root_id, "other", state="created")  # an event: the panel loads its run again
        expect(_tid(page, "run-load-error")).to_contain_text("answered 403 Forbidden", timeout=WAIT_MS)
        expect(_tid(page, "run-logs")).to_have_count(0)
        _log_asked_no_more(page, step_id, "the log of a run replaced by its load error is followed")
        expect(_tid(page, "run-load-error")).to_be_visible()
    finally:
        proxy.close()


def test_more_root_funcs_than_the_index_names_are_said_in_the_func_filter(server: ServerProcess, page: Any) -> None:
    """The server names the first 1,000 root funcs for the func filter (and how many there are): the filter says
    how many more there are and how to reach one, rather than silently offering a part of them."""
    from playwright.sync_api import expect

    batch = Batch()
    for i in range(1003):
        batch.add_resolution(ResolutionRecord(id=uuid.uuid4().hex, root_func_path=f"pipes:p{i:04d}", state="resolved",
                                              settings={"kind": "local"}, created_at=utcnow()))
    store = HttpStore(server.url, None)
    try:
        store.write(batch)
    finally:
        store.close()
    page.goto(server.url + "/")
    options = page.get_by_test_id("func-filter").locator("option")
    expect(options).to_have_count(1 + 1000 + 1, timeout=WAIT_MS)  # all funcs, the first 1,000, what is left
    last = options.last
    expect(last).to_have_text("\u2026 and 3 more: search for one by name")
    expect(last).to_be_disabled()
    page.get_by_test_id("search").fill("p1002")  # the search reaches one past the first 1,000
    expect(page.get_by_test_id("pipeline-group")).to_have_count(1, timeout=WAIT_MS)
