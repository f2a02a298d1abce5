"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against the real server.

The server runs in this process (uvicorn on a free 127.0.0.1 port, API keys required) over a temp SQLite
database; pipelines are recorded through it with ``LocalResolver(server=...)``, so the page gets live
events. The browser logs in with an API key, walks the resolutions list, a resolution's graph and a Run
panel, then clicks Actions -> "Rerun from here", "Continue" and "Rerun": the server never runs a local
resolution's code, so the page shows the command to run on the user's machine; the test runs it (a
LocalResolver recording through the server, in a thread) and the page follows the new resolution live.
The graph's boxes are checked to hold their content without overlapping. A second test, without a browser,
checks the page's ES modules are served as JavaScript. (The graph layout itself is tested in Node:
``test_dashboard_js.py``.)

Needs ``chromium`` (apt-get install chromium) and ``playwright`` (pip install playwright; never
``playwright install``). Without them the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import mimetypes
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import sematic_k8s as sk
from sematic_k8s import settings
from sematic_k8s.settings import API_KEY_ENV, SERVER_ENV
from sematic_k8s.storage.local import LocalStorage
from serving import serve

try:  # tests/ is a plain directory (pytest puts it on sys.path) or, later, a package
    import dashboard_pipeline as pl
except ImportError:  # pragma: no cover
    from tests import dashboard_pipeline as pl

