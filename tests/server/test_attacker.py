"""An attacker's view of the trust boundary, over real HTTP against a real uvicorn server: what a revoked key, a
driver's token or a client-written record can still reach once the checks in ``test_security.py`` and
``test_hostile_records.py`` have passed. Each test failed before the fix it names."""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import infra
from sematic_k8s import settings
from sematic_k8s.packaging import compute_context, ensure_image
from sematic_k8s.packaging.push import push_image
from sematic_k8s.serialization import content_id
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.wire import batch_to_json, dumps
from serving import Served, record_resolution, serve, wait_for, write_through_api


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


# -- revocation reaches requests already open ---------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A server over SQLite, or over PostgreSQL (its live events then go through the database)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with serve(tmp_path, url) as s:
        yield s


def recorded_artifact(served: Served, payload: bytes) -> str:
    """The id of a JSON artifact of ``payload``, its record written through the API (its bytes not stored)."""
    art = content_id("json", payload)
    batch = Batch()
    batch.artifacts[art] = {"id": art, "format": "json", "type_name": "dict", "summary": None, "size": len(payload),
                            "created_at": utcnow()}
    write_through_api(served.url, served.key, batch)
    return art


def test_a_revoked_key_gets_no_more_live_events_on_its_open_stream(any_db: Served) -> None:
    """A key revoked while its ``/events`` stream is open (the dashboard keeps one open for hours): the stream
    sends no event recorded after the revocation and ends; the next request on the same keep-alive connection is
    refused. Was: the stream went on sending every run's and resolution's state change for as long as it stayed
    open."""
    served = any_db
    with served.client(key=served.admin_key) as admin:
        alice = admin.post("/api/v1/api-keys", json={"name": "alice"}).json()
    lines: list[str] = []
    ended = threading.Event()
    with httpx.Client(base_url=served.url, headers={"X-API-Key": alice["key"]}, timeout=60) as c:
        def follow() -> None:
            try:
                with c.stream("GET", "/api/v1/events") as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        lines.append(line)
            finally:
                ended.set()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        wait_for(lambda: ": connected" in lines, 10, what="the stream to open")
        before = record_resolution(served.url, served.key, kind="cloud", state="running")
        wait_for(lambda: any(before in line for line in lines), 10, what="an event before the revocation")
        with served.client(key=served.admin_key) as admin:
            assert admin.post(f"/api/v1/api-keys/{alice['id']}/revoke", json={}).json() == {"revoked": 1}
        after = record_resolution(served.url, served.key, kind="cloud", state="running")
        assert ended.wait(20), "the revoked key's stream stayed open"
        assert not any(after in line for line in lines), lines
        assert any("revoked" in line for line in lines), lines  # it says why it ends
        r = c.get(f"/api/v1/resolutions/{before}")  # the same client: its keep-alive connection
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        thread.join(5)



def _admitted(url: str, key: str, method: str, path: str, body: bytes) -> socket.socket:
    """A connection whose request (``Expect: 100-continue``) the server admitted with ``key``: its head sent, the
    server's "100 Continue" read (sent once the request is let in and its body first waited for), its body not."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 100 Continue"), got
    return sock


def _answer(sock: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize("request_kind", ["write", "labels"])
def test_a_key_revoked_while_a_requests_body_is_on_its_way_records_nothing(any_db: Served, request_kind: str) -> None:
    """A request let in with a key, its body then held back (a slow link, or on purpose: ``Expect:
    100-continue`` makes the server say when it has let the request in) while the key is revoked: 401 once the body
    has come, nothing of it applied. Was: applied after the revocation (200), for up to ``--body-timeout`` after it,
    by the fast path's store write and by the other routes alike."""
    served = any_db
    with served.client(key=served.admin_key) as admin:
        mallory = admin.post("/api/v1/api-keys", json={"name": "mallory"}).json()
    root = uuid.uuid4().hex
    if request_kind == "write":
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="running",
                                              settings={"kind": "local"}, created_at=utcnow()))
        batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:f", func_name="f",
                                state="running", created_at=utcnow()))
        path, body = "/api/v1/store/write", dumps(batch_to_json(batch))
    else:
        root = record_resolution(served.url, served.key, kind="cloud", state="running")
        path, body = f"/api/v1/resolutions/{root}/labels", b'{"note": "written after the revocation"}'
    sock = _admitted(served.url, mallory["key"], "POST", path, body)
    with sock:
        with served.client(key=served.admin_key) as admin:
            assert admin.post(f"/api/v1/api-keys/{mallory['id']}/revoke", json={}).json() == {"revoked": 1}
        sock.sendall(body)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"revoked" in answer, answer
    recorded = served.store.get_resolution(root)
    if request_kind == "write":
        assert recorded is None
    else:
        assert recorded is not None and not recorded.note


