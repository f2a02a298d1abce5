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

The browser comes from ``conftest.py`` (it says what it needs). Faults seen from the page (a server restarted,
refused actions, huge errors, corrupt records) are in ``test_dashboard_faults.py``.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import socket
import subprocess
import sys
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
from browser_pages import VIEWPORT, log_in, new_page, open_run
from sematic_k8s import settings
from sematic_k8s.settings import API_KEY_ENV, SERVER_ENV
from sematic_k8s.storage.local import LocalStorage
from serving import serve

try:  # tests/ is a plain directory (pytest puts it on sys.path) or, later, a package
    import dashboard_pipeline as pl
except ImportError:  # pragma: no cover
    from tests import dashboard_pipeline as pl

SCREENSHOT = Path(os.environ.get("SEMATIC_K8S_DASHBOARD_SCREENSHOT", "/tmp/dashboard.png"))
WAIT_MS = 90_000  # a rerun is a fresh Python process recording through the server
TESTS = Path(__file__).resolve().parent
NORMAL_HEIGHT = int(VIEWPORT["height"] * 1.2)  # a page about as tall as the window, whatever the graph holds


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
    owner: str  # the id of ``key``: records written directly in the store as its (big_resolution.record_fanout)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    import uvicorn

    from sematic_k8s_server import auth, create_app
    from sematic_k8s_server.connections import ConnectionLimits, uvicorn_config
    from sematic_k8s_server.db import open_store

    for var in (SERVER_ENV, API_KEY_ENV, settings.DB_URL_ENV, settings.HOME_ENV):
        monkeypatch.delenv(var, raising=False)
    home = settings.home(tmp_path / "home")
    store = open_store(settings.db_url(home))
    key, key_row = auth.new_api_key(store.engine, "dashboard-test")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(store, LocalStorage(home / "storage"), api_keys_required=True, self_url=url)
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=sock.getsockname()[1], limits=ConnectionLimits(),
                                           shutdown_timeout=2, log_level="warning"))  # as the CLI runs it
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
        yield Served(url, key, home, flag, hold, store, ok.id, cached.id, failed.value.resolution_id, key_row["id"])
    finally:
        Path(f"{tmp_path / 'fail.flag'}.hold").unlink(missing_ok=True)  # let any rerun process finish
        server.should_exit = True
        thread.join(15)
        sock.close()
        store.close()


POD = "sk-scale-7f3c2"
IMAGE = "127.0.0.1:5000/pipelines@sha256:" + "ab" * 32
SKIPPED = "input 'model' (a Model) has no deterministic encoding"  # why a run was not cached


def _pretend_it_ran_in_a_pod(store: Any, root_id: str) -> None:
    """LocalResolver runs in-process: give one run the executor notes a Kubernetes run records, and mark the
    cache hit as one whose func source changed since, and say why another was not cached, to check the panel
    shows all three."""
    from sematic_k8s.store.records import Batch

    runs = _runs_by_func(store, root_id)
    assert runs["total"].cached_from, "expected a cache hit on `total`"
    batch = Batch()
    batch.update_run(runs["scale"].id, notes={"executor": {"executor": "kubernetes", "namespace": "ml",
                                                           "job": f"{POD}-job", "pod": POD, "image": IMAGE},
                                              "cache": {"skipped": SKIPPED}})
    notes = runs["total"].notes
    batch.update_run(runs["total"].id, notes={**notes, "cache": {**notes["cache"], "source_changed": True}})
    store.write(batch)


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh browser page; closed before the server stops (its event stream holds a connection)."""
    with new_page(browser, viewport=VIEWPORT, accept_downloads=True) as p:
        yield p


def _run_cli(served: Served, *args: str) -> subprocess.Popen:
    """``sematic-k8s ARGS`` in a new process, recording through the test server (as a user would run it)."""
    env = {**os.environ, SERVER_ENV: served.url, API_KEY_ENV: served.key, settings.HOME_ENV: str(served.home),
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
    expect(tid("cache-skipped")).to_have_text(f"Not cached: {SKIPPED}")
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


def _login(page: Any, served: Served) -> None:
    """Open the dashboard with the API key stored, as after pasting it once."""
    log_in(page, served.url, served.key)


def _shot(page: Any, name: str, max_height: int = 2 * VIEWPORT["height"]) -> Path:
    """A full-page screenshot: no wider than the viewport (nothing overflows sideways) and no taller than
    ``max_height`` (a page of normal height), read from the PNG itself."""
    path = SCREENSHOT.with_name(f"{SCREENSHOT.stem}-{name}.png")
    data = page.screenshot(path=str(path), full_page=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width <= VIEWPORT["width"], f"{name}: the page is {width}px wide"
    assert height <= max_height, f"{name}: the page is {height}px tall"
    return path


NO_OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter((el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.right > vw + 1 && !el.closest('.graph-wrap, .timeline-wrap, .value-table-wrap, pre');
  }).map((el) => el.dataset.testid || el.className || el.tagName);
  return {scrollWidth: document.documentElement.scrollWidth, vw, wide: wide.slice(0, 5),
          height: document.documentElement.scrollHeight};
}"""


def _no_overflow(page: Any) -> dict:
    got = page.evaluate(NO_OVERFLOW_JS)
    assert got["scrollWidth"] <= got["vw"] and got["wide"] == [], got
    return got