CHROMIUM = os.environ.get("SEMATIC_K8S_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(os.environ.get("SEMATIC_K8S_DASHBOARD_SCREENSHOT", "/tmp/dashboard.png"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WAIT_MS = 90_000


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


@dataclass
class Served:
    url: str
    key: str
    home: Path
    flag: Path
    hold: Path  # while it exists, the pipeline's `check` step waits
    store: Any  # the server's SqlStore
    ok_id: str  # a resolved resolution of dashboard_pipeline.pipeline
    cached_id: str  # the same pipeline again: `total` came from the cache
    failed_id: str  # one whose `check` step failed (the flag file was set)


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
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    import uvicorn

    from sematic_k8s_server import auth, create_app
    from sematic_k8s_server.db import open_store

    for var in (SERVER_ENV, API_KEY_ENV, settings.DB_URL_ENV, settings.HOME_ENV):
        monkeypatch.delenv(var, raising=False)
    home = settings.home(tmp_path / "home")
    store = open_store(settings.db_url(home))
    key = auth.create_key(store.engine, "dashboard-test")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(store, LocalStorage(home / "storage"), api_keys_required=True, self_url=url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="dashboard-server")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        resolver = sk.LocalResolver(home=home, server=url, api_key=key, cache_namespace="dashboard")
        flag = tmp_path / "fail.flag"
        ok = pl.pipeline(4, str(flag))
        assert ok.resolve(resolver) == 100
        cached = pl.pipeline(4, str(flag))  # the same again: `total` (cache=True) is a cache hit
        assert cached.resolve(resolver) == 100
        _pretend_it_ran_in_a_pod(store, cached.id)
        flag.touch()
        with pytest.raises(sk.ResolutionFailed) as failed:
            pl.pipeline(3, str(flag)).resolve(resolver)
        flag.unlink()  # "fixed": reruns pass, and the failed resolution can continue
        hold = Path(f"{flag}.hold")
        yield Served(url, key, home, flag, hold, store, ok.id, cached.id, failed.value.resolution_id)
    finally:
        Path(f"{tmp_path / 'fail.flag'}.hold").unlink(missing_ok=True)  # let any rerun process finish
        server.should_exit = True
        thread.join(15)
        sock.close()
        store.close()


POD = "sk-scale-7f3c2"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32


def _pretend_it_ran_in_a_pod(store: Any, root_id: str) -> None:
    """LocalResolver runs in-process: give one run the executor notes a Kubernetes run records, and mark the
    cache hit as one whose func source changed since, to check the panel shows both."""
    from sematic_k8s.store.records import Batch

    runs = _runs_by_func(store, root_id)
    assert runs["total"].cached_from, "expected a cache hit on `total`"
    batch = Batch()
    batch.update_run(runs["scale"].id, notes={"executor": {"executor": "kubernetes", "namespace": "ml",
                                                           "job": f"{POD}-job", "pod": POD, "image": IMAGE}})
    notes = runs["total"].notes
    batch.update_run(runs["total"].id, notes={**notes, "cache": {**notes["cache"], "source_changed": True}})
    store.write(batch)


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh browser page; closed before the server stops (its event stream holds a connection)."""
    context = browser.new_context(viewport={"width": 1440, "height": 960})
    try:
        yield context.new_page()
    finally:
        context.close()


def _expect_resolved(page: Any, served: Served, resolution_id: str) -> None:
    """The resolution shown reaches "resolved"; if not, say why (its record)."""
    from playwright.sync_api import expect

    badge = page.get_by_test_id("resolution-state")
    try:
        expect(badge).to_have_text(re.compile(r"^(resolved|failed|canceled)$"), timeout=WAIT_MS)
        expect(badge).to_have_text("resolved", timeout=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\nresolution {resolution_id}: {served.store.get_resolution(resolution_id)}") from None


def _rerun_as_told(page: Any, served: Served, rerun_from: str, mode: str = "from") -> tuple[str, threading.Thread]:
    """After a rerun action on a local resolution: the page shows the command to run on the user's machine and
    stays where it was. Do what it says (a LocalResolver recording through the server, in a thread), show the
    new resolution, and return its id and the thread."""
    from playwright.sync_api import expect

    shown_before = page.url
    command = f"sematic-k8s rerun {rerun_from}" + (" --mode continue" if mode == "continue" else "")
    expect(page.get_by_test_id("error-banner")).to_contain_text(command)
    assert page.url == shown_before
    new_id = uuid.uuid4().hex

    def run() -> None:
        resolver = sk.LocalResolver(home=served.home, server=served.url, api_key=served.key, rerun_from=rerun_from,
                                    rerun_mode=mode, root_id=new_id, max_parallelism=2, cache_namespace="dashboard")
        try:
            pl.pipeline(0, str(served.flag)).resolve(resolver)  # a rerun takes the recorded arguments
        except sk.ResolutionFailed:
            pass  # canceled on purpose below; the page shows the rest

    thread = threading.Thread(target=run, daemon=True, name=f"rerun-{new_id[:8]}")
    thread.start()
    page.goto(f"{served.url}/#/resolutions/{new_id}")
    return new_id, thread


# In the page: every run box holds its own content and its nested boxes, and no two boxes overlap unless one
# is nested in the other. Returns what is wrong, as text.
GRAPH_PROBLEMS_JS = """() => {
  const boxes = [...document.querySelectorAll('[data-testid="run-node"]')];
  const rect = (el) => el.getBoundingClientRect();
  const inside = (a, b) => a.left >= b.left - 0.5 && a.top >= b.top - 0.5 && a.right <= b.right + 0.5
    && a.bottom <= b.bottom + 0.5;
  const apart = (a, b) => a.right <= b.left + 0.5 || b.right <= a.left + 0.5 || a.bottom <= b.top + 0.5
    || b.bottom <= a.top + 0.5;
  const name = (el) => el.dataset.func;
  const problems = [];
  for (const box of boxes) {
    const body = box.querySelector(':scope > .run-body');
    if (!inside(rect(body), rect(box)) || body.scrollWidth > body.clientWidth) {
      problems.push(`${name(box)}: its content overflows`);
    }
    for (const other of boxes) {
      if (other === box) continue;
      if (box.contains(other)) {
        if (!inside(rect(other), rect(box))) problems.push(`${name(other)} sticks out of ${name(box)}`);
        if (!apart(rect(other), rect(body))) problems.push(`${name(other)} covers ${name(box)}'s head`);
      } else if (!other.contains(box) && !apart(rect(box), rect(other)) && name(box) < name(other)) {
        problems.push(`${name(box)} overlaps ${name(other)}`);
      }
    }
  }
  return problems;
}"""


def _runs_by_func(store: Any, root_id: str) -> dict[str, Any]:
    return {r.func_name: r for r in store.runs_of_root(root_id)}


def test_dashboard_in_chromium(page: Any, served: Served) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    outside: list[str] = []  # the page must fetch nothing but its own server

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith(served.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_loopback)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # HTTP errors show up as console errors too: 401 (before the key) and 404 (a rerun's resolution not yet
    # recorded) are expected; a 5xx is not
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status} from {r.url}") if r.status >= 500 else None)
    tid = lambda name: page.get_by_test_id(name)  # noqa: E731
    node = lambda func: page.locator(f'[data-testid="run-node"][data-func="{func}"]')  # noqa: E731

    # -- no key yet: every API call gets 401 and the page asks for one ------------------------------
    page.goto(served.url + "/")
    expect(tid("api-key-form")).to_be_visible()
    expect(tid("api-key-message")).to_contain_text("API key")
    tid("api-key-input").fill(served.key)
    tid("api-key-save").click()
    expect(tid("api-key-form")).to_be_hidden()
    expect(tid("live-status")).to_have_attribute("data-mode", "live")  # the SSE stream is open

    # -- the resolutions list ---------------------------------------------------------------------
    rows = page.locator('[data-testid="resolution-row"]')
    expect(rows).to_have_count(3)
    ok_row = page.locator(f'[data-testid="resolution-row"][data-id="{served.ok_id}"]')
    failed_row = page.locator(f'[data-testid="resolution-row"][data-id="{served.failed_id}"]')
    expect(ok_row.get_by_test_id("state-badge")).to_have_text("resolved")
    expect(failed_row.get_by_test_id("state-badge")).to_have_text("failed")
    expect(ok_row.get_by_test_id("root-func")).to_contain_text("dashboard_pipeline")
    expect(ok_row.get_by_test_id("resolution-link")).to_have_text(served.ok_id[:8])

    # -- a resolution's graph: nested runs grouped in their composition ------------------------------
    ok_row.get_by_test_id("resolution-link").click()
    expect(page).to_have_url(re.compile(rf"#/resolutions/{served.ok_id}$"))
    expect(tid("resolution-state")).to_have_text("resolved")
    expect(tid("resolution-id")).to_have_text(served.ok_id)
    nodes = page.locator('[data-testid="run-node"]')
    expect(nodes).to_have_count(6)
    for func in ("pipeline", "make_numbers", "report", "total", "scale", "check"):
        expect(node(func)).to_have_attribute("data-state", "resolved")
    inside_report = node("report").locator('[data-testid="run-node"]')
    expect(inside_report).to_have_count(2)
    expect(node("pipeline").locator('[data-testid="run-node"]')).to_have_count(5)
    assert page.evaluate(GRAPH_PROBLEMS_JS) == []

    # resolution Actions: a resolved resolution can be rerun, not continued or canceled
    tid("resolution-actions").click()
    expect(tid("action-rerun")).to_be_enabled()
    expect(tid("action-continue")).to_be_disabled()
    expect(tid("action-cancel")).to_be_disabled()
    page.keyboard.press("Escape")
    expect(tid("resolution-actions-menu")).to_be_hidden()

    # -- a Run panel: inputs, output, logs, timings ------------------------------------------------
    runs = _runs_by_func(served.store, served.ok_id)
    total = runs["total"]
    node("total").click()
    expect(page).to_have_url(re.compile(rf"#/runs/{total.id}$"))
    panel = tid("run-panel")
    expect(panel).to_have_attribute("data-run-id", total.id)
    expect(tid("run-func-name")).to_have_text("total")
    expect(tid("run-state")).to_have_text("resolved")
    expect(tid("run-func-path")).to_contain_text("dashboard_pipeline")
    xs = panel.locator('[data-testid="input-row"][data-param="xs"]')
    expect(xs).to_contain_text("[1,2,3,4]")
    expect(xs).to_contain_text("list")
    expect(tid("run-output")).to_have_text("10")
    expect(tid("run-logs")).to_contain_text("summing 4 numbers")
    expect(tid("run-attempts")).to_have_text("1")
    expect(tid("timings")).to_contain_text("Started")
    expect(node("total")).to_have_class(re.compile(r"\bselected\b"))
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # reloading keeps the route
    page.reload()
    expect(tid("run-panel")).to_have_attribute("data-run-id", total.id)
    expect(tid("run-output")).to_have_text("10")

    # -- Actions -> "Rerun from here": a new resolution, reusing what did not depend on `total` -------
    served.hold.touch()  # its `scale` step waits: the page must show it running, then resolved, live
    tid("run-actions").click()
    tid("action-rerun-from").click()
    rerun_id, rerun_thread = _rerun_as_told(page, served, total.id)
    expect(node("scale")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(tid("resolution-state")).to_have_text("running")
    expect(node("total")).to_have_attribute("data-state", "resolved")
    expect(node("check")).to_have_attribute("data-state", "created")
    tid("resolution-actions").click()
    expect(tid("action-cancel")).to_be_enabled()
    expect(tid("action-rerun")).to_be_disabled()
    expect(tid("action-continue")).to_be_disabled()
    page.keyboard.press("Escape")
    expect(tid("live-status")).to_have_attribute("data-mode", "live")  # no polling: what follows comes by SSE
    served.hold.unlink()
    _expect_resolved(page, served, rerun_id)
    rerun_thread.join(30)
    expect(tid("rerun-of-link")).to_have_text(served.ok_id[:8])
    expect(tid("rerun-from-link")).to_have_text(total.id[:8])
    for func in ("pipeline", "make_numbers", "report", "total", "scale", "check"):
        expect(node(func)).to_have_attribute("data-state", "resolved")
    expect(node("make_numbers").locator(".tag.reused")).to_have_count(1)
    expect(node("total").locator(".tag.reused")).to_have_count(0)
    assert page.evaluate(GRAPH_PROBLEMS_JS) == []  # with the tags in, the boxes grew to hold them
    res = served.store.get_resolution(rerun_id)
    assert res is not None and res.state == "resolved" and res.rerun_of == served.ok_id
    new_runs = _runs_by_func(served.store, rerun_id)
    assert new_runs["make_numbers"].notes.get("reused_from") == runs["make_numbers"].id
    assert new_runs["total"].original_run_id == total.id and "reused_from" not in new_runs["total"].notes

    # the re-executed run's panel links back to the run it was cloned from
    node("total").click()
    expect(tid("original-run-link")).to_have_text(total.id[:8])
    expect(tid("run-logs")).to_contain_text("summing 4 numbers")

    # -- the failed resolution: its error, and Actions -> "Continue" once the cause is fixed ---------
    tid("nav-resolutions").click()
    expect(rows).to_have_count(4)
    expect(page.locator(f'[data-testid="resolution-row"][data-id="{rerun_id}"] [data-testid="rerun-of-link"]')
           ).to_have_text(served.ok_id[:8])
    failed_row.get_by_test_id("resolution-link").click()
    expect(tid("resolution-state")).to_have_text("failed")
    expect(tid("resolution-error")).to_be_visible()
    expect(node("check")).to_have_attribute("data-state", "failed")
    node("check").click()
    expect(tid("run-error")).to_contain_text("RuntimeError")
    expect(tid("run-error")).to_contain_text("flag file")
    expect(tid("run-error")).to_contain_text("Traceback")
    tid("resolution-actions").click()
    expect(tid("action-cancel")).to_be_disabled()
    tid("action-continue").click()
    continued_id, _ = _rerun_as_told(page, served, served.failed_id, "continue")
    _expect_resolved(page, served, continued_id)
    expect(node("check")).to_have_attribute("data-state", "resolved")
    expect(node("make_numbers").locator(".tag.reused")).to_have_count(1)
    node("pipeline").click(position={"x": 20, "y": 12})  # on its own head, not on a nested run
    expect(tid("run-output")).to_have_text("60")  # (1 + 2 + 3) * 10
    cont = served.store.get_resolution(continued_id)
    assert cont is not None and cont.state == "resolved" and cont.rerun_of == served.failed_id

    # -- Actions -> "Rerun" of the whole pipeline, then "Cancel" while it runs --------------------------
    served.hold.touch()
    tid("resolution-actions").click()
    tid("action-rerun").click()
    canceled_id, canceled_thread = _rerun_as_told(page, served, continued_id)
    expect(node("scale")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    tid("resolution-actions").click()
    tid("action-cancel").click()
    expect(tid("resolution-state")).to_have_text(re.compile(r"^cancel"))
    tid("resolution-actions").click()
    expect(tid("action-cancel")).to_be_disabled()
    page.keyboard.press("Escape")
    deadline = time.monotonic() + 60  # the loop notices the request within a second or so; keep scale held till then
    while served.store.get_resolution(canceled_id).state != "canceled":
        assert time.monotonic() < deadline, "the resolution never noticed the cancel request"
        time.sleep(0.1)
    served.hold.unlink()
    canceled_thread.join(30)
    expect(tid("resolution-state")).to_have_text("canceled", timeout=WAIT_MS)
    expect(node("check")).to_have_attribute("data-state", "canceled")

    # -- where a run ran, and a cache hit: its source run (in another resolution) and a changed-source warning
    page.goto(f"{served.url}/#/resolutions/{served.cached_id}")
    expect(tid("resolution-id")).to_have_text(served.cached_id)
    expect(node("total").locator(".tag.cached")).to_have_count(1)
    assert page.evaluate(GRAPH_PROBLEMS_JS) == []
    node("scale").click()
    expect(tid("executor-pod")).to_have_text(POD)
    expect(tid("executor-image")).to_have_text(IMAGE)
    node("total").click()
    expect(tid("source-changed")).to_be_visible()
    expect(tid("run-output")).to_have_text("10")
    expect(tid("run-logs")).to_contain_text(f"came from the cache, run {total.id}")  # it did not run
    tid("cached-from-link").click()
    expect(page).to_have_url(re.compile(rf"#/runs/{total.id}$"))
    expect(tid("resolution-id")).to_have_text(served.ok_id)
    expect(tid("run-panel")).to_have_attribute("data-run-id", total.id)

    # -- back on the list: six resolutions ---------------------------------------------------------------
    tid("nav-resolutions").click()
    expect(rows).to_have_count(6)
    expect(page.locator(f'[data-testid="resolution-row"][data-id="{continued_id}"] [data-testid="state-badge"]')
           ).to_have_text("resolved")
    expect(page.locator(f'[data-testid="resolution-row"][data-id="{canceled_id}"] [data-testid="state-badge"]')
           ).to_have_text("canceled")
    page.screenshot(path=str(SCREENSHOT.with_name(SCREENSHOT.stem + "-list.png")), full_page=True)

    assert outside == [], f"the page tried to fetch from outside its server: {outside}"
    assert problems == [], "\n".join(problems)


def test_modules_served_as_javascript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page loads app.js as an ES module; it and every module it imports, followed through their imports,
    are served as JavaScript and revalidated on each load, even on a host whose MIME table calls .js text/plain
    (browsers refuse such a module)."""
    from sematic_k8s_server.dashboard import STATIC_DIR

    mimetypes.guess_type("x.js")  # load the host's table, then spoil it
    monkeypatch.setitem(mimetypes.types_map, ".js", "text/plain")
    with serve(tmp_path) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert '<script type="module" src="/static/app.js"></script>' in c.get("/").text
        served, todo = set(), ["app.js"]
        while todo:
            name = todo.pop()
            if name in served:
                continue
            r = c.get(f"/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"] == "text/javascript; charset=utf-8", name
            assert r.headers["cache-control"] == "no-cache", name
            served.add(name)
            todo += re.findall(r'^import [^;]* from "\./([a-z]+\.js)";', r.text, re.M)
        assert served == {p.name for p in STATIC_DIR.glob("*.js")}
        etag = c.get("/static/layout.js").headers["etag"]
        assert c.get("/static/layout.js", headers={"If-None-Match": etag}).status_code == 304  # revalidated, not resent
        assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