# -- a record never chooses the image a client runs --------------------------------------------------------

def _pushed_image(client: Any, repo: str, tag: str | None = None) -> str:
    """A one-layer image of random bytes (nothing pulled) pushed as ``repo:tag``: its ``repo@sha256:...``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().bytes * 1000
        info = tarfile.TarInfo("blob.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = tag or uuid.uuid4().hex[:12]
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    try:
        return push_image(client, repo, tag, progress=lambda _: None)
    finally:
        client.images.remove(f"{repo}:{tag}")


class _NoDocker:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"docker was used ({name}): nothing had to be built")


def test_a_rerun_never_takes_a_recorded_image_from_outside_the_resolvers_repository(served: Served,
                                                                                     tmp_path: Path) -> None:
    """A resolution's driver token may update its own record; one (a dependency of an inline func, running in the
    driver beside the token) sets its image to another repository's, keeping the build hash. The CloudResolver
    re-running it with the code unchanged reuses a recorded image only from the repository it pushes to, so it
    takes its own image (a tag for the hash already there) and never looks the other one up. Was: "image: reusing
    recorded <the other repository's image>", which the driver Job then ran with the user's new token."""
    base_image = infra.require_docker()
    client = infra.docker_client()
    root = tmp_path / "project"
    (root / "attackpipe").mkdir(parents=True)
    (root / "attackpipe" / "__init__.py").write_text(f'NONCE = "{uuid.uuid4().hex}"\n')
    ctx = compute_context(root, base_image)
    ours = f"{infra.REGISTRY}/sk-attacker-ours-{uuid.uuid4().hex[:8]}"
    own_image = _pushed_image(client, ours, ctx.tag)  # what the resolver pushed for this code
    theirs = _pushed_image(client, f"{infra.REGISTRY}/sk-attacker-theirs-{uuid.uuid4().hex[:8]}")

    res_id = uuid.uuid4().hex
    user = HttpStore(served.url, served.key)
    driver = HttpStore(served.url, user.mint_token(res_id))
    try:
        first = Batch()
        first.add_resolution(ResolutionRecord(id=res_id, root_func_path="attackpipe:pipeline", state="running",
                                              image=own_image, build_hash=ctx.context_hash,
                                              settings={"kind": "cloud"}, created_at=utcnow()))
        driver.write(first)
        driver.write(Batch(resolution_updates={res_id: {"image": theirs}}))  # its own record: allowed
        res = user.get_resolution(res_id)
    finally:
        driver.close()
        user.close()
    assert res.image == theirs and res.build_hash == ctx.context_hash
    lines: list[str] = []
    image = ensure_image(root, ours, base_image, recorded=(res.build_hash, res.image), progress=lines.append,
                         client=_NoDocker())
    assert image.digest_ref == own_image and not image.built, lines
    assert not any("reusing recorded" in line for line in lines), lines
    assert any(f"not in {ours}" in line for line in lines), lines


# -- a record never writes control sequences to a terminal --------------------------------------------------

ESCAPES = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\x1b[8m\x9b31m\r\x08"  # clipboard write (OSC 52), clear, hide, C1 CSI


def test_the_cli_shows_a_records_control_characters_and_never_sends_them_to_the_terminal(served: Served,
                                                                                          tmp_path: Path) -> None:
    """A func name, an error and a note holding terminal control sequences (written by any key holder, or the
    resolution's driver token), read by someone else with ``sematic-k8s runs list``, ``runs show`` and
    ``resolutions show``: each control character is printed as its escape (``\\x1b``), none reaches the
    terminal. Was: printed as is, so a record could write the reader's clipboard, clear the screen or hide
    lines."""
    root = record_resolution(served.url, served.key, kind="cloud", state="failed")
    child = uuid.uuid4().hex
    batch = Batch(resolution_updates={root: {"error": f"boom{ESCAPES}"}})
    batch.new_runs[child] = {"id": child, "root_id": root, "parent_id": root, "func_path": "m:f",
                             "func_name": f"f{ESCAPES}", "state": "failed", "created_at": utcnow(),
                             "error": {"type": "ValueError", "message": f"bad{ESCAPES}", "traceback": ESCAPES}}
    store = HttpStore(served.url, served.key)
    try:
        store.write(batch)
        store.label_resolution(root, note=f"see{ESCAPES}", set_note=True)
    finally:
        store.close()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)},
           settings.SERVER_ENV: served.url, settings.API_KEY_ENV: served.key or "", settings.HOME_ENV: str(tmp_path)}
    for args in (["runs", "list", "--root-id", root], ["runs", "show", child], ["resolutions", "show", root]):
        done = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", *args], env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        out = done.stdout.decode()
        shown = [c for c in out if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0]
        assert not shown, (args, shown)
        assert "\\x1b]52;c;" in out, (args, out)


# -- a driver's token and other resolutions -----------------------------------------------------------------

def test_a_token_learns_nothing_of_another_resolution_through_an_artifacts_storage(served: Served) -> None:
    """A driver's token may read an artifact by its content id, but not ask for it "from the storage resolution X
    recorded" when it may not read X: 403, rather than an answer that names X's recorded storage (a 409 quoting
    its URL) or reads from it. Its own resolution, and no resolution at all, still answer."""
    payload = b'{"v": 42}'
    art = content_id("json", payload)
    other = record_resolution(served.url, served.key, kind="cloud", state="running",
                              storage_url="s3://their-private-bucket/artifacts")
    own = uuid.uuid4().hex
    user = HttpStore(served.url, served.key)
    try:
        token = user.mint_token(own)
        batch = Batch()
        batch.artifacts[art] = {"id": art, "format": "json", "type_name": "dict", "summary": None,
                                "size": len(payload), "created_at": utcnow()}
        user.write(batch)
        LocalStorage(served.home / "storage").put(artifact_key(art), payload)  # the server's own storage
    finally:
        user.close()
    with served.client(key=token) as driver:
        r = driver.get(f"/api/v1/artifacts/{art}/data", params={"resolution_id": other})
        assert r.status_code == 403 and "their-private-bucket" not in r.text, r.text
        assert driver.get(f"/api/v1/artifacts/{art}/data").content == payload
        assert driver.get(f"/api/v1/artifacts/{art}/data", params={"resolution_id": own}).content == payload


def test_the_cli_shows_control_characters_of_a_servers_error_as_escapes(served: Served, tmp_path: Path) -> None:
    """A server's refusal can quote a record: ``sematic-k8s logs`` of a run whose resolution recorded a storage URL
    this server does not read is refused (409) quoting that URL, written by any key holder (or its driver's token)
    with terminal control sequences in it. The CLI's one error line shows each control character as its escape.
    Was: printed as is on stderr, so a record could write the reader's clipboard or clear the screen."""
    root = record_resolution(served.url, served.key, kind="cloud", state="failed",
                             storage_url=f"s3://bucket/x{ESCAPES}")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)},
           settings.SERVER_ENV: served.url, settings.API_KEY_ENV: served.key or "", settings.HOME_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "sematic_k8s.cli", "logs", root], env=env, capture_output=True,
                          timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 1 and "recorded in s3://bucket/x" in err, err
    shown = [c for c in err if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0]
    assert not shown, shown
    assert "\\x1b]52;c;" in err, err


