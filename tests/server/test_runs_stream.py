"""``GET /store/runs_of_root/{id}`` (a driver's read of a resolution's runs whole, to continue or rerun it) over real
HTTP to a server process, on SQLite and PostgreSQL: streamed run by run from reads of a batch at a time, so one request
for a resolution of many large runs no longer grows the server by the size of its answer (200 runs at the record bounds
answered 142 MB built whole, and grew the server by about 370 MB); the HTTP store still gets every run whole, and a
client gone midway leaves no database connection checked out nor anything stuck. ``POST /store/artifacts``
(artifact records by id, a read any key may send) is streamed alike, and an overview reads its labels' records so."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s_server import auth
from sematic_k8s_server.db import open_store
from serving import peak_rss_kib, server_process, wait_for

RUNS = 120  # at the record bounds: an answer of about 85 MB
MiB = 1024


def _large_run(root: str, n: int) -> RunRecord:
    """A run at about the record bounds (a 100,000-character source, a 490,000-character error, 60 KB of notes
    and of settings), each distinct."""
    return RunRecord(id=root if n == 0 else uuid.uuid4().hex, root_id=root, parent_id=None if n == 0 else root,
                     func_path="m:f", func_name=f"f{n}", state="failed", source_text=f"# {n}\n" + "x" * 100_000,
                     error={"type": "ValueError", "message": f"{n} " + "e" * 490_000, "traceback": "", "mro": []},
                     notes={"n": "n" * 60_000}, settings={"s": "s" * 60_000}, created_at=utcnow())


@contextmanager
def _served_resolution(tmp_path: Path, db_url: str, runs: int) -> Iterator[tuple[int, str, str, str, list[str]]]:
    """A server process on ``db_url`` and a resolution of ``runs`` large runs recorded straight into its database:
    (its pid, its URL, an API key, the resolution's id, its run ids)."""
    store = open_store(db_url)
    try:
        key = auth.create_key(store.engine, "driver")
        root = uuid.uuid4().hex
        ids = []
        for start in range(0, runs, 20):  # a few at a time: the test's own memory
            batch = Batch()
            if start == 0:
                batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="failed",
                                                      created_at=utcnow()))
            for n in range(start, min(runs, start + 20)):
                run = _large_run(root, n)
                batch.add_run(run)
                ids.append(run.id)
            store.write(batch)
    finally:
        store.close()
    args = () if db_url.startswith("sqlite") else ("--db-url", db_url)
    with server_process(tmp_path, *args) as (proc, url):
        yield proc.pid, url, key, root, ids


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_resolutions_large_runs_are_streamed_whole_without_the_servers_memory_growing_with_them(
        tmp_path: Path, request: pytest.FixtureRequest, db: str) -> None:
    """120 runs at the record bounds (about 85 MB of JSON): the HTTP store gets every run whole, and the server's
    peak resident memory grows by less than 96 MiB over the request (was: the answer built whole, about 230 MB more
    for these)."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with _served_resolution(tmp_path, db_url, RUNS) as (pid, url, key, root, ids):
        store = HttpStore(url, key)
        try:
            assert store.runs_of_root(uuid.uuid4().hex) == []  # warm: every module loaded
            before = peak_rss_kib(pid)
            runs = store.runs_of_root(root)
            grown = peak_rss_kib(pid) - before
        finally:
            store.close()
        assert sorted(r.id for r in runs) == sorted(ids)
        first = next(r for r in runs if r.id == root)
        assert first.error is not None and first.error["message"] == "0 " + "e" * 490_000
        assert first.source_text == "# 0\n" + "x" * 100_000 and first.notes == {"n": "n" * 60_000}
        assert grown < 96 * MiB, f"the server's memory grew by {grown // MiB} MiB for one answer"


def _abandon_midway(url: str, key: str, root: str) -> None:
    """Ask for the runs, read the answer's first megabyte, and go (the connection reset)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
        s.sendall(f"GET /api/v1/store/runs_of_root/{root} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode())
        got = b""
        while len(got) < 1024 * 1024:
            chunk = s.recv(65536)
            assert chunk, got[:300]
            got += chunk
        assert got.startswith(b"HTTP/1.1 200"), got[:300]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close


def test_a_client_gone_midway_leaves_no_database_connection_checked_out(tmp_path: Path, postgres_url: str) -> None:
    """A reader that stops reading holds no database connection (the server's stream waits between batches, its
    connection returned); 60 readers gone midway (more than the server's pool of 50) leave nothing checked out, and
    the whole answer is still served, quickly."""
    with _served_resolution(tmp_path, postgres_url, 40) as (_, url, key, root, ids):
        engine = sa.create_engine(postgres_url, poolclass=sa.NullPool)
        busy = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND state <> 'idle'")

        def none_busy() -> bool:
            with engine.connect() as conn:
                return conn.execute(busy).scalar_one() == 0

        try:
            parts = urlsplit(url)
            with socket.create_connection((parts.hostname, parts.port), timeout=60) as stalled:
                stalled.sendall(f"GET /api/v1/store/runs_of_root/{root} HTTP/1.1\r\nHost: x\r\n"
                                f"X-API-Key: {key}\r\n\r\n".encode())
                assert stalled.recv(65536).startswith(b"HTTP/1.1 200")
                wait_for(none_busy, 60, what="the stalled reader's stream to hold no database connection")
            for _ in range(60):
                _abandon_midway(url, key, root)
            wait_for(none_busy, 60, what="no database connection checked out after the readers went")
            with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
                assert c.get("/api/v1/health").status_code == 200
                items = c.get(f"/api/v1/store/runs_of_root/{root}").json()["items"]
                documented = c.get("/openapi.json").json()["paths"]["/api/v1/store/runs_of_root/{root_id}"]
            assert documented["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/RunList"}  # streamed, still documented as the list it is
            assert sorted(doc["id"] for doc in items) == sorted(ids)
        finally:
            engine.dispose()


def test_a_database_gone_midway_cuts_the_answer_short_and_it_is_served_whole_once_back(tmp_path: Path) -> None:
    """The database stopped while a reader is midway (stalled after the answer's head): the answer ends without
    its chunked body's end (a client cannot take it for the whole list; the HTTP store's reader raises
    ``IncompleteRead``, retried as a connection lost), and once the database is back the whole answer is served."""
    from pgcluster import create_database, own_cluster

    with own_cluster() as cluster:
        db_url = create_database(cluster.url, f"t_{uuid.uuid4().hex[:12]}")
        with _served_resolution(tmp_path, db_url, 60) as (_, url, key, root, ids):
            parts = urlsplit(url)
            with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
                s.sendall(f"GET /api/v1/store/runs_of_root/{root} HTTP/1.1\r\nHost: x\r\n"
                          f"X-API-Key: {key}\r\n\r\n".encode())
                got = s.recv(65536)
                assert got.startswith(b"HTTP/1.1 200") and b"chunked" in got.split(b"\r\n\r\n")[0], got[:300]
                cluster.stop("immediate")
                while chunk := s.recv(1 << 20):
                    got += chunk
            assert not got.endswith(b"0\r\n\r\n") and len(got) < 60 * 600_000, len(got)
            cluster.start()
            store = HttpStore(url, key, retry_window=60)
            try:
                assert sorted(r.id for r in store.runs_of_root(root)) == sorted(ids)
            finally:
                store.close()


ARTIFACTS = 64  # each with a summary of about 2 MB and 512 KiB inline: an answer of about 170 MB


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_artifact_records_by_id_are_streamed_without_the_servers_memory_growing_with_them(
        tmp_path: Path, request: pytest.FixtureRequest, db: str) -> None:
    """``POST /store/artifacts`` (records by id, up to 10,000 in one request; a read a read-only key may send too)
    for 64 artifacts whose records are large (a client's summary is not bounded, nor inline bytes but by a write's
    size): the HTTP store gets each whole, and the server's peak resident memory grows by less than 96 MiB over the
    request. Was: the answer built whole (records, dicts, the response model's copy, its JSON), about 600 MB more for
    these, for any key (a read-only one included) asking for ids others recorded, as often as it likes."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else f"sqlite:///{tmp_path / 'db.sqlite3'}"
    store = open_store(db_url)
    ids = []
    try:
        key = auth.create_key(store.engine, "viewer", read_only=True)
        for start in range(0, ARTIFACTS, 8):  # a few at a time: the test's own memory
            batch = Batch()
            for n in range(start, start + 8):
                art = uuid.uuid4().hex * 2
                batch.artifacts[art] = {"id": art, "format": "json", "type_name": "list", "size": 512 * 1024,
                                        "summary": {"preview": f"{n} " + "p" * 2_000_000}, "created_at": utcnow(),
                                        "inline": bytes([n]) * (512 * 1024)}
                ids.append(art)
            store.write(batch)
    finally:
        store.close()
    args = () if db == "sqlite" else ("--db-url", db_url)
    with server_process(tmp_path, *args) as (proc, url):
        client = HttpStore(url, key)
        try:
            assert client.artifacts(["0" * 64]) == []  # warm: every module loaded
            before = peak_rss_kib(proc.pid)
            got = client.artifacts(ids)
            grown = peak_rss_kib(proc.pid) - before
        finally:
            client.close()
    assert sorted(a.id for a in got) == sorted(ids)
    last = next(a for a in got if a.id == ids[-1])
    assert last.summary == {"preview": f"{ARTIFACTS - 1} " + "p" * 2_000_000}
    assert last.inline == bytes([ARTIFACTS - 1]) * (512 * 1024)
    assert grown < 96 * MiB, f"the server's memory grew by {grown // MiB} MiB for one answer"


FAN_OUT = 200  # runs of one func, each of an input whose record is large (a 1 MB summary, 256 KiB inline)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_an_overviews_labels_read_its_inputs_records_a_batch_at_a_time(
        tmp_path: Path, request: pytest.FixtureRequest, db: str) -> None:
    """A resolution's overview with its fan-out of 200 runs expanded (``?expand=GROUP@0&page=200``, any key's; the
    dashboard's page of a group) labels each run by its input's value, read from the inputs' records: those are
    read a batch at a time, only a scalar summary kept (a label shows nothing else), so the server's peak memory grows
    by less than 96 MiB; the labels are as before. Was: every input's record read whole at once (its summary, a
    picture's preview of up to half a megabyte, and inline bytes): 245-266 MiB more for these, at each of the
    page's polls."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else f"sqlite:///{tmp_path / 'db.sqlite3'}"
    store = open_store(db_url)
    root = uuid.uuid4().hex
    try:
        key = auth.create_key(store.engine, "viewer", read_only=True)
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="resolved", created_at=utcnow()))
        batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:p", func_name="p",
                                state="resolved", created_at=utcnow()))
        store.write(batch)
        for start in range(0, FAN_OUT, 10):  # a few at a time: the test's own memory
            batch = Batch()
            for n in range(start, start + 10):
                big, small = uuid.uuid4().hex * 2, f"{n:064x}"
                batch.artifacts[big] = {"id": big, "format": "pickle", "type_name": "Image", "size": 256 * 1024,
                                        "summary": {"preview": f"{n} " + "p" * 1_000_000}, "created_at": utcnow(),
                                        "inline": bytes([n % 256]) * (256 * 1024)}
                batch.artifacts[small] = {"id": small, "format": "json", "type_name": "int", "size": 2, "summary": n,
                                          "created_at": utcnow()}
                batch.add_run(RunRecord(id=f"{n + 1:032x}", root_id=root, parent_id=root, func_path="m:f",
                                        func_name="f", state="resolved", inputs={"image": big, "n": small},
                                        created_at=utcnow()))
            store.write(batch)
    finally:
        store.close()
    args = () if db == "sqlite" else ("--db-url", db_url)
    with server_process(tmp_path, *args) as (proc, url), \
            httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as c:
        assert c.get(f"/api/v1/resolutions/{root}/overview").status_code == 200  # warm: every module loaded
        before = peak_rss_kib(proc.pid)
        r = c.get(f"/api/v1/resolutions/{root}/overview", params={"expand": f"g/{root}/m:f@0", "page": FAN_OUT})
        grown = peak_rss_kib(proc.pid) - before
    assert r.status_code == 200, r.text[:300]
    labels = {n["id"]: n.get("label") for n in r.json()["nodes"] if n["kind"] == "run" and n["id"] != root}
    assert labels == {f"{n + 1:032x}": f"n={n}" for n in range(FAN_OUT)}, list(labels.items())[:3]
    assert grown < 96 * MiB, f"the server's memory grew by {grown // MiB} MiB for one overview"