def test_thousands_of_runs_at_a_glance(browser: Any, served: Served) -> None:
    """A 5,000-run resolution still running: its fan-out one group with counts by state, a page of normal
    height, progress in the list and the header; the group shown a page at a time on request; compositions
    fold; the timeline shows where time went, the critical path highlighted."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    big_id = big.record_fanout(served.store, 5000, running=20, owner=served.owner)
    with new_page(browser, viewport=VIEWPORT) as page:
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tid = lambda name: page.get_by_test_id(name)  # noqa: E731
        _login(page, served)
        page.goto(f"{served.url}/#/")
        row = page.locator(f'[data-testid="resolution-row"][data-id="{big_id}"]')
        expect(row.get_by_test_id("run-progress")).to_have_text("4981/5003 resolved")
        _shot(page, "big-list")

        row.get_by_test_id("resolution-link").click()
        group = page.get_by_test_id("group-node")
        expect(group).to_have_count(1)
        expect(group.get_by_test_id("group-text")).to_have_text("5000 × add: 4980 resolved, 20 running")
        expect(group).to_have_attribute("data-state", "running")
        expect(tid("header-progress")).to_have_text("4981/5003 resolved")
        expect(page.locator('[data-testid="run-node"]')).to_have_count(3)  # pipeline, prepare, total
        expect(page.locator("svg.edges path.edge")).to_have_count(2)  # prepare -> 5000 × add -> total
        assert _no_overflow(page)["height"] <= NORMAL_HEIGHT
        _shot(page, "big-graph", NORMAL_HEIGHT)

        # a page of the group, one by one, told apart by their input; then the next page; then one group again
        group.get_by_test_id("group-expand").click()
        adds = page.locator('[data-testid="run-node"][data-func="add"]')
        expect(adds).to_have_count(50)
        expect(tid("group-page")).to_have_text("runs 1–50 of 5000 shown")
        expect(group.get_by_test_id("group-text")).to_have_text("4950 × add: 4930 resolved, 20 running not shown")
        expect(adds.first.get_by_test_id("run-label")).to_have_text(re.compile(r"^x=\d+$"))
        labels = {t for t in adds.get_by_test_id("run-label").all_text_contents()}
        assert labels == {f"x={i}" for i in range(50)}
        assert page.evaluate(GRAPH_PROBLEMS_JS) == []
        tid("group-next").click()
        expect(tid("group-page")).to_have_text("runs 51–100 of 5000 shown")
        expect(adds.get_by_test_id("run-label").first).to_have_text(re.compile(r"^x=(5\d|[6-9]\d)$"))
        assert _no_overflow(page)["height"] <= NORMAL_HEIGHT  # the graph scrolls inside its frame
        _shot(page, "big-page", NORMAL_HEIGHT)
        tid("group-hide").click()
        expect(adds).to_have_count(0)

        # fold the pipeline: one box
        page.locator('[data-testid="run-node"][data-func="pipeline"]').get_by_test_id("fold-toggle").first.click()
        expect(page.locator('[data-testid="run-node"]')).to_have_count(1)
        expect(group).to_have_count(0)
        page.locator('[data-testid="run-node"][data-func="pipeline"]').get_by_test_id("fold-toggle").click()
        expect(group).to_have_count(1)

        # the timeline: a row per shown node, the critical path through prepare -> adds -> total
        tid("view-timeline").click()
        rows = page.get_by_test_id("timeline-row")
        expect(rows).to_have_count(4)
        critical = page.locator('[data-testid="timeline-row"][data-critical="true"]')
        expect(critical).to_have_count(4)
        assert page.get_by_test_id("timeline-bar").count() >= 3
        _shot(page, "big-timeline", NORMAL_HEIGHT)
    assert problems == [], problems


def test_pipelines_index_tags_notes_and_filters(page: Any, served: Served) -> None:
    """Resolutions grouped by root func with their history; tags and a note set on the page (and from the
    API) shown in the list; search and the func, state and time filters."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import sweep_pipeline as sw

    resolver = sk.LocalResolver(home=served.home, server=served.url, api_key=served.key)
    sweep = sw.sweep(3)
    sweep.resolve(resolver)
    tid = lambda name: page.get_by_test_id(name)  # noqa: E731
    _login(page, served)
    page.goto(f"{served.url}/#/")
    groups = page.get_by_test_id("pipeline-group")
    expect(groups).to_have_count(2)
    expect(groups.first.get_by_test_id("pipeline-name")).to_have_text("sweep")  # the newest first
    expect(groups.nth(1).get_by_test_id("pipeline-name")).to_have_text("pipeline")
    expect(groups.nth(1).get_by_test_id("resolution-row")).to_have_count(3)
    expect(groups.nth(1).get_by_test_id("pipeline-count")).to_have_text("3 resolutions: 2 resolved, 1 failed")

    # tags and a note on the resolution's page
    page.locator(f'[data-testid="resolution-row"][data-id="{served.ok_id}"] [data-testid="resolution-link"]').click()
    tid("tag-input").fill("baseline")
    tid("tag-input").press("Enter")
    expect(page.locator('[data-testid="tag-chip"][data-tag="baseline"]')).to_be_visible()
    tid("tag-input").fill("bad tag")
    tid("tag-input").press("Enter")
    expect(tid("error-banner")).to_contain_text("bad tag 'bad tag'")
    tid("error-banner").click()
    labels_url = f"{served.url}/api/v1/resolutions/{served.ok_id}/labels"

    def theirs(change: dict) -> None:  # someone else's change, through the API
        httpx.post(labels_url, json=change, headers={"X-API-Key": served.key}).raise_for_status()

    # someone else tags it while the note is edited here: the note, which they left alone, is saved all the same
    tid("note-edit").click()
    tid("note-input").fill("a first note")
    theirs({"add": ["other"]})
    expect(page.locator('[data-testid="tag-chip"][data-tag="other"]')).to_be_visible()
    tid("note-save").click()
    expect(tid("resolution-note")).to_have_text("a first note")
    # someone else removes a tag just as one is removed here (their change lands between the page's drawing and its
    # request): refused, and the page redraws the tags as they are and says so
    def theirs_first(route: Any) -> None:
        theirs({"remove": ["other"]})
        route.continue_()

    page.route(labels_url, theirs_first, times=1)
    page.locator('[data-testid="tag-chip"][data-tag="baseline"] [data-testid="tag-remove"]').click()
    expect(tid("error-banner")).to_contain_text(
        "Cannot change the tags of ok-res: the labels of resolution ok-res changed since they were read (tags now: "
        "baseline; note now: 'a first note'): nothing was changed; read them again and make your change to them (the "
        "page now shows them as they are)".replace("ok-res", served.ok_id[:8], 1).replace("ok-res", served.ok_id))
    expect(page.locator('[data-testid="tag-chip"][data-tag="other"]')).to_have_count(0)
    expect(page.locator('[data-testid="tag-chip"][data-tag="baseline"]')).to_be_visible()
    assert served.store.get_resolution(served.ok_id).tags == ["baseline"]
    tid("error-banner").click()
    # someone replaces the note while it is edited here: saving does not overwrite theirs unseen
    tid("note-edit").click()
    tid("note-input").fill("the run we compare against")
    theirs({"note": "theirs"})
    tid("note-save").click()
    expect(tid("error-banner")).to_contain_text(
        "changed since they were read (tags now: baseline; note now: 'theirs'): nothing was changed")
    assert served.store.get_resolution(served.ok_id).note == "theirs"
    tid("error-banner").click()
    tid("note-save").click()  # saved again, knowing theirs: replaces it
    expect(tid("resolution-note")).to_have_text("the run we compare against")
    httpx.post(f"{served.url}/api/v1/resolutions/{served.failed_id}/labels", json={"add": ["flaky"]},
               headers={"X-API-Key": served.key}).raise_for_status()
    res = served.store.get_resolution(served.ok_id)
    assert res.tags == ["baseline"] and res.note == "the run we compare against"

    # the list shows them; search and filters narrow it
    tid("nav-resolutions").click()
    ok_row = page.locator(f'[data-testid="resolution-row"][data-id="{served.ok_id}"]')
    expect(ok_row.get_by_test_id("tag-chip")).to_have_text("baseline")
    expect(ok_row.get_by_test_id("note-text")).to_have_text("the run we compare against")
    _shot(page, "index")
    rows = page.get_by_test_id("resolution-row")
    tid("search").fill("compare")
    expect(rows).to_have_count(1)
    tid("search").fill("FLAKY")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", served.failed_id)
    tid("search").fill("")
    expect(rows).to_have_count(4)
    tid("func-filter").select_option("sweep_pipeline:sweep")
    expect(rows).to_have_count(1)
    expect(groups).to_have_count(1)
    tid("func-filter").select_option("")
    tid("state-filter").select_option("failed")
    expect(rows).to_have_count(1)
    tid("time-filter").select_option("1h")
    expect(rows).to_have_count(1)
    tid("state-filter").select_option("canceled")
    expect(tid("no-resolutions")).to_have_text("No resolution matches these filters.")
    _no_overflow(page)