# -- a link in the server's local storage --------------------------------------------------------------------

def test_the_server_follows_no_symbolic_link_in_its_local_storage(served: Served, tmp_path: Path) -> None:
    """Whoever may write the server's local storage directory (a local resolution of another user, on a machine
    they share) makes a run's log, or an artifact's bytes, a symbolic link to a file only the server may read (its
    database, its own environment in /proc/self/environ), also in a directory of its own linked where a directory of
    keys goes, then reads it through the API with any key: 409, the link not followed, nothing of the file sent. Was:
    its bytes, as the run's log (or, for an artifact, their sha256 in the 500 saying the bytes are corrupt)."""
    secret = tmp_path / "server-only"
    secret.write_text("AWS_SECRET_ACCESS_KEY=hunter2\n")
    storage = served.home / "storage"
    root = record_resolution(served.url, served.key, kind="local", state="resolved")
    (storage / "logs").mkdir(parents=True, exist_ok=True)
    (storage / "logs" / f"{root}.log").symlink_to(secret)
    art = recorded_artifact(served, b'{"v": 1}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / art).symlink_to(secret)
    (storage / "artifacts").mkdir(exist_ok=True)
    (storage / "artifacts" / art[:2]).symlink_to(elsewhere)  # followed (a storage may keep some on another disk)
    with served.client() as c:
        for path in (f"/api/v1/runs/{root}/logs", f"/api/v1/runs/{root}/logs?tail=100",
                     f"/api/v1/artifacts/{art}/data"):
            r = c.get(path)
            assert r.status_code == 409 and "symbolic link" in r.json()["detail"], (path, r.status_code, r.text)
            assert "hunter2" not in r.text, r.text
    (storage / "logs" / f"{root}.log").unlink()
    (storage / "logs" / f"{root}.log").write_text("its own\n")  # a plain file is read as before
    with served.client() as c:
        assert c.get(f"/api/v1/runs/{root}/logs").text == "its own\n"


def test_a_directory_at_a_key_of_the_servers_local_storage_is_a_409_in_its_words_not_an_outage(
        served: Served) -> None:
    """A directory where a run's log goes in the server's local storage (made by hand, a bad copy): a refusal that
    stays until someone moves it, answered as the link is (one handler, chosen by the error's ``fix``): 409 naming
    the path and what to do, not retried. Was: 503 "artifact storage is unavailable" with Retry-After, as for an
    outage (a client retrying it for its whole window)."""
    storage = served.home / "storage"
    root = record_resolution(served.url, served.key, kind="local", state="resolved")
    (storage / "logs" / f"{root}.log").mkdir(parents=True)
    with served.client() as c:
        for path in (f"/api/v1/runs/{root}/logs", f"/api/v1/runs/{root}/logs?tail=100"):
            r = c.get(path)
            assert r.status_code == 409 and "retry-after" not in r.headers, (path, r.status_code, r.text)
            assert r.json()["detail"] == (f"local storage could not read {storage}/logs/{root}.log: a directory is "
                                          f"there, not a file: move that directory out of {storage} (nothing of it "
                                          "was changed); then try again"), r.text
    assert (storage / "logs" / f"{root}.log").is_dir()


# -- a request's Host header names no host the server answers with ------------------------------------------

def test_no_answer_redirects_to_the_host_a_request_names(served: Served) -> None:
    """A path with a trailing slash (or without one, for ``/static``), asked with ``Host: evil.example`` (a cache or
    proxy in front that keys answers by path: its next visitors are sent there), with and without a key: 404, no
    ``Location``. Was: 307 to ``http://evil.example/...``, built from the request's Host header."""
    for key in (None, served.key):
        with served.client(key=key) as c:
            for path in ("/docs/", "/openapi.json/", "/static", "/api/v1/runs/", "/api/v1/health/"):
                r = c.get(path, headers={"Host": "evil.example"})
                assert "location" not in r.headers and r.status_code in (401, 404), (path, r.status_code, r.headers)
            assert c.get("/static/index.html").status_code == 200


def test_a_token_may_not_fence_another_resolution(any_db: Served) -> None:
    """A driver's token sends a write fenced (``fence``: resolution id -> driver epoch) on a resolution it may not
    read, one another driver took over: 403, as for that resolution's records. Was: 409 "driver replaced" with the
    other resolution's id and the time its driver took it over in ``X-Sematic-K8s-Replaced`` (and, on PostgreSQL,
    the other resolution's row locked for the write), telling a token whether a resolution exists and when its
    driver started. SQLite and PostgreSQL."""
    served = any_db
    other = record_resolution(served.url, served.key, kind="cloud", state="running")
    own = record_resolution(served.url, served.key, kind="cloud", state="running")
    user = HttpStore(served.url, served.key)
    try:
        user.take_over(other)
        token = user.mint_token(own)
    finally:
        user.close()
    with served.client(key=token) as driver:
        note = {"resolution_updates": {own: {"settings": {"kind": "cloud", "x": 1}}}}  # a write of its own
        r = driver.post("/api/v1/store/write", json={**note, "fence": {other: 0}})
        assert r.status_code == 403 and other in r.json()["detail"], r.text
        assert not any(other in v for k, v in r.headers.items() if k.lower().startswith("x-sematic")), r.headers
        assert driver.post("/api/v1/store/write", json={**note, "fence": {own: 0}}).status_code == 200


# -- every answer is taken as the type it names ---------------------------------------------------------------

def test_every_answer_says_nosniff(served: Served) -> None:
    """JSON, a run's log as text, an artifact's bytes, the fast path's write, a 401, a 403, a 404, the page: each says
    ``X-Content-Type-Options: nosniff`` once, so no browser reads a record's bytes as HTML. Was: the page alone."""
    payload = b"<html><script>alert(1)</script>"
    root = record_resolution(served.url, served.key, kind="local", state="resolved")
    art = recorded_artifact(served, payload)
    store = HttpStore(served.url, served.key)
    try:
        token = store.mint_token(uuid.uuid4().hex)
    finally:
        store.close()
    LocalStorage(served.home / "storage").put(artifact_key(art), payload)
    (served.home / "storage" / "logs").mkdir(parents=True, exist_ok=True)
    (served.home / "storage" / "logs" / f"{root}.log").write_text("<b>a log</b>\n")
    answers: list[httpx.Response] = []
    with served.client() as c:
        answers += [c.get(f"/api/v1/resolutions/{root}"), c.get(f"/api/v1/runs/{root}/logs"),
                    c.get(f"/api/v1/artifacts/{art}/data"), c.get("/api/v1/nothing-here"), c.get("/"),
                    c.post("/api/v1/store/write", json={})]
    with served.client(key=None) as c:
        answers += [c.get("/api/v1/runs"), c.get("/api/v1/health")]
    with served.client(key=token) as c:
        answers.append(c.get(f"/api/v1/resolutions/{root}"))
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 200, 200, 401, 200, 403], answers
    assert answers[2].content == payload
    for a in answers:
        assert a.headers.get_list("x-content-type-options") == ["nosniff"], (a.request.url, a.headers)


