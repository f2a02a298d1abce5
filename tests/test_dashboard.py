"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against the real server.

The server runs in this process (uvicorn on a free 127.0.0.1 port, API keys required) over a temp SQLite
database; pipelines are recorded through it with ``LocalResolver(server=...)``, so the page gets live
events. The browser logs in with an API key, walks the pipelines index, a resolution's graph and a Run
panel; Actions -> "Rerun from here" and "Continue" on these local resolutions show the commands that re-run
them on the user's machine; the test runs one (``sematic-k8s rerun``) and watches it live in the list and
the graph, then cancels it from the page. Other tests: tags, notes, search and filters; a 5,000-run
resolution (a page of normal height, its fan-out one group, paged on request; the timeline and its
critical path); values as tables, pictures, JSON trees, folded and downloaded; logs followed, searched,
downloaded, and refused from a storage the server does not read; readable pages for bad and unknown ids.
The graph's boxes are checked to hold their content without overlapping. Screenshots go to
$SEMATIC_K8S_DASHBOARD_SCREENSHOT (default /tmp/dashboard.png) and siblings; each is checked to be no
taller and no wider than the page should be. A last test, without a browser, checks the page's ES modules
are served as JavaScript. (The graph layout itself is tested in Node: ``test_dashboard_js.py``.)

Needs ``chromium`` (apt-get install chromium) and ``playwright`` (pip install playwright; never
``playwright install``). Without them the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import mimetypes
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import sematic_k8s as sk
from sematic_k8s import config
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import API_KEY_ENV, SERVER_ENV
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
WAIT_MS = 90_000  # a rerun is a fresh Python process recording through the server
TESTS = Path(__file__).resolve().parent


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

    for var in (SERVER_ENV, API_KEY_ENV, config.DB_URL_ENV, config.HOME_ENV):
        monkeypatch.delenv(var, raising=False)
    home = config.home(tmp_path / "home")
    store = open_store(config.db_url(home))
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