def test_clicks_on_labels_while_live_events_redraw_the_page(page: Any, served: Served) -> None:
    """A click on the note's save, or on a tag's remove, whose mouse is pressed as someone else's change (a live
    event) redraws the resolution's header and released after: the click is made (the browser drops a click whose
    element was taken out of the page between its mousedown and mouseup: the header's redraw did that)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    tid = page.get_by_test_id
    labels_url = f"{served.url}/api/v1/resolutions/{served.ok_id}/labels"

    def theirs(change: dict) -> None:  # someone else's change, through the API
        httpx.post(labels_url, json=change, headers={"X-API-Key": served.key}).raise_for_status()

    def click_across_redraw(target: Any, change: dict, redrawn: Any) -> None:
        """Press the mouse on ``target``, make ``change``, wait until the page shows it (``redrawn``), release."""
        box = target.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        theirs(change)
        expect(redrawn).to_be_visible()
        page.mouse.up()

    theirs({"add": ["old"]})
    _login(page, served)
    page.goto(f"{served.url}/#/resolutions/{served.ok_id}")
    chip = lambda tag: page.locator(f'[data-testid="tag-chip"][data-tag="{tag}"]')  # noqa: E731
    expect(chip("old")).to_be_visible()
    tid("note-edit").click()
    tid("note-input").fill("mine")
    click_across_redraw(tid("note-save"), {"add": ["other"]}, chip("other"))
    expect(tid("resolution-note")).to_have_text("mine")
    assert served.store.get_resolution(served.ok_id).note == "mine"
    click_across_redraw(chip("old").get_by_test_id("tag-remove"), {"note": "theirs"},
                        tid("resolution-note").filter(has_text="theirs"))
    expect(chip("old")).to_have_count(0)
    res = served.store.get_resolution(served.ok_id)
    assert res.tags == ["other"] and res.note == "theirs"


def test_a_note_saved_is_shown_saved_when_its_event_is_drawn_before_its_answer(page: Any, served: Served) -> None:
    """A note's save whose live event redraws the page before the save's answer reaches it (the server sends the
    event, then the answer: on a loaded machine the page may draw the event first) closes the editor on the note
    saved, a first save and a save made again after someone else's note (was: the editor stayed open, the page
    having drawn that record already and drawing it again only once it changed)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    tid = page.get_by_test_id
    labels_url = f"{served.url}/api/v1/resolutions/{served.ok_id}/labels"
    held: list[tuple[Any, Any]] = []  # a save's request and the server's answer to it, not yet given to the page

    def hold(route: Any) -> None:
        held.append((route, route.fetch()))  # saved, and its event sent to the page

    def overview(route: Any) -> None:
        """Answer the page's overview; one showing the note held's save made lets that save's answer through."""
        answer = route.fetch()
        route.fulfill(response=answer)
        if held and answer.json()["resolution"]["note"] == held[0][0].request.post_data_json["note"]:
            save, saved = held.pop()
            save.fulfill(response=saved)

    page.route(re.compile(re.escape(f"/api/v1/resolutions/{served.ok_id}/overview")), overview)
    _login(page, served)
    page.goto(f"{served.url}/#/resolutions/{served.ok_id}")
    tid("note-edit").click()
    tid("note-input").fill("mine")
    page.route(labels_url, hold, times=1)
    tid("note-save").click()
    expect(tid("resolution-note")).to_have_text("mine")
    # someone replaces it while it is edited here: refused, then saved again knowing theirs
    tid("note-edit").click()
    tid("note-input").fill("mine again")
    httpx.post(labels_url, json={"note": "theirs"}, headers={"X-API-Key": served.key}).raise_for_status()
    tid("note-save").click()
    expect(tid("error-banner")).to_contain_text("note now: 'theirs'): nothing was changed")
    tid("error-banner").click()
    page.route(labels_url, hold, times=1)
    tid("note-save").click()
    expect(tid("resolution-note")).to_have_text("mine again")
    assert not held and served.store.get_resolution(served.ok_id).note == "mine again"


def _record_run(served: Served, root_id: str) -> None:
    """A run of resolution ``root_id`` recorded as its resolver does, through the API: a live event."""
    from sematic_k8s.store.records import Batch, utcnow

    run_id = uuid.uuid4().hex
    _write(served, Batch(new_runs={run_id: {"id": run_id, "root_id": root_id, "parent_id": root_id,
                                            "func_path": "sweep:add", "func_name": "add", "state": "created",
                                            "created_at": utcnow()}}))


def _write(served: Served, batch: Any) -> None:
    """``batch`` written through the API, as a resolver writes: a live event."""
    from sematic_k8s.store.wire import batch_to_json, dumps

    httpx.post(f"{served.url}/api/v1/store/write", content=dumps(batch_to_json(batch)),
               headers={"X-API-Key": served.key, "Content-Type": "application/json"}).raise_for_status()


def _click_across_redraw(page: Any, target: Any, redraw: Any, shown: Any) -> None:
    """Press the mouse on ``target``, ``redraw()`` (a change through the API), wait until ``shown`` is, release."""
    from playwright.sync_api import expect

    box = target.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    redraw()
    expect(shown).to_be_visible()
    page.mouse.up()


def _change_run(served: Served, run_id: str, **fields: Any) -> None:
    """Run ``run_id``'s ``fields`` changed through the API, as its resolver changes them: a live event."""
    from sematic_k8s.store.records import Batch

    batch = Batch()
    batch.update_run(run_id, **fields)
    _write(served, batch)


def _clicks_as_runs_resolve(page: Any, served: Served, running: list[str], shown: Any) -> Any:
    """A click on a target (the function returned) whose mouse is pressed as the last of the ``running`` runs (taken
    from the list) resolves, and released once ``shown(run_id)`` is visible."""
    from sematic_k8s.store.records import utcnow

    def click(target: Any) -> None:
        run_id = running.pop()
        _click_across_redraw(page, target, lambda: _change_run(served, run_id, state="resolved", ended_at=utcnow()),
                             shown(run_id))

    return click


def test_clicks_on_the_list_while_live_events_redraw_it(page: Any, served: Served) -> None:
    """A click on a resolution's link in the list, whose mouse is pressed as another pipeline's running resolution
    records a run (through the API, a live event that redraws the list) and released once the list shows it, is
    followed (the list's rows were drawn anew, out of the page and back, on each redraw: the click was dropped)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    _login(page, served)
    page.goto(f"{served.url}/#/")
    progress = page.locator(f'[data-testid="resolution-row"][data-id="{running_id}"] [data-testid="run-progress"]')
    expect(progress).to_have_text("2/6 resolved")
    ok_link = page.locator(f'[data-testid="resolution-row"][data-id="{served.ok_id}"] [data-testid="resolution-link"]')
    _click_across_redraw(page, ok_link, lambda: _record_run(served, running_id),
                         progress.filter(has_text="2/7 resolved"))
    expect(page.get_by_test_id("resolution-id")).to_have_text(served.ok_id)


def test_clicks_on_actions_while_live_events_redraw_the_page(page: Any, served: Served) -> None:
    """A running resolution's header is redrawn on each of its run events: a click on the Actions toggle, then on
    Cancel, or on the link to the resolution it reruns, whose mouse is pressed as a run is recorded (through the
    API) and released once the page shows it, is made: the link is followed, the menu opens, the resolution is
    canceled (the header's Actions and facts were drawn anew, out of the page and back, on each redraw: the
    browser dropped the click)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    total = [6]  # the runs recorded: the pipeline, prepare, 3 adds, total

    def click_across_redraw(target: Any) -> None:  # a run recorded meanwhile, shown in the header
        total[0] += 1
        _click_across_redraw(page, target, lambda: _record_run(served, running_id),
                             tid("header-progress").filter(has_text=f"2/{total[0]} resolved"))

    with served.store.engine.begin() as conn:  # a rerun of ok_id: its header links to it
        conn.exec_driver_sql("UPDATE resolutions SET rerun_of = ? WHERE id = ?", (served.ok_id, running_id))
    _login(page, served)
    page.goto(f"{served.url}/#/resolutions/{running_id}")
    expect(tid("header-progress")).to_have_text("2/6 resolved")
    click_across_redraw(tid("rerun-of-link"))
    expect(tid("resolution-id")).to_have_text(served.ok_id)
    page.go_back()
    expect(tid("resolution-id")).to_have_text(running_id)
    click_across_redraw(tid("resolution-actions"))
    expect(tid("resolution-actions-menu")).to_be_visible()
    click_across_redraw(tid("action-cancel"))
    expect(tid("resolution-state")).to_have_text(re.compile(r"^cancel"))
    assert served.store.get_resolution(running_id).state in ("canceling", "canceled")