def _policy(answer: httpx.Response) -> dict[str, str]:
    """An answer's Content-Security-Policy, directive by directive (a test failing says which answer lacks one)."""
    values = answer.headers.get_list("content-security-policy")
    assert len(values) == 1, (answer.request.url, answer.headers)
    return {d.split()[0]: d.partition(" ")[2] for d in (p.strip() for p in values[0].split(";")) if d}


def test_every_page_and_every_answer_has_a_strict_policy_and_may_not_be_framed(served: Served) -> None:
    """The dashboard by each path that answers it (``/``, ``/static/index.html``, every ``.html`` of its static
    files), the API docs, JSON, a 404, a 405, an artifact's bytes and a log (markup in both), asked from another
    origin: each says ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` (no site frames a page to clickjack
    its cancel and rerun buttons), scripts from this server alone (no 'unsafe-inline', no 'unsafe-eval' anywhere),
    ``object-src 'none'``, ``base-uri 'none'``, ``form-action 'none'``; only ``/docs`` allows one more script, its
    own inline one by hash, and it is sandboxed (``allow-scripts`` alone: an opaque origin); no answer allows another
    origin to read it (CORS), none sets a cookie (the dashboard sends its key in a header), every API answer says
    ``Cache-Control: no-store`` (the page and its files: no-cache). Was: ``/static/index.html``, the dashboard itself,
    answered with no policy and no X-Frame-Options: framed by any site, its buttons under the user's key (in that
    origin's localStorage)."""
    from sematic_k8s_server.dashboard import STATIC_DIR

    root = record_resolution(served.url, served.key, kind="local", state="resolved")
    payload = b"<html><script>window.__pwned=1</script>"
    art = recorded_artifact(served, payload)
    LocalStorage(served.home / "storage").put(artifact_key(art), payload)
    (served.home / "storage" / "logs").mkdir(parents=True, exist_ok=True)
    (served.home / "storage" / "logs" / f"{root}.log").write_bytes(payload)
    pages = ["/", "/static/index.html", *(f"/static/{p.relative_to(STATIC_DIR).as_posix()}"
                                         for p in STATIC_DIR.rglob("*.htm*") if p.name != "index.html")]
    others = ["/api/v1/runs", f"/api/v1/runs/{root}/logs", f"/api/v1/artifacts/{art}/data", "/openapi.json",
              "/nothing-here", "/static/app.js"]
    with served.client() as c:
        c.headers["Origin"] = "http://evil.example"
        answers = {p: c.get(p) for p in [*pages, "/docs", *others]}
        answers["HEAD /"] = c.head("/")
        answers["OPTIONS /api/v1/runs"] = c.request("OPTIONS", "/api/v1/runs", headers={
            "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    for path in [*pages, "/docs"]:
        assert answers[path].status_code == 200, path
        assert answers[path].headers["content-type"].startswith("text/html"), path
    for where, a in answers.items():
        policy = _policy(a)
        assert a.headers.get_list("x-frame-options") == ["DENY"], (where, a.headers)
        assert policy["frame-ancestors"] == "'none'", where
        assert policy["object-src"] == policy["base-uri"] == policy["form-action"] == "'none'", where
        assert policy["default-src"] == "'self'", where
        scripts = policy["script-src"].split()
        assert scripts[0] == "'self'" and "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts, where
        assert scripts == (["'self'", scripts[-1]] if where == "/docs" else ["'self'"]), where
        # /docs runs sandboxed, in an opaque origin: none of the dashboard's storage (test_dashboard.py, Chromium)
        assert policy.get("sandbox") == ("allow-scripts" if where == "/docs" else None), where
        assert "'unsafe-eval'" not in str(policy), where
        assert not any(h.lower().startswith("access-control-") for h in a.headers), (where, a.headers)
        assert "set-cookie" not in a.headers, (where, a.headers)  # no cookie: nothing for another site to ride on
        cache = "no-cache" if where in [*pages, "/docs", "/static/app.js"] else "no-store"
        assert a.headers.get_list("cache-control") == [cache], (where, a.headers)  # no API answer kept by a cache
    assert _policy(answers["/docs"])["script-src"].split()[1].startswith("'sha256-"), answers["/docs"].headers
    assert answers[f"/api/v1/artifacts/{art}/data"].headers["content-type"] == "application/octet-stream"
    assert answers[f"/api/v1/artifacts/{art}/data"].headers["content-disposition"].startswith("attachment;")
    assert answers[f"/api/v1/runs/{root}/logs"].headers["content-type"].startswith("text/plain")


def test_the_api_docs_page_shows_the_servers_own_spec_whatever_a_request_says(served: Served) -> None:
    """/docs holds the spec in its page (sandboxed, it cannot fetch /openapi.json): the server's own, whatever the
    request asks (``?url=``, ``?configUrl=``, ``?spec=``, another Host: the same page and policy); a description
    holding ``</script>`` and markup cannot end the page's script (HTML-safe JSON)."""
    import json
    import re

    from sematic_k8s_server.dashboard import api_docs_page

    with served.client(key=None) as c:
        spec = c.get("/openapi.json").json()
        plain = c.get("/docs")
        steered = c.get("/docs", params={"url": "http://evil.example/spec.json", "configUrl": "http://evil.example/c",
                                         "spec": "{}", "supportedSubmitMethods": "get"},
                        headers={"Host": "evil.example", "Origin": "http://evil.example"})
    assert (steered.status_code, steered.text) == (200, plain.text)
    assert steered.headers["content-security-policy"] == plain.headers["content-security-policy"]
    script = re.findall(r"<script>(.*?)</script>", plain.text, re.DOTALL)
    assert len(script) == 1 and "evil.example" not in plain.text
    options = json.loads(script[0].removeprefix("SwaggerUIBundle({...").partition(", presets:")[0])
    assert options["spec"] == spec and options["supportedSubmitMethods"] == [], options.keys()
    assert not options["queryConfigEnabled"] and "url" not in options and "configUrl" not in options

    html, _ = api_docs_page({"info": {"description": "</script><script>window.__pwned=1</script>&amp;"}}, "t")
    assert html.count("<script") == 2 and html.count("</script>") == 2, html  # the bundle's and the page's own
    assert "\\u003c/script\\u003e" in html and "&amp;" not in html


def test_a_token_refused_a_run_of_another_resolution_is_not_told_that_resolution(served: Served) -> None:
    """A driver's token asks for a run of another resolution (its record, its log) and writes a change to it: 403
    naming the run it asked for, not the resolution the run is recorded in. Was: "run X of resolution Y", telling it
    Y (whose id opens Y's records to anyone who may read them). Its own runs still answer."""
    other = record_resolution(served.url, served.key, kind="cloud", state="running")
    own = record_resolution(served.url, served.key, kind="cloud", state="running")
    theirs, mine = new_run(other), new_run(own)
    user = HttpStore(served.url, served.key)
    try:
        user.write(theirs)
        user.write(mine)
        token = user.mint_token(own)
    finally:
        user.close()
    child, my_child = next(iter(theirs.new_runs)), next(iter(mine.new_runs))
    with served.client(key=token) as driver:
        answers = [driver.get(f"/api/v1/runs/{child}"), driver.get(f"/api/v1/runs/{child}/logs"),
                   driver.post("/api/v1/store/write", json={"run_updates": {child: {"state": "failed"}}})]
        for r in answers:
            assert r.status_code == 403 and child in r.text and other not in r.text, (r.request.url, r.text)
        assert driver.get(f"/api/v1/runs/{my_child}").status_code == 200


def new_run(root_id: str) -> Batch:
    run_id = uuid.uuid4().hex
    return Batch(new_runs={run_id: {"id": run_id, "root_id": root_id, "parent_id": root_id, "func_path": "m:f",
                                    "func_name": "f", "state": "created", "created_at": utcnow()}})


# -- a value's record is its first writer's ------------------------------------------------------------------

def test_another_key_that_read_a_values_bytes_cannot_rewrite_its_type_or_summary(any_db: Served) -> None:
    """Any key may read any artifact's bytes, and any writer may record an artifact with them inline (checked
    against its id): another key (and a token of its) sends the bytes of a value a resolution recorded, one inline
    and one stored without them in its record, with another type and summary. Both records stay as their writer
    recorded them (the one without bytes gets them, verified); a record whose format or size lies is still repaired
    by the true one. Was: each rewritten to the other key's type and summary, shown by the dashboard, the CLI and the
    API as the value of every run that has it. SQLite and PostgreSQL."""
    served = any_db
    with served.client(key=served.admin_key) as admin:
        mallory = admin.post("/api/v1/api-keys", json={"name": "mallory"}).json()["key"]
    values = {"inline": b'{"total": 42}', "stored": b'{"total": 43, "of": "a stored value"}'}
    batch = Batch()
    for kind, payload in values.items():
        art = content_id("json", payload)
        batch.artifacts[art] = {"id": art, "format": "json", "type_name": "dict", "summary": {"total": kind},
                                "size": len(payload), "created_at": utcnow(),
                                "inline": payload if kind == "inline" else None}
    write_through_api(served.url, served.key, batch)
    LocalStorage(served.home / "storage").put(artifact_key(content_id("json", values["stored"])), values["stored"])
    own = uuid.uuid4().hex
    mallorys = HttpStore(served.url, mallory)
    try:
        token = mallorys.mint_token(own)
    finally:
        mallorys.close()
    with served.client(key=mallory) as m:
        for writer in (mallory, token):
            for payload in values.values():
                art = content_id("json", payload)
                read = m.get(f"/api/v1/artifacts/{art}/data")
                assert read.content == payload, read.text
                forged = Batch()
                forged.artifacts[art] = {"id": art, "format": "json", "type_name": "Forged", "size": len(payload),
                                         "summary": {"total": "forged"}, "created_at": utcnow(), "inline": payload}
                write_through_api(served.url, writer, forged)
        for kind, payload in values.items():
            recorded = m.get(f"/api/v1/artifacts/{content_id('json', payload)}").json()
            assert (recorded["type_name"], recorded["summary"]) == ("dict", {"total": kind}), recorded
            assert base64.b64decode(recorded["inline"]) == payload
        lie = b'[1, 2, 3]'  # written ahead with a format and size its id refutes: the true record replaces it
        art = content_id("json", lie)
        ahead = Batch()
        ahead.artifacts[art] = {"id": art, "format": "pickle", "type_name": "os.system", "size": 1,
                                "summary": "ahead", "created_at": utcnow()}
        write_through_api(served.url, mallory, ahead)
        true = Batch()
        true.artifacts[art] = {"id": art, "format": "json", "type_name": "list", "size": len(lie),
                               "summary": [1, 2, 3], "created_at": utcnow(), "inline": lie}
        write_through_api(served.url, served.key, true)
        recorded = m.get(f"/api/v1/artifacts/{art}").json()
        assert (recorded["format"], recorded["type_name"], recorded["summary"]) == ("json", "list", [1, 2, 3])


# -- a recorded storage URL that is no URL ---------------------------------------------------------------------

NO_URLS = ["s3://[bucket/prefix", "file:///tmp/a\x00b", "file:relative/path"]


@pytest.mark.parametrize("which", ["default", "allowed"])
def test_a_storage_configured_through_a_link_is_read_for_a_record_that_spells_it_so(tmp_path: Path, which: str) -> None:
    """A storage configured by a path through a symbolic link (macOS's /tmp, /var; a mount's alias): a CloudResolver
    records the URL its user gave, link and all, and the server reads that resolution's artifacts from it (its
    default storage, or one on its allow-list). Was (since a record's path is no longer looked up on the server's
    file system): 409 "which this server does not read", the configured URL known by its links' target only."""
    real = tmp_path / "real"
    (real / "home").mkdir(parents=True)
    (real / "other").mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    payload = b'{"v": 7}'
    art = content_id("json", payload)
    allowed = (f"file://{link}/other",) if which == "allowed" else ()
    with serve(link / "home", allowed_storages=allowed) as s:
        recorded = f"file://{link}/home/storage" if which == "default" else f"file://{link}/other"
        storage = LocalStorage(real / "home" / "storage") if which == "default" else LocalStorage(real / "other")
        root = record_resolution(s.url, s.key, kind="cloud", state="running", executor="kubernetes",
                                 storage_url=recorded, inputs={"x": ("json", payload)}, storage=storage)
        with s.client() as c:
            r = c.get(f"/api/v1/artifacts/{art}/data", params={"resolution_id": root})
            assert r.status_code == 200 and r.content == payload, r.text
            elsewhere = record_resolution(s.url, s.key, kind="cloud", state="running", executor="kubernetes",
                                          storage_url=f"file://{link}/home/elsewhere")
            assert c.get(f"/api/v1/artifacts/{art}/data", params={"resolution_id": elsewhere}).status_code == 409


@pytest.mark.parametrize("recorded", NO_URLS, ids=["bracket", "nul", "relative"])
def test_a_recorded_storage_url_that_is_no_url_is_refused_in_words_and_never_stops_the_copies_sweep(
        served: Served, recorded: str) -> None:
    """Any key records its resolution's ``storage_url`` (JSON keeps a NUL). One that is no URL (an unclosed IPv6
    bracket urlparse refuses, a NUL the file system refuses, a relative path) names no storage: its run's log and
    its artifacts are a 409 saying so, and the server's sweep of dead resolutions' task copies goes on past it,
    deleting another resolution's. Was: urlparse's or the path's ValueError, a 500, and the sweep's pass ended at that
    record every time (another resolution's copies left for good: a record choosing an id sorting first held them
    all); a ``file:`` path a record names was resolved on the server's file system (links followed)."""
    payload = b'{"v": 1}'
    art = content_id("json", payload)
    storage = LocalStorage(served.home / "storage")
    hostile = record_resolution(served.url, served.key, kind="cloud", state="running", executor="kubernetes",
                                storage_url=recorded, inputs={"x": ("json", payload)}, storage=storage)
    honest = record_resolution(served.url, served.key, kind="cloud", state="running", executor="kubernetes",
                               storage_url=storage.url)
    with served.client() as c:
        for path, params in ((f"/api/v1/runs/{hostile}/logs", {}),
                             (f"/api/v1/artifacts/{art}/data", {"resolution_id": hostile})):
            r = c.get(path, params=params)
            assert r.status_code == 409, r.text
            assert "which is no storage URL (file:///path or s3://bucket/prefix)" in r.json()["detail"], r.text
    copy = f"tasks/{honest}/{uuid.uuid4().hex}/1/{'a' * 64}.json"
    storage.put(copy, b"{}")
    store = served.store
    with store.engine.begin() as conn:  # their drivers' last beats, a day ago
        conn.execute(sa.update(store._res).where(store._res.c.id.in_([hostile, honest]))
                     .values(heartbeat_at=utcnow() - dt.timedelta(days=1)))
    judge = SqlStore(str(store.engine.url))  # a store judging silence at once (the server's waits a timeout first)
    try:  # marked dead by its reads, their copies left
        assert {judge.get_resolution(r).state for r in (hostile, honest)} == {"failed"}  # type: ignore[union-attr]
    finally:
        judge.close()
    assert set(store.tasks_left()) == {hostile, honest}
    served.server.copies.sweep()
    assert not storage.exists(copy)
    assert store.tasks_left() == []
