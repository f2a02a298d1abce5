"""Client-written text in the dashboard, in Debian's Chromium: func names, a root func path, a note, an error's message
and traceback, log lines, an artifact's type and summary (its repr, a picture preview whose bytes are markup, a
table preview), JSON values drawn as pictures (an SVG with a script, handlers, a javascript: link, an external image
and a frame, as text and as bytes), as a table and as a tree (payloads as keys, a "__proto__" key), notes that name
runs, a run's waiting and cache-skip notes, a resolution's image, cache namespace and rerun mode, written through
the API as any key holder (or a driver's token) can, before the page opens and while it is open (drawn from its live
events). None becomes markup: no element, script or event handler of theirs is in the page, nothing of theirs runs
(no dialog, no global set), and the page asks no other host for anything. Every view that shows them is opened: the
index, the graph and the timeline, each tab of the run panel."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_pages import VIEWPORT, log_in, new_page, open_run
from sematic_k8s.serialization import content_id, serialize
from sematic_k8s.storage.base import log_key
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from serving import Served, serve

MARK = "sk-pwned"
PAYLOADS = [f'<img src="http://127.0.0.2:9/{MARK}" onerror="window.__pwned=1">',
            f"<script>window.__pwned=1</script><b class='{MARK}'>bold</b>",
            f'"><svg onload="window.__pwned=1" class="{MARK}">', "javascript:window.__pwned=1//",
            f"</textarea></code></pre><iframe src='http://127.0.0.2:9/{MARK}'></iframe>"]
HOSTILE = " ".join(PAYLOADS)
# what injected markup would leave in the page (any of the payloads' elements or handlers)
INJECTED_JS = f"""() => [...document.querySelectorAll(
    '[onerror], [onload], iframe, script:not([src]), .{MARK}, img[src*="{MARK}"], a[href^="javascript:"]')]
    .map((el) => el.outerHTML.slice(0, 120))"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with new_page(browser, viewport=VIEWPORT) as p:
        yield p


# an SVG shown as a picture (a JSON string, or bytes): its script, handlers and links, had the page made it markup
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" onload="window.__pwned=1">'
       '<script>window.__pwned=1</script><image href="http://127.0.0.2:9/svg-image" width="9" height="9"/>'
       '<a xlink:href="javascript:window.__pwned=1"><text y="20">click</text></a>'
       '<foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" src="http://127.0.0.2:9/svg-frame"/>'
       '</foreignObject></svg>')
# JSON values the dashboard draws as a picture, a table and a tree: payloads as their text, keys and columns
JSON_VALUES = {"svg_text": SVG, "svg_bytes": SVG.encode(),
               "records": [{PAYLOADS[0]: PAYLOADS[1], PAYLOADS[2]: PAYLOADS[4]}, {PAYLOADS[3]: HOSTILE}],
               "tree": {"__proto__": {"polluted": 1}, PAYLOADS[1]: {PAYLOADS[0]: [HOSTILE, {PAYLOADS[2]: 1}]},
                        "n": list(range(200)), "x": HOSTILE * 3}}