def _runs_of(served: Served, root_id: str, func_name: str) -> list[Any]:
    """The runs of ``func_name`` in resolution ``root_id``, in the order they were made."""
    runs = (r for r in served.store.runs_of_root(root_id) if r.func_name == func_name)
    return sorted(runs, key=lambda r: r.created_at)


def _fanout_running(served: Served) -> tuple[Any, str, list[str]]:
    """A fan-out of 4 adds recorded with 3 of them running: (the big_resolution module, the resolution's id, the ids
    of its running adds)."""
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    running_id = big.record_fanout(served.store, 4, running=3, owner=served.owner)
    return big, running_id, [r.id for r in _runs_of(served, running_id, "add") if r.state == "running"]


def test_clicks_on_the_graph_while_live_events_redraw_it(page: Any, served: Served) -> None:
    """A running resolution's graph is redrawn on each of its run events: a click on a run's box (one that did not
    change, then the badge of one whose state did, then the attempts tag of one whose attempts did), on a
    composition's fold toggle, or on a group's button showing its runs (as a run of it changes, then as a run is
    added to it: the button's own text changes), whose mouse is pressed as a run changes (through the API) and
    released once the graph shows it, is made: the Run panel opens on the run, the composition folds, the group shows
    its runs (every box was drawn anew, out of the page and back, on each redraw: the click was dropped; later its
    tags and a group's buttons alone, so a click on one whose text changed was)."""
    from playwright.sync_api import expect

    from sematic_k8s.store.records import utcnow

    expect.set_options(timeout=15_000)
    big, running_id, running = _fanout_running(served)
    tid = page.get_by_test_id
    box = lambda run_id: page.locator(f'[data-testid="run-node"][data-run-id="{run_id}"]')  # noqa: E731
    click_across_redraw = _clicks_as_runs_resolve(  # a running add resolved meanwhile, shown in the graph
        page, served, running, lambda run_id: box(run_id).and_(page.locator('[data-state="resolved"]')))

    _login(page, served)
    page.goto(f"{served.url}/#/resolutions/{running_id}")
    prepare = _runs_of(served, running_id, "prepare")[0]
    expect(box(prepare.id)).to_be_visible()
    click_across_redraw(box(prepare.id))
    expect(tid("run-func-name")).to_have_text("prepare")
    changing = running[-1]  # the next one resolved: the box pressed is the box redrawn
    click_across_redraw(box(changing).get_by_test_id("state-badge"))
    expect(tid("run-panel")).to_have_attribute("data-run-id", changing)
    retried = running[0]  # tried again (running again, as its resolver records it): its tag says how often
    _change_run(served, retried, attempts=2, state="running")
    tag = box(retried).get_by_test_id("run-tag")
    expect(tag).to_have_text("2 attempts")
    _click_across_redraw(page, tag, lambda: _change_run(served, retried, attempts=3, state="running"),
                         tag.filter(has_text="3 attempts"))
    expect(tid("run-panel")).to_have_attribute("data-run-id", retried)
    click_across_redraw(box(running_id).get_by_test_id("fold-toggle").first)
    expect(box(running_id).get_by_text("nested runs folded")).to_be_visible()

    grouped_id = big.record_fanout(served.store, 12, running=3, owner=served.owner)  # its adds shown as one group
    page.goto(f"{served.url}/#/resolutions/{grouped_id}")
    expect(tid("group-text")).to_have_text("12 × add: 9 resolved, 3 running")
    grouped = next(r.id for r in _runs_of(served, grouped_id, "add") if r.state == "running")
    _click_across_redraw(page, tid("group-expand"),
                         lambda: _change_run(served, grouped, state="resolved", ended_at=utcnow()),
                         tid("group-text").filter(has_text="10 resolved, 2 running"))
    expect(page.locator('[data-testid="run-node"][data-func="add"]')).to_have_count(12)  # all shown: no group left

    grown_id = big.record_fanout(served.store, 12, running=3, owner=served.owner)  # a run joins its group as pressed
    page.goto(f"{served.url}/#/resolutions/{grown_id}")
    expect(tid("group-expand")).to_have_text("show 12")
    _click_across_redraw(page, tid("group-expand"), lambda: _record_run(served, grown_id),
                         tid("group-expand").filter(has_text="show 13"))
    expect(page.locator('[data-testid="run-node"][data-func="add"]')).to_have_count(13)


def test_clicks_on_the_timeline_while_live_events_redraw_it(page: Any, served: Served) -> None:
    """A running resolution's timeline is redrawn on each of its run events: a click on a run's row (one that did
    not change, then the badge of one whose state did), whose mouse is pressed as a run's state is recorded (through
    the API) and released once the timeline shows it, opens the Run panel on that run (every row was drawn anew, out
    of the page and back, on each redraw: the click was dropped)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    _, running_id, running = _fanout_running(served)
    tid = page.get_by_test_id
    row = lambda run_id: page.locator(f'[data-testid="timeline-row"][data-id="{run_id}"]')  # noqa: E731
    click_across_redraw = _clicks_as_runs_resolve(  # a running add resolved meanwhile, shown in the timeline
        page, served, running, lambda run_id: row(run_id).locator('[data-testid="state-badge"][data-state="resolved"]'))

    _login(page, served)
    page.goto(f"{served.url}/#/resolutions/{running_id}")
    tid("view-timeline").click()
    prepare = _runs_of(served, running_id, "prepare")[0]
    expect(row(prepare.id)).to_be_visible()
    click_across_redraw(row(prepare.id))
    expect(tid("run-func-name")).to_have_text("prepare")
    changing = running[-1]  # the next one resolved: the row pressed is the row redrawn
    click_across_redraw(row(changing).get_by_test_id("state-badge"))
    expect(tid("run-panel")).to_have_attribute("data-run-id", changing)
    expect(tid("timeline-row")).to_have_count(7)  # each row once


def test_clicks_on_the_run_panel_while_live_events_redraw_it(page: Any, served: Served) -> None:
    """The Run panel is redrawn on each event of its run: a click on a tab, on the link to the run's parent, or on
    its Actions toggle, whose mouse is pressed as the run changes (through the API) and released once the panel
    shows it, is made (the panel was drawn anew, out of the page and back, on each redraw: the click was
    dropped)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    run_id = next(r.id for r in _runs_of(served, running_id, "add") if r.state == "running")
    changes = [0]

    def skipped() -> None:  # why the run is not cached, told anew: the panel shows it
        _change_run(served, run_id, notes={"cache": {"skipped": f"reason {changes[0]}"}})

    def change() -> None:  # a change to a run but its state sends no event: another run recorded sends one
        skipped()
        _record_run(served, running_id)

    def click_across_redraw(target: Any) -> None:
        changes[0] += 1
        _click_across_redraw(page, target, change, tid("cache-skipped").filter(has_text=f"reason {changes[0]}"))

    skipped()
    _login(page, served)
    page.goto(f"{served.url}/#/runs/{run_id}")
    expect(tid("cache-skipped")).to_have_text("Not cached: reason 0")
    click_across_redraw(tid("tab-details"))
    expect(tid("tabpane-details")).to_be_visible()
    click_across_redraw(tid("run-actions"))
    expect(tid("run-actions-menu")).to_be_visible()
    page.keyboard.press("Escape")
    click_across_redraw(tid("parent-link"))
    expect(tid("run-func-name")).to_have_text("pipeline")


