"""Cross-site requests, sent by Chromium from a page of another site, to a local-mode server (no key: the laptop's
``sematic-k8s server --local``, whose every action a request without a credential may take): forms and fetches that
would cancel a resolution, tag it, take it over, re-run it, make an API key or write records. The browser sends what
a page may send (a form's three encodings, a "no-cors" fetch of text, a CORS fetch of JSON, a beacon); nothing of it
is applied. The dashboard itself authenticates by a header (``X-API-Key``, kept in its origin's localStorage): no
cookie, so on a server with keys another site's request has no credential at all."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_pages import new_page
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.wire import batch_to_json, dumps
from serving import Served, record_resolution, serve

ATTEMPTS_JS = """async ([targets, done]) => {
  const sent = [];
  const form = (url, enctype, body) => new Promise((resolve) => {
    const name = `f${sent.length}`;
    const frame = Object.assign(document.createElement("iframe"), { name });
    frame.addEventListener("load", () => resolve(`form ${enctype} ${url}`));
    document.body.append(frame);
    const f = Object.assign(document.createElement("form"), { method: "POST", action: url, enctype, target: name });
    // a text/plain form sends `name=value`: a JSON object whose last string swallows the `=`
    const cut = body.lastIndexOf('"}');
    const field = cut > 0 ? [body.slice(0, cut) + ',"x":"', '"}'] : ["x", body];
    f.append(Object.assign(document.createElement("input"), { name: field[0], value: field[1] }));
    document.body.append(f);
    f.submit();
  });
  const tries = [];
  for (const [url, body] of targets) {
    for (const enctype of ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]) {
      tries.push(form(url, enctype, body));
    }
    tries.push(fetch(url, { method: "POST", mode: "no-cors", body, headers: { "Content-Type": "text/plain" } })
      .then(() => `no-cors fetch ${url}`, (e) => `no-cors fetch ${url}: ${e}`));
    tries.push(fetch(url, { method: "POST", mode: "no-cors", body, headers: { "Content-Type": "application/json" } })
      .then(() => `no-cors json fetch ${url}`, (e) => `no-cors json fetch ${url}: ${e}`));
    tries.push(fetch(url, { method: "POST", body, headers: { "Content-Type": "application/json" } })
      .then((r) => `cors fetch ${url}: ${r.status}`, (e) => `cors fetch ${url}: ${e}`));
    try {
      sent.push(`beacon ${url}: ${navigator.sendBeacon(url, new Blob([body], { type: "application/json" }))}`);
    } catch (e) {
      sent.push(`beacon ${url}: ${e}`);
    }
    try {
      sent.push(`text beacon ${url}: ${navigator.sendBeacon(url, body)}`);
    } catch (e) {
      sent.push(`text beacon ${url}: ${e}`);
    }
  }
  return [...sent, ...(await Promise.all(tries))];
}"""


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>win a prize</title><p>a page of another site</p>")

    def do_POST(self) -> None:  # noqa: N802 - a beacon's answer, had one come here
        self.do_GET()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[int]:
    """A real web server of another site on 127.0.0.1: its port (its page at ``localhost`` is cross-site to the
    local server's ``127.0.0.1``; at ``127.0.0.1`` it is same-site, another origin)."""
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        yield site.server_address[1]
    finally:
        site.shutdown()
        site.server_close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path, api_keys_required=False) as s:
        yield s


@pytest.mark.parametrize("site", ["localhost", "127.0.0.1"])
def test_another_sites_page_cannot_act_on_a_local_server(browser: Any, local: Served, attacker: int,
                                                         site: str) -> None:
    """From a page of another site (``localhost``: cross-site) or of another port (``127.0.0.1``: same-site, another
    origin), Chromium sends a cancel, a tag, a take-over, a rerun, a new API key and a store write (a resolution of
    the page's) to a local-mode server, by every means a page has: nothing is applied (the Guard: a JSON content type,
    which a form or a "no-cors" fetch cannot send, and this server's own ``Origin``; a CORS fetch of JSON is stopped at
    its preflight: no route answers OPTIONS, no answer has CORS headers)."""
    root = record_resolution(local.url, "", kind="local", state="running")
    planted = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=planted, root_func_path="evil:planted", state="running",
                                          settings={"kind": "local"}, created_at=utcnow()))
    batch.add_run(RunRecord(id=planted, root_id=planted, parent_id=None, func_path="evil:planted",
                            func_name="planted", state="running", created_at=utcnow()))
    api = f"{local.url}/api/v1"
    targets = [[f"{api}/resolutions/{root}/cancel", "{}"],
               [f"{api}/resolutions/{root}/labels", json.dumps({"add": ["pwned"], "note": "pwned"})],
               [f"{api}/store/take_over/{root}", "{}"],
               [f"{api}/resolutions/{root}/rerun", "{}"],
               [f"{api}/api-keys", json.dumps({"name": "pwned", "admin": True})],
               [f"{api}/store/write", dumps(batch_to_json(batch)).decode()]]
    with local.client(key=None) as c:
        before = c.get(f"/api/v1/resolutions/{root}").json()
        keys_before, all_before = c.get("/api/v1/api-keys").json(), c.get("/api/v1/resolutions").json()
    with new_page(browser) as page:
        page.goto(f"http://{site}:{attacker}/")
        outcomes = page.evaluate(ATTEMPTS_JS, [targets, len(targets)])
        assert len(outcomes) == 8 * len(targets), outcomes
        page.goto(f"http://{site}:{attacker}/")  # a beacon is sent by then (its page unloaded)
    with local.client(key=None) as c:
        after = c.get(f"/api/v1/resolutions/{root}").json()
        assert after == before, outcomes  # not canceled, tagged, noted, taken over
        assert c.get("/api/v1/api-keys").json() == keys_before, outcomes
        assert c.get(f"/api/v1/resolutions/{planted}").status_code == 404, outcomes
        assert c.get("/api/v1/resolutions").json() == all_before, outcomes  # no rerun, nothing written
    assert local.store.get_resolution(root).state == "running"