def _run_cli(served: Served, *args: str) -> subprocess.Popen:
    """``sematic-k8s ARGS`` in a new process, recording through the test server (as a user would run it)."""
    env = {**os.environ, SERVER_ENV: served.url, API_KEY_ENV: served.key, config.HOME_ENV: str(served.home),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    log = open(served.home / f"cli-{'-'.join(args)[:40]}.log", "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen([sys.executable, "-m", "sematic_k8s.cli", *args], env=env, stdout=log, stderr=log)


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
    tid("tab-logs").click()
    expect(tid("run-logs")).to_contain_text("summing 4 numbers")
    expect(tid("run-logs")).to_be_visible()
    tid("tab-details").click()
    expect(tid("run-attempts")).to_have_text("1")
    expect(tid("timings")).to_contain_text("Started")
    tid("tab-source").click()
    expect(tid("run-source")).to_contain_text("def total(xs: list[int]) -> int:")
    tid("tab-output").click()
    expect(node("total")).to_have_class(re.compile(r"\bselected\b"))
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # reloading keeps the route
    page.reload()
    expect(tid("run-panel")).to_have_attribute("data-run-id", total.id)
    expect(tid("run-output")).to_have_text("10")

    # -- Actions -> "Rerun from here" on a local resolution: the page shows how to re-run it where it ran -----
    tid("run-actions").click()
    tid("action-rerun-from").click()
    expect(tid("local-rerun")).to_be_visible()
    expect(tid("local-rerun-cli")).to_have_text(f"sematic-k8s rerun {total.id}")
    expect(tid("local-rerun-python")).to_contain_text(f'LocalResolver(rerun_from="{total.id}",)')
    expect(tid("local-rerun-python")).to_contain_text("from dashboard_pipeline import pipeline")
    page.keyboard.press("Escape")
    expect(tid("local-rerun")).to_have_count(0)
    expect(page).to_have_url(re.compile(rf"#/runs/{total.id}$"))  # nothing was started from the page

    # the user runs that command (through this server): the list shows it running, with its progress, live
    served.hold.touch()  # its `scale` step waits: the page must show it running, then canceled, live
    # (two threads: with one, a func runs inside the loop, which records nothing until it returns)
    rerun_proc = _run_cli(served, "rerun", total.id, "--max-parallelism", "2")
    try:
        tid("nav-resolutions").click()
        expect(rows).to_have_count(4, timeout=WAIT_MS)
        running_row = page.locator('[data-testid="resolution-row"][data-state="running"]')
        expect(running_row).to_have_count(1, timeout=WAIT_MS)
        expect(running_row.get_by_test_id("run-progress")).to_have_text(re.compile(r"^\d+/6 resolved$"))
        expect(running_row.get_by_test_id("rerun-of-link")).to_have_text(served.ok_id[:8])
        running_row.get_by_test_id("resolution-link").click()
        rerun_id = page.url.rsplit("/", 1)[1]
        expect(node("scale")).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        expect(tid("resolution-state")).to_have_text("running")
        expect(tid("header-progress")).to_have_text(re.compile(r"^\d/6 resolved$"))
        expect(node("make_numbers").locator(".tag.reused")).to_have_count(1)
        expect(tid("rerun-from-link")).to_have_text(total.id[:8])
        tid("resolution-actions").click()
        expect(tid("action-rerun")).to_be_disabled()
        tid("action-cancel").click()
        expect(tid("resolution-state")).to_have_text(re.compile(r"^cancel"))
        deadline = time.monotonic() + 60  # the loop notices within a second or so; keep scale held till then
        while served.store.get_resolution(rerun_id).state != "canceled":
            assert time.monotonic() < deadline, "the resolution never noticed the cancel request"
            time.sleep(0.1)
    finally:
        served.hold.unlink(missing_ok=True)
        rerun_proc.wait(60)
    expect(tid("resolution-state")).to_have_text("canceled", timeout=WAIT_MS)
    expect(node("check")).to_have_attribute("data-state", "canceled")
    res = served.store.get_resolution(rerun_id)
    assert res is not None and res.rerun_of == served.ok_id

    # -- the failed resolution: its error, and "Continue" shows the command that continues it ----------------
    tid("nav-resolutions").click()
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
    expect(tid("local-rerun-cli")).to_have_text(f"sematic-k8s rerun {served.failed_id} --mode continue")
    tid("local-rerun-close").click()
    expect(tid("local-rerun")).to_have_count(0)

    # -- where a run ran, and a cache hit: its source run (in another resolution) and a changed-source warning
    page.goto(f"{served.url}/#/resolutions/{served.cached_id}")
    expect(tid("resolution-id")).to_have_text(served.cached_id)
    expect(node("total").locator(".tag.cached")).to_have_count(1)
    assert page.evaluate(GRAPH_PROBLEMS_JS) == []
    node("scale").click()
    tid("tab-details").click()
    expect(tid("executor-pod")).to_have_text(POD)
    expect(tid("executor-image")).to_have_text(IMAGE)
    node("total").click()
    expect(tid("source-changed")).to_be_visible()
    tid("tab-output").click()
    expect(tid("run-output")).to_have_text("10")
    tid("tab-logs").click()
    expect(tid("run-logs")).to_contain_text(f"came from the cache, run {total.id}")  # it did not run
    tid("tab-details").click()
    tid("cached-from-link").click()
    expect(page).to_have_url(re.compile(rf"#/runs/{total.id}$"))
    expect(tid("resolution-id")).to_have_text(served.ok_id)
    expect(tid("run-panel")).to_have_attribute("data-run-id", total.id)

    # -- back on the list: four resolutions of one pipeline -------------------------------------------------
    tid("nav-resolutions").click()
    expect(rows).to_have_count(4)
    expect(page.get_by_test_id("pipeline-count")).to_have_text("4 resolutions: 2 resolved, 1 failed, 1 canceled")
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