def _selected(page: Any, testid: str) -> list[Any]:
    """The text selected in the page, and whether the element of ``testid`` marked by :func:`_mark` is still the
    one in the page."""
    return page.evaluate("""(testid) => [getSelection().toString(),
      document.querySelector(`[data-testid="${testid}"]`) === window.marked[testid]]""", testid)


def _mark(page: Any, testid: str) -> None:
    """Remember the element of ``testid`` now in the page (see :func:`_selected`)."""
    page.evaluate("""(testid) => { window.marked = window.marked || {};
      window.marked[testid] = document.querySelector(`[data-testid="${testid}"]`); }""", testid)


def test_text_selected_in_the_titles_stays_selected_as_live_events_redraw_them(page: Any, served: Served) -> None:
    """A run's func name selected in the Run panel's title (double-clicked, to copy it) stays selected, the same
    element, as the run's state changes (through the API: a live event), its badge showing the new state; so does
    its id in the Details tab as its record changes again; a resolution's func name selected in the page's title
    stays selected as a run is recorded (its progress beside it changes) and as the resolution is canceled (its badge
    showing it). Was: each title drawn anew when it changed (the resolution's on every event of it), out of the page:
    the selection was lost."""
    from playwright.sync_api import expect

    from sematic_k8s.store.records import utcnow

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    run_id = next(r.id for r in _runs_of(served, running_id, "add") if r.state == "running")
    _login(page, served)
    page.goto(f"{served.url}/#/runs/{run_id}")
    expect(tid("run-state")).to_have_text("running")
    expect(tid("run-func-name")).to_have_text("add")
    tid("run-func-name").dblclick()
    _mark(page, "run-func-name")
    assert _selected(page, "run-func-name") == ["add", True]
    _change_run(served, run_id, state="resolved", ended_at=utcnow())
    expect(tid("run-state")).to_have_text("resolved")
    assert _selected(page, "run-func-name") == ["add", True]
    tid("tab-details").click()  # its id, selected to copy it, as the run's record changes again
    tid("run-id").dblclick()
    _mark(page, "run-id")
    assert _selected(page, "run-id") == [run_id, True]
    _change_run(served, run_id, notes={"cache": {"skipped": "a reason"}}, state="resolved")
    expect(tid("cache-skipped")).to_have_text("Not cached: a reason")
    assert _selected(page, "run-id") == [run_id, True]

    expect(tid("resolution-func")).to_have_text("pipeline")
    tid("resolution-func").dblclick()
    _mark(page, "resolution-func")
    assert _selected(page, "resolution-func") == ["pipeline", True]
    _record_run(served, running_id)
    expect(tid("resolution-progress")).to_have_attribute("data-total", "7")
    assert _selected(page, "resolution-func") == ["pipeline", True]
    httpx.post(f"{served.url}/api/v1/resolutions/{running_id}/cancel",
               headers={"X-API-Key": served.key}).raise_for_status()
    expect(tid("resolution-state")).to_have_text(re.compile(r"^cancel"))
    assert _selected(page, "resolution-func") == ["pipeline", True]


def test_a_retry_recorded_alone_is_shown_live(page: Any, served: Served) -> None:
    """A running run tried again, its update setting its attempts alone (through the API, as a resolver may write
    it), is shown at once: its tag in the graph and the Run panel's Attempts say the new count (was: no live event
    for it, the old count shown until something else of the resolution changed)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    run_id = next(r.id for r in _runs_of(served, running_id, "add") if r.state == "running")
    _change_run(served, run_id, attempts=1, state="running")
    _login(page, served)
    page.goto(f"{served.url}/#/runs/{run_id}")
    tid("tab-details").click()
    expect(tid("run-attempts")).to_have_text("1")
    tag = page.locator(f'[data-testid="run-node"][data-run-id="{run_id}"] [data-testid="run-tag"]')
    for attempts in (2, 3):
        _change_run(served, run_id, attempts=attempts)
        expect(tid("run-attempts")).to_have_text(str(attempts))
        expect(tag).to_have_text(f"{attempts} attempts")


def test_a_run_panel_redrawn_does_not_fetch_its_values_again(page: Any, served: Served) -> None:
    """A run's output whose summary is cut short (a JSON list of 3,000 numbers) is fetched whole once when its Run
    panel shows it, not again each time a live event of the run redraws the panel (was: once per redraw, for a
    cell made and then dropped for the one kept)."""
    from playwright.sync_api import expect

    from sematic_k8s import serialization
    from sematic_k8s.storage.base import put_artifact
    from sematic_k8s.store.records import Batch, utcnow

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    run_id = next(r.id for r in _runs_of(served, running_id, "add") if r.state == "running")
    value = serialization.serialize(list(range(3000)))
    assert "…" in str(value.summary)
    batch = Batch()
    batch.artifacts[value.id] = {**put_artifact(LocalStorage(served.home / "storage"), value), "created_at": utcnow()}
    batch.update_run(run_id, output_id=value.id)
    _write(served, batch)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if f"/artifacts/{value.id}/data" in r.url else None)
    _login(page, served)
    with page.expect_response(lambda r: f"/artifacts/{value.id}/data" in r.url):
        page.goto(f"{served.url}/#/runs/{run_id}")
    for n in range(3):  # the run changes (its notes; another run recorded sends the event): the panel redrawn
        _change_run(served, run_id, notes={"cache": {"skipped": f"reason {n}"}})
        _record_run(served, running_id)
        expect(tid("cache-skipped")).to_have_text(f"Not cached: reason {n}")
    expect(tid("run-output")).to_contain_text("[3000]")  # the whole value (its summary has 20), still shown
    assert len(fetched) == 1, fetched


def test_clicks_on_a_runs_values_as_they_change(page: Any, served: Served) -> None:
    """The Run panel draws a run's values in place: a click on the output's download whose mouse is pressed as the
    run records another output (through the API) and released once the panel shows it downloads the value shown; a
    click on an input's download as another input changes downloads that input (the output's part, or all the
    inputs' rows, were drawn anew with their buttons, out of the page: the click was dropped)."""
    from playwright.sync_api import expect

    from sematic_k8s import serialization
    from sematic_k8s.storage.base import put_artifact
    from sematic_k8s.store.records import Batch, utcnow

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, owner=served.owner)
    run_id = next(r.id for r in _runs_of(served, running_id, "add") if r.state == "running")

    def stored(value: Any) -> str:  # an artifact whose bytes the server has
        s = serialization.serialize(value)
        batch = Batch()
        batch.artifacts[s.id] = {**put_artifact(LocalStorage(served.home / "storage"), s), "created_at": utcnow()}
        _write(served, batch)
        return s.id

    first, second, x, y1, y2 = (stored(v) for v in ("first output", "second output", "the x", "one y", "two y"))
    _change_run(served, run_id, inputs={"x": x, "y": y1}, output_id=first, state="running")
    _login(page, served)
    page.goto(f"{served.url}/#/runs/{run_id}")
    expect(tid("run-output")).to_contain_text("first output")
    with page.expect_download() as got:
        _click_across_redraw(page, tid("tabpane-output").get_by_test_id("artifact-download"),
                             lambda: _change_run(served, run_id, output_id=second, state="running"),
                             tid("run-output").filter(has_text="second output"))
    assert got.value.suggested_filename.startswith(second[:8]), got.value.suggested_filename

    tid("tab-inputs").click()
    row = lambda param: page.locator(f'[data-testid="input-row"][data-param="{param}"]')  # noqa: E731
    expect(row("y")).to_contain_text("one y")
    with page.expect_download() as got:
        _click_across_redraw(page, row("x").get_by_test_id("artifact-download"),
                             lambda: _change_run(served, run_id, inputs={"x": x, "y": y2}, state="running"),
                             row("y").filter(has_text="two y"))
    assert got.value.suggested_filename.startswith(x[:8]), got.value.suggested_filename