def _record_hostile(served: Served, state: str = "failed") -> tuple[str, str]:
    """A resolution in ``state`` (failed, or running: its child run waiting) whose every free-form field is a payload:
    its id, and its child run's."""
    ended = utcnow() if state == "failed" else None
    root, child = uuid.uuid4().hex, uuid.uuid4().hex
    payload = HOSTILE.encode()
    art = content_id("pickle", payload)
    served.home.joinpath("storage").mkdir(exist_ok=True)
    batch = Batch()
    batch.artifacts[art] = {"id": art, "format": "pickle", "type_name": HOSTILE[:256], "size": len(payload),
                            "summary": {"repr": HOSTILE, "preview": {"kind": "image", "mime": "image/png",
                                                                      "base64": '" onerror="window.__pwned=1'}},
                            "created_at": utcnow(), "inline": payload}
    table = content_id("pickle", payload + b"table")
    batch.artifacts[table] = {"id": table, "format": "pickle", "type_name": HOSTILE[:256], "size": len(payload) + 5,
                              "summary": {"repr": HOSTILE, "preview": {
                                  "kind": "table", "columns": PAYLOADS, "shape": [2, len(PAYLOADS)],
                                  "rows": [PAYLOADS, [HOSTILE] * len(PAYLOADS)]}},
                              "created_at": utcnow(), "inline": payload + b"table"}
    values = {name: serialize(v) for name, v in JSON_VALUES.items()}
    for v in values.values():
        batch.artifacts[v.id] = {**v.record(), "created_at": utcnow(), "inline": v.payload}
    inputs = {HOSTILE[:50]: art, "table": table, **{name: v.id for name, v in values.items()}}
    batch.add_resolution(ResolutionRecord(id=root, root_func_path=f"evil:{HOSTILE[:200]}", state=state,
                                          settings={"kind": "local", "rerun_from": "javascript:window.__pwned=1",
                                                    "rerun_mode": HOSTILE[:100], "cache_namespace": HOSTILE[:100]},
                                          image=HOSTILE[:200], note=HOSTILE, tags=["ok"], error=HOSTILE,
                                          created_at=utcnow(), ended_at=ended))
    error = {"type": HOSTILE[:200], "message": HOSTILE, "traceback": HOSTILE, "mro": [HOSTILE[:100]]}
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path=f"evil:{HOSTILE[:200]}",
                            func_name=HOSTILE[:200], state=state, output_ref={"run": child}, error=error,
                            source_text=HOSTILE, source_file=HOSTILE[:200], created_at=utcnow(),
                            started_at=utcnow(), ended_at=ended))
    batch.add_run(RunRecord(id=child, root_id=root, parent_id=root, func_path=f"evil:{HOSTILE[:200]}",
                            func_name=HOSTILE[:200], state=state, inputs=inputs,
                            input_refs={k: {"artifact": v} for k, v in inputs.items()}, output_id=art, error=error,
                            notes={"reused_from": "javascript:window.__pwned=1", "executor": {"pod": HOSTILE},
                                   "waiting": HOSTILE, "cache": {"skipped": HOSTILE}},
                            source_text=HOSTILE, created_at=utcnow(), started_at=utcnow(), ended_at=ended))
    store = HttpStore(served.url, served.key)
    try:
        store.write(batch)
    finally:
        store.close()
    for run_id in (root, child):
        log = served.home / "storage" / log_key(run_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("\n".join(PAYLOADS) + "\n\x1b[31mred\x1b[0m\n")
    return root, child


def test_client_written_text_never_becomes_markup_in_the_dashboard(page: Any, served: Served) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    root, child = _record_hostile(served)
    ran: list[str] = []
    page.on("dialog", lambda d: (ran.append(f"dialog {d.message}"), d.dismiss()))
    page.on("request", lambda r: ran.append(f"request {r.url}") if not r.url.startswith(served.url) else None)
    log_in(page, served.url, served.key)
    tid = page.get_by_test_id

    def clean(where: str) -> None:
        page.wait_for_timeout(300)  # an image's error handler, had one been made, has fired by then
        injected = page.evaluate(INJECTED_JS)
        assert not injected, (where, injected)
        assert page.evaluate("window.__pwned") is None, where
        assert not ran, (where, ran)

    page.goto(served.url + "/#/")
    expect(page.locator("main")).to_contain_text(HOSTILE[:40])  # shown, as text
    clean("index")
    live, live_child = _record_hostile(served, "running")  # recorded while the page is open: drawn from its live
    expect(page.locator(f'[data-testid="resolution-link"][title="{live}"]')).to_have_count(1)  # events
    clean("index, a resolution drawn live")
    open_run(page, served.url, live_child)
    expect(tid("run-waiting")).to_contain_text("<script>")  # a run waiting: why, as text
    clean("a running resolution's waiting run")
    page.goto(f"{served.url}/#/resolutions/{root}")
    expect(tid("run-node").first).to_be_visible()
    clean("graph")
    tid("view-timeline").click()
    clean("timeline")
    open_run(page, served.url, child)
    for tab in ("inputs", "output", "source", "logs", "details"):
        tid(f"tab-{tab}").click()
        page.wait_for_timeout(500)
        if tab == "inputs":  # the SVGs drawn as pictures, the tables and the tree made: of their text alone
            expect(tid("tabpane-inputs").get_by_test_id("json-tree")).to_have_count(1)
            clean("run panel: inputs, drawn")
            expect(tid("tabpane-inputs").locator("img[src^='data:image/svg+xml']")).to_have_count(2)
            expect(tid("tabpane-inputs").get_by_test_id("value-table")).to_have_count(2)
            tid("tabpane-inputs").locator("details").evaluate_all(  # every long value and branch of the tree open
                "(all) => all.forEach((d) => { d.open = true; })")
            expect(tid("tabpane-inputs")).to_contain_text("window.__pwned=1")
            assert page.evaluate("({}).polluted") is None  # a "__proto__" key is a key
        clean(f"run panel: {tab}")
    open_run(page, served.url, root)
    tid("tab-logs").click()
    expect(tid("tabpane-logs")).to_contain_text("<script>")  # the log's lines, as text
    clean("root's logs")


def test_a_download_is_named_by_the_dashboard_never_by_the_record(page: Any, served: Served) -> None:
    """A run's output recorded in a format of the writer's choosing (``html``: its id hashes that format, so its bytes
    verify), its type named ``report.exe``, and a func name holding a right-to-left override and a path: the download
    of the value is ``<id>-report.exe.bin`` and that of the log ``<id>-..._evil_gol.exe.log``: the extension is the
    dashboard's (``.json``, ``.pickle``, else ``.bin``; ``.log``), the rest letters, digits, ``_``, ``.`` and ``-``.
    Was: ``<id>-report.exe.html``, a page of the writer's saved for the user to open, and the func name as written."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    root = uuid.uuid4().hex
    page_bytes = b"<html><script>alert(document.domain)</script></html>"
    art = content_id("html", page_bytes)
    func_name = "../evil\u202egol.exe"
    batch = Batch()
    batch.artifacts[art] = {"id": art, "format": "html", "type_name": "report.exe", "size": len(page_bytes),
                            "summary": {"repr": "a report"}, "created_at": utcnow(), "inline": page_bytes}
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:pipeline", state="resolved",
                                          settings={"kind": "local"}, created_at=utcnow(), ended_at=utcnow()))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:pipeline", func_name=func_name,
                            state="resolved", output_id=art, created_at=utcnow(), started_at=utcnow(),
                            ended_at=utcnow()))
    store = HttpStore(served.url, served.key)
    try:
        store.write(batch)
    finally:
        store.close()
    log = served.home / "storage" / log_key(root)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("a line\n")
    log_in(page, served.url, served.key)
    open_run(page, served.url, root)
    tid = page.get_by_test_id
    tid("tab-output").click()
    with page.expect_download() as value:
        tid("tabpane-output").get_by_test_id("artifact-download").click()
    tid("tab-logs").click()
    expect(tid("tabpane-logs")).to_contain_text("a line")
    with page.expect_download() as logged:
        tid("logs-download").click()
    assert value.value.suggested_filename == f"{art[:8]}-report.exe.bin"
    assert Path(value.value.path()).read_bytes() == page_bytes  # the bytes as recorded, under the dashboard's name
    assert logged.value.suggested_filename == f"{root[:8]}-.._evil_gol.exe.log"