def test_a_search_typed_as_a_new_pipeline_appears(page: Any, served: Served) -> None:
    """A search being typed keeps its focus and its text as a live event brings a pipeline the func filter did not
    list (the list's toolbar was drawn anew: the box taken out of the page, the rest of the word typed into
    nothing)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    tid = page.get_by_test_id
    running_id = big.record_fanout(served.store, 3, running=2, func_module="typed", owner=served.owner)
    _login(page, served)
    page.goto(f"{served.url}/#/")
    option = lambda func: tid("func-filter").locator(f'option[value="{func}:pipeline"]')  # noqa: E731
    expect(option("typed")).to_have_count(1)
    search = tid("search")
    search.click()
    page.keyboard.type("pipe")
    expect(page.locator('[data-testid="resolution-row"]').first).to_be_visible()  # searched: "pipe"
    big.record_fanout(served.store, 3, func_module="fresh")  # a pipeline the filter does not list yet
    _record_run(served, running_id)  # a live event: the list asked for again
    expect(option("fresh")).to_have_count(1)
    page.keyboard.type("line")
    expect(search).to_have_value("pipeline")
    expect(search).to_be_focused()


def test_clicks_in_a_changing_list_group(page: Any, served: Served) -> None:
    """A click on a resolution's link in the list whose mouse is pressed as a running resolution of the same
    pipeline records a run (its row, so its group, redrawn) and released once the list shows it, is followed (the
    group was drawn anew with all its rows, out of the page and back: the click was dropped); so is a click on the
    running resolution's own link as its progress changes (its row was drawn anew)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import big_resolution as big

    done_id = big.record_fanout(served.store, 3, func_module="clicks", owner=served.owner)
    running_id = big.record_fanout(served.store, 3, running=2, func_module="clicks", owner=served.owner)
    _login(page, served)
    page.goto(f"{served.url}/#/")
    row = lambda res_id: page.locator(f'[data-testid="resolution-row"][data-id="{res_id}"]')  # noqa: E731
    progress = row(running_id).get_by_test_id("run-progress")
    expect(progress).to_have_text("2/6 resolved")
    _click_across_redraw(page, row(done_id).get_by_test_id("resolution-link"),
                         lambda: _record_run(served, running_id), progress.filter(has_text="2/7 resolved"))
    expect(page.get_by_test_id("resolution-id")).to_have_text(done_id)
    page.go_back()
    _click_across_redraw(page, row(running_id).get_by_test_id("resolution-link"),
                         lambda: _record_run(served, running_id), progress.filter(has_text="2/8 resolved"))
    expect(page.get_by_test_id("resolution-id")).to_have_text(running_id)


def test_values_logs_and_errors(page: Any, served: Served, tmp_path: Path) -> None:
    """The Run panel shows values as people look at them and lets them download every artifact; logs are
    followed while a run runs, searched and downloaded, and refused (with the reason) when recorded in a
    storage this server does not read; a bad or unknown id shows a readable page at once."""
    from playwright.sync_api import expect

    from sematic_k8s.storage.base import log_key
    from sematic_k8s.store.records import Batch

    expect.set_options(timeout=15_000)
    sys.path.insert(0, str(TESTS))
    import values_pipeline as vp

    resolver = sk.LocalResolver(home=served.home, server=served.url, api_key=served.key)
    f = vp.report(12)
    f.resolve(resolver)
    runs = _runs_by_func(served.store, f.id)
    tid = lambda name: page.get_by_test_id(name)  # noqa: E731
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    _login(page, served)

    def open_func(func: str) -> None:
        open_run(page, served.url, runs[func].id)

    open_func("records")  # a list of records: a table
    out = tid("run-output")
    expect(out.get_by_test_id("value-table").locator("tbody tr")).to_have_count(12)
    expect(out.get_by_test_id("value-table").locator("th")).to_have_text(["epoch", "loss", "split"])
    tid("tab-inputs").click()
    expect(page.locator('[data-testid="input-row"][data-param="n"]')).to_contain_text("12")
    tid("tab-output").click()
    with page.expect_download() as dl:
        tid("tabpane-output").get_by_test_id("artifact-download").click()
    import json

    saved = json.loads(Path(dl.value.path()).read_text())
    assert saved[0] == {"epoch": 0, "loss": 1.0, "split": "test"}
    open_func("frame")  # a dataframe: its preview as a table
    expect(tid("run-output").get_by_test_id("value-table").locator("tbody tr")).to_have_count(12)
    expect(tid("run-output")).to_contain_text("12 rows × 3 columns")
    expect(tid("run-output-type")).to_contain_text("DataFrame")
    for func in ("figure", "picture", "drawing"):  # a matplotlib figure, PNG bytes, SVG text: pictures
        open_func(func)
        img = tid("run-output").get_by_test_id("value-image")
        expect(img).to_be_visible()
        assert page.evaluate("(el) => el.complete && el.naturalWidth > 0", img.element_handle()), func
    open_func("config")  # a nested dict: a tree
    expect(tid("run-output").get_by_test_id("json-tree")).to_be_visible()
    expect(tid("run-output")).to_contain_text("optimizer")
    open_func("essay")  # a long text: folded
    # the whole value, not its 500-character summary
    expect(tid("run-output").get_by_test_id("folded")).to_contain_text("(6289 characters)")
    tid("tab-source").click()
    expect(tid("run-source")).to_contain_text("def essay(n: int) -> str:")
    _shot(page, "values")

    # logs: searched, downloaded
    open_func("records")
    tid("tab-logs").click()
    expect(tid("run-logs")).to_contain_text("epoch 11: loss 0.083")
    tid("logs-search").fill("EPOCH 1")
    expect(tid("logs-hit")).to_have_count(3)  # epochs 1, 10, 11
    expect(tid("logs-count")).to_have_text("3 of 12 lines")
    with page.expect_download() as dl:
        tid("logs-download").click()
    assert Path(dl.value.path()).read_text().count("\n") == 12

    # followed while running: a run still running whose log grows (set back by hand: no write un-resolves a run)
    storage = LocalStorage(served.home / "storage")
    essay = runs["essay"]
    with served.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET state = 'running', ended_at = NULL WHERE id = ?", (essay.id,))
    storage.append(log_key(essay.id), b"step 1\n")
    open_func("essay")
    tid("tab-logs").click()
    expect(tid("logs-follow")).to_have_text("following…")
    expect(tid("run-logs")).to_have_text("step 1\n")
    storage.append(log_key(essay.id), b"step 2\n")
    expect(tid("run-logs")).to_have_text("step 1\nstep 2\n")
    # megabytes more at once: read a part at a time, the page holding the last 4 MB of it, the rest said
    more = "".join(f"row {i}: é\n" for i in range(600_000)).encode()
    storage.append(log_key(essay.id), more)
    expect(tid("run-logs")).to_contain_text("row 599999: é", timeout=30_000)
    expect(tid("logs-skipped")).to_contain_text("of earlier output not shown here")
    shown = tid("run-logs").text_content() or ""
    assert 3_000_000 < len(shown) <= 4 << 20 and shown.startswith("row ") and "step 2" not in shown
    with page.expect_download() as dl:
        tid("logs-download").click()  # the whole log, part by part
    assert Path(dl.value.path()).read_bytes() == b"step 1\nstep 2\n" + more
    b = Batch()
    b.update_run(essay.id, state="resolved")
    b.resolution_updates[f.id] = {"settings": {"kind": "cloud", "storage_url": (tmp_path / "elsewhere").as_uri()}}
    served.store.write(b)

    # a cloud resolution's logs in a storage the server does not read: the reason, nothing fetched
    page.reload()
    tid("tab-logs").click()
    expect(tid("run-logs")).to_have_attribute("data-error", "true")
    expect(tid("run-logs")).to_contain_text("SEMATIC_K8S_STORAGE_ALLOW")

    # bad and unknown ids: a readable page at once
    page.goto(f"{served.url}/#/resolutions/not-an-id")
    expect(tid("bad-id")).to_contain_text("ids are 1 to 64 lowercase hex characters", timeout=2000)
    page.goto(f"{served.url}/#/resolutions/{'ab' * 16}")
    expect(tid("resolution-missing")).to_contain_text(f"No resolution {'ab' * 16}", timeout=2000)
    page.goto(f"{served.url}/#/runs/{'cd' * 16}")
    expect(tid("run-missing")).to_contain_text(f"No run {'cd' * 16}", timeout=2000)
    page.goto(f"{served.url}/#/nowhere")
    expect(tid("unknown-page")).to_be_visible(timeout=2000)
    _shot(page, "missing")
    assert problems == [], problems


@sk.func(inline=False)
def shard(i: int) -> int:
    return i


@sk.func
def load_shard(i: int) -> int:
    return shard(i)


def test_a_dead_workers_words_and_last_lines_on_its_run_page(page: Any, served: Served) -> None:
    """A worker pod (on the cluster model) that prints and exits 1 without a result: its run's page says so in
    the recorded words, once, with its last log lines in view (not folded under "traceback")."""
    pytest.importorskip("kubernetes")
    from playwright.sync_api import expect

    from kube_model import Cluster, NodeSpec, Script, Timing
    from sematic_k8s.errors import ResolutionFailed

    storage = LocalStorage(served.home / "storage")
    dying = Script(run=0.05, exit_code=1, logs="reading shard 7\nFatal: shard 7 is corrupt\n")
    f = load_shard(7)
    with Cluster([NodeSpec("node-1", runtime="sim")], behaviour=lambda pod, c: dying, timing=Timing()) as cluster:
        api, loop = _cloud_loop(cluster, served, storage, f.id)
        with pytest.raises(ResolutionFailed) as err:
            loop.run(f)
        api.close()
    words = "WorkerDied: the worker exited with code 1 without a result"
    assert words in str(err.value)
    tid = lambda name: page.get_by_test_id(name)  # noqa: E731
    _login(page, served)
    page.goto(f"{served.url}/#/runs/{err.value.run_id}")
    expect(tid("run-error")).to_contain_text(words)
    lines = tid("run-error-lines")
    expect(lines).to_be_visible()  # in view at once
    expect(lines).to_have_text("last log lines:\nreading shard 7\nFatal: shard 7 is corrupt")
    assert tid("run-error").inner_text().count("without a result") == 1  # said once
    page.goto(f"{served.url}/#/resolutions/{f.id}")
    expect(tid("resolution-error")).to_contain_text(f"raised {words}")


def test_a_run_waiting_for_capacity_says_so_on_its_page_until_it_starts(page: Any, served: Served) -> None:
    """A worker pod the cluster model has no room for: its run's page says what it waits for, live, and stops
    saying so once there is room and it ran."""
    from playwright.sync_api import expect

    with _shard_waiting_for_room(served) as (cluster, run):
        _login(page, served)
        page.goto(f"{served.url}/#/runs/{run.id}")
        waiting = page.get_by_test_id("run-waiting")
        expect(waiting).to_contain_text("Not started: waiting for capacity: 0/1 nodes are available")
        cluster.update_node("node-1", pods=10)
    page.reload()  # recorded straight into the server's database: no live event for the page
    expect(page.get_by_test_id("run-state")).to_have_text("resolved")
    expect(waiting).to_have_count(0)


def test_a_runs_waiting_note_is_shown_live(page: Any, served: Served) -> None:
    """A resolver recording through the server (its HTTP store, as a driver does) notes on a running run what its
    worker pod waits for (the cluster model has no room for it): the Run panel and the page's header say so, and say
    the new words without a reload when they change (a second node, no room on it either: the note set alone, the
    run still running); once there is room and it ran, the note is gone. Was: no live event for a note set alone,
    the old words shown until something else of the resolution changed."""
    from playwright.sync_api import expect

    from kube_model import NodeSpec
    from sematic_k8s.store.http import HttpStore

    expect.set_options(timeout=15_000)
    store = HttpStore(served.url, served.key)
    with _shard_waiting_for_room(served, store) as (cluster, run):
        _login(page, served)
        page.goto(f"{served.url}/#/runs/{run.id}")
        waiting, header = page.get_by_test_id("run-waiting"), page.get_by_test_id("resolution-not-started")
        expect(waiting).to_contain_text("Not started: waiting for capacity: 0/1 nodes are available")
        expect(header).to_contain_text("0/1 nodes are available")
        cluster.add_node(NodeSpec("node-2", runtime="sim", pods=0))
        expect(waiting).to_contain_text("Not started: waiting for capacity: 0/2 nodes are available")
        expect(header).to_contain_text("0/2 nodes are available")
        assert served.store.get_run(run.id).state == "running"
        cluster.update_node("node-2", pods=10)
    store.close()
    expect(page.get_by_test_id("run-state")).to_have_text("resolved")
    expect(waiting).to_have_count(0)


@contextlib.contextmanager
def _shard_waiting_for_room(served: Served, store: Any = None) -> Iterator[tuple[Any, Any]]:
    """A shard(5) resolving on a cluster model whose one node ("node-1") has room for no pod, recorded into
    ``store`` (see :func:`_cloud_loop`): yields the cluster and the shard's run once it is noted waiting; the
    caller makes room. On exit the resolution has ended with 5."""
    pytest.importorskip("kubernetes")
    from kube_model import Cluster, NodeSpec, SimContext, Timing
    from kube_model import Script as Sim
    from sematic_k8s.executors.remote import run_task
    from sematic_k8s.settings import STORAGE_ENV, TASK_ENV
    from sematic_k8s.specs import TaskSpec
    from sematic_k8s.storage.urls import storage_from_url

    def worker(ctx: SimContext) -> int:
        doc = run_task(TaskSpec.from_json(ctx.env[TASK_ENV]), storage_from_url(ctx.env[STORAGE_ENV]))
        return 1 if "error" in doc else 0

    storage = LocalStorage(served.home / "storage")
    f = load_shard(5)
    values: list[Any] = []
    with Cluster([NodeSpec("node-1", runtime="sim", pods=0)], behaviour=lambda pod, c: Sim(func=worker),
                 timing=Timing()) as cluster:
        api, loop = _cloud_loop(cluster, served, storage, f.id, store)
        thread = threading.Thread(target=lambda: values.append(loop.run(f)), daemon=True)
        thread.start()
        [run] = cluster.wait(lambda: [r for r in served.store.runs_of_root(f.id)
                                      if r.func_name == "shard" and (r.notes or {}).get("waiting")], timeout=30)
        try:
            yield cluster, run
        finally:
            thread.join(60)
            api.close()
    assert values == [5]


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
        dagre = c.get("/static/vendor/dagre.esm.js")  # the vendored layout library, imported by layout.js
        assert dagre.status_code == 200 and dagre.headers["content-type"] == "text/javascript; charset=utf-8"
        etag = c.get("/static/layout.js").headers["etag"]
        assert c.get("/static/layout.js", headers={"If-None-Match": etag}).status_code == 304  # revalidated, not resent
        assert c.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_the_api_docs_need_no_other_host(browser: Any, tmp_path: Path) -> None:
    """/docs (Swagger UI) loads its script and styles from this server's vendored files: the page names no other
    origin, and with every request to another host refused (a machine or cluster without internet) Chromium renders
    the API's operations, under the page's policy (was: a CDN's script and CSS and FastAPI's favicon: a blank page
    offline). The spec is in the page (it is sandboxed: ``test_the_api_docs_cannot_read_the_dashboards_key``), the
    server's own ``/openapi.json``; "Try it out" is off."""
    with serve(tmp_path) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        paths = c.get("/openapi.json").json()["paths"]
        docs = c.get("/docs")
        assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]
        urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', docs.text)
        assert sorted(urls) == ["/static/vendor/swagger-ui-bundle.js", "/static/vendor/swagger-ui.css", "data:,"], urls
        assert not re.search(r"https?://", docs.text), docs.text  # no other origin named anywhere in the page
        for url in urls:
            assert url == "data:," or c.get(url).status_code == 200, url
        assert c.get("/redoc").status_code == 404  # ReDoc is not served (it too came from a CDN)

        context = browser.new_context()
        elsewhere: list[str] = []

        def only_this_host(route: Any) -> None:
            if route.request.url.startswith(f"{s.url}/"):
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()
        context.route("**/*", only_this_host)
        try:
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{s.url}/docs")
            operations = page.locator(".opblock")
            operations.nth(sum(map(len, paths.values())) - 1).wait_for(timeout=WAIT_MS)
            assert operations.count() == sum(map(len, paths.values()))
            health = page.locator("#operations-health-health_api_v1_health_get")
            health.locator(".opblock-summary").click()
            health.locator(".responses-wrapper").wait_for(timeout=WAIT_MS)  # the operation open, documented
            assert health.get_by_role("button", name="Try it out").count() == 0
        finally:
            context.close()
        assert elsewhere == [] and problems == [], (elsewhere, problems)


READ_STORAGE_JS = """() => Object.fromEntries(["localStorage", "sessionStorage", "document.cookie"].map((what) => {
  try {
    const value = what === "document.cookie" ? document.cookie : window[what].getItem("sematic_k8s_api_key");
    return [what, value];
  } catch (e) {
    return [what, e.name];
  }
}))"""


def test_the_api_docs_cannot_read_the_dashboards_key(browser: Any, tmp_path: Path) -> None:
    """The dashboard keeps the user's API key in its origin's localStorage, and /docs is served by the same server:
    a script running in the API docs page (Swagger UI's own code, a flaw in it) reads none of it. The page is
    sandboxed (``sandbox allow-scripts``: an opaque origin, whose storage is not the dashboard's), and still lists
    every operation of the API; the page asks the server for nothing but its files (was: the page of this origin,
    its script read the key as the dashboard does)."""
    from playwright.sync_api import expect

    with serve(tmp_path) as s, new_page(browser) as dashboard:
        operations = sum(map(len, httpx.get(f"{s.url}/openapi.json", timeout=30).json()["paths"].values()))
        dashboard.goto(s.url + "/")
        dashboard.get_by_test_id("api-key-input").fill(s.key)
        dashboard.get_by_test_id("api-key-save").click()
        expect(dashboard.get_by_test_id("api-key-form")).to_be_hidden()  # the dashboard took the key, and kept it
        assert dashboard.evaluate(READ_STORAGE_JS) == {"localStorage": s.key, "sessionStorage": None,
                                                       "document.cookie": ""}

        page = dashboard.context.new_page()  # the same browser profile: the dashboard's storage is there
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        page.goto(f"{s.url}/docs")
        page.locator(".opblock").nth(operations - 1).wait_for(timeout=WAIT_MS)
        assert page.locator(".opblock").count() == operations  # the API's reference, all of it
        read = page.evaluate(READ_STORAGE_JS)
        assert read == {"localStorage": "SecurityError", "sessionStorage": "SecurityError",
                        "document.cookie": "SecurityError"}, read
        assert page.evaluate("window.origin") == "null"  # an opaque origin: not the dashboard's
        assert s.key not in page.content()
        assert sorted(asked) == [f"{s.url}/docs", f"{s.url}/static/vendor/swagger-ui-bundle.js",
                                 f"{s.url}/static/vendor/swagger-ui.css"], asked
        # nor may it read an answer of the server (why the spec is in the page): a fetch is a CORS request of origin
        # "null", which no answer allows
        assert page.evaluate("fetch('/openapi.json').then((r) => r.status, (e) => e.name)") == "TypeError"


def test_another_site_cannot_frame_the_dashboard(browser: Any, tmp_path: Path) -> None:
    """Clickjacking: a page of another site framing the dashboard of a local-mode server (no key: its buttons
    cancel, label and re-run resolutions, and its own requests pass the server's cross-site checks) would let
    that site trick a click. The page forbids being framed by every path that answers it (``/``, and
    ``/static/index.html``: its file's own path; was: that one with no policy nor X-Frame-Options, the dashboard ran
    in the frame), and so does the API docs page; it still works on its own, under that policy."""
    paths = ["/", "/static/index.html", "/docs"]
    with serve(tmp_path, api_keys_required=False) as s:
        with new_page(browser) as page:
            page.set_content("window.framed = 0".join(("<script>", "</script>")) + "".join(
                f'<iframe src="{s.url}{p}" onload="window.framed += 1"></iframe>' for p in paths))
            page.wait_for_function(f"window.framed === {len(paths)}", timeout=WAIT_MS)
            for path, frame in zip(paths, page.frames[1:], strict=True):
                assert frame.query_selector('[data-testid="nav-home"], #swagger-ui') is None, f"{path} in a frame"
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(f"{s.url}/")
            page.get_by_test_id("live-status").wait_for(timeout=WAIT_MS)
            page.wait_for_function("document.querySelector('[data-testid=\"app\"]').children.length > 0",
                                   timeout=WAIT_MS)
            assert problems == [], problems


def _cloud_loop(cluster: Any, served: Served, storage: LocalStorage, root_id: str,
                store: Any = None) -> tuple[Any, Any]:
    """A client of the cluster model and a cloud resolution loop recording into ``store`` (the served store itself
    by default: no live events), its funcs' workers as pods in the model's namespace "runs"."""
    from sematic_k8s.executors.inline import InlineExecutor
    from sematic_k8s.executors.inline_or_remote import InlineOrRemoteExecutor
    from sematic_k8s.executors.kubernetes import KubernetesExecutor
    from sematic_k8s.resolvers.loop import ResolutionLoop
    from sematic_k8s.specs import ResolutionSettings
    from sematic_k8s.storage.urls import storage_url

    cluster.namespace("runs")
    api = cluster.client()
    ex = KubernetesExecutor(storage, storage_url(storage), "127.0.0.1:5000/p@sha256:" + "cd" * 32,
                            namespace="runs", api_client=api, env={}, owner=False)
    loop = ResolutionLoop(served.store if store is None else store, storage,
                          InlineOrRemoteExecutor(InlineExecutor(1), ex), ResolutionSettings(root_id=root_id),
                          kind="cloud")
    return api, loop
