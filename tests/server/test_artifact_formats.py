"""Artifact records read by many ids, counted in the statements the database runs (SQLite and PostgreSQL): the
embedded store's whole list (``SqlStore.artifacts``) and a driver's reused values' formats through the server
(``Recorder.formats`` over ``POST /store/artifact_formats``) take a query per 500 ids, not one per 8 (the streamed
``POST /store/artifacts``'s batches); and that route's refusals and callers."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sematic_k8s import limits
from sematic_k8s.resolvers.recorder import Recorder
from sematic_k8s.serialization import content_id
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s_server.db import open_store
from serving import Served, create_api_key, record_resolution, serve

IDS = 2000
QUERIES = 5  # for its 2,000 recorded ids and 10 unknown: 500 a query
SMALL = b'"' + b"s" * 100 + b'"'  # an embedded resolution's inline value
LARGE = b'"' + b"L" * (limits.INLINE_BYTES * 25) + b'"'  # inline bytes of another client's making: 100 KiB


@contextlib.contextmanager
def artifact_reads(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements reading the artifacts table that ``engine`` runs meanwhile (the server's, the credential
    checks left out)."""
    seen: list[str] = []

    def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:  # noqa: ANN401 - SQLAlchemy's
        if "artifacts" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", counted)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", counted)


def _recorded(store: SqlStore, n: int = IDS) -> list[str]:
    """``n`` artifact records (one small inline, one large inline, the rest in storage); their ids, and 10 unknown."""
    batch = Batch()
    ids = [content_id("json", str(i).encode()) for i in range(n - 2)]
    for art in ids:
        batch.artifacts[art] = {"id": art, "format": "json", "type_name": "int", "summary": 1, "size": 4,
                                "created_at": utcnow()}
    for payload in (SMALL, LARGE):
        art = content_id("json", payload)
        batch.artifacts[art] = {"id": art, "format": "json", "type_name": "str", "summary": "s" * 1000,
                                "size": len(payload), "inline": payload, "created_at": utcnow()}
        ids.append(art)
    store.write(batch)
    return ids + [f"{i:064x}" for i in range(10)]


def test_the_embedded_stores_artifact_records_are_read_a_query_per_500_ids(db_url: str) -> None:
    """``SqlStore.artifacts`` (a whole list) of 2,010 ids: 5 queries, each record whole. Was: through the server's
    streamed read, 8 ids a query each on a connection of its own (252), which bounds nothing in a list held whole."""
    store = open_store(db_url)
    try:
        ids = _recorded(store)
        with artifact_reads(store.engine) as seen:
            got = store.artifacts(ids + ids[:5])
        assert sorted(a.id for a in got) == sorted(ids[:IDS])
        assert {a.id: a.inline for a in got}[content_id("json", LARGE)] == LARGE
        assert len(seen) == QUERIES, len(seen)
    finally:
        store.close()


def test_a_drivers_reused_formats_are_read_a_query_per_500_ids_through_the_server(tmp_path, db_url: str) -> None:
    """A driver (a resolution token, through the HTTP store) asking the formats of 2,000 reused values
    (``Recorder.formats``, a rerun of a large fan-out) gets what the embedded store's read gives, inline bytes too;
    the server runs 5 queries for them (and 10 unknown ids), plus 1 for the one record whose inline bytes are over
    the bound it sends with formats (read whole). Was: ``POST /store/artifacts``, whole records (summaries too) 8
    ids a query: 252."""
    with serve(tmp_path, db_url) as s:
        ids = _recorded(s.store)
        driver = HttpStore(s.url, HttpStore(s.url, s.key).mint_token(record_resolution(
            s.url, s.key, kind="cloud", state="running")))
        try:
            recorder = Recorder(driver, LocalStorage(tmp_path / "storage"))
            with artifact_reads(s.store.engine) as seen:
                got = recorder.formats(ids)
            assert got == s.store.artifact_formats(ids) and len(got) == IDS
            assert got[content_id("json", LARGE)][2] == LARGE and got[content_id("json", SMALL)][2] == SMALL
            assert len(seen) == QUERIES + 1, len(seen)
        finally:
            driver.close()


def _answer(s: Served, key: str | None, ids: list[str]) -> tuple[int, Any]:
    with s.client(key) as c:
        r = c.post("/api/v1/store/artifact_formats", json={"ids": ids})
    return r.status_code, r.json()


def test_the_formats_route_takes_sha256_ids_up_to_its_cap_from_those_who_may_read_artifacts(tmp_path) -> None:
    """``POST /store/artifact_formats``: artifact ids only (sha256 hex; else a one-line 422 naming the body field),
    at most :data:`~sematic_k8s.limits.FORMAT_IDS` (the HTTP store asks in pages of it); the callers of ``POST
    /store/artifacts``: a key, a read-only one too, and any resolution's token (artifacts are content-addressed, no
    resolution's), never an unknown or missing credential. An item leaves out inline bytes over
    :data:`~sematic_k8s.limits.INLINE_BYTES` (flagged) and every summary: it is bounded small; it says the size
    recorded (a cache hit's check of its stored bytes)."""
    with serve(tmp_path) as s:
        ids = _recorded(s.store, 12)
        large, small = content_id("json", LARGE), content_id("json", SMALL)
        for bad in ["\x00", "x", "A" * 64, "a" * 100_000]:
            status, doc = _answer(s, "default", [small, bad])
            assert status == 422 and doc["detail"].startswith("body field 'ids.1': String should match pattern"), doc
            assert "\n" not in doc["detail"]
        status, doc = _answer(s, "default", ["0" * 64] * (limits.FORMAT_IDS + 1))
        assert status == 422 and doc["detail"].startswith("body field 'ids': List should have at most 5000"), doc
        assert _answer(s, None, [small])[0] == 401 and _answer(s, "sk8s_" + "0" * 40, [small])[0] == 401
        other_root = record_resolution(s.url, s.key, kind="cloud", state="running")
        token = HttpStore(s.url, s.key).mint_token(other_root)
        viewer = create_api_key(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path, "viewer", "--read-only")
        answers = [_answer(s, key, ids) for key in ("default", viewer, token)]
        assert answers[0] == answers[1] == answers[2] and answers[0][0] == 200, answers
        items = {item["id"]: item for item in answers[0][1]["items"]}
        assert set(items) == set(ids[:12])
        assert items[large]["inline"] is None and items[large]["inline_large"] is True
        assert items[small]["inline_large"] is False and items[small]["inline"] is not None
        assert all(set(item) == {"id", "format", "type_name", "inline", "inline_large", "size"}
                   for item in items.values())
        assert sorted(_answer(s, token, ids[:3])[1]["items"], key=str) == sorted(
            [items[i] for i in ids[:3]], key=str)


@pytest.mark.parametrize("n", [limits.FORMAT_IDS * 2 + 1])
def test_the_http_store_asks_formats_in_pages_under_the_servers_cap(tmp_path, n: int) -> None:
    """``HttpStore.artifact_formats`` of more ids than the server takes in one request: every recorded one, asked
    :data:`~sematic_k8s.limits.FORMAT_IDS` a request (3 here)."""
    with serve(tmp_path) as s:
        ids = _recorded(s.store, 6)
        asked = [f"{i:064x}" for i in range(n - len(ids))] + ids
        http = HttpStore(s.url, s.key)
        try:
            assert http.artifact_formats(asked) == s.store.artifact_formats(ids)
        finally:
            http.close()


@pytest.mark.parametrize("caller", ["token", "key"])
def test_a_driver_asking_a_server_older_than_the_route_gets_the_formats_from_whole_records(
        tmp_path, monkeypatch, caller: str) -> None:
    """A server older than ``POST /store/artifact_formats`` (its route and its tokens' leave to call it taken out, as
    they were) answers a driver's token 403 (the token may not call that path) and a key 404: the HTTP store reads the
    formats from the whole records (``POST /store/artifacts``) either way, the same as the route gives. Was: a token's
    403 raised (a rerun's driver built with this version failed against an older server)."""
    from sematic_k8s_server import scopes

    with serve(tmp_path) as s:
        ids = _recorded(s.store, 60)
        s.app.router.routes[:] = [r for r in s.app.router.routes
                                  if getattr(r, "path", "") != "/api/v1/store/artifact_formats"]
        monkeypatch.setattr(scopes, "TOKEN_ROUTES", tuple(
            (m, re.compile(p.pattern.replace("|artifact_formats", ""))) for m, p in scopes.TOKEN_ROUTES))
        http = HttpStore(s.url, s.key)
        driver = HttpStore(s.url, http.mint_token(record_resolution(s.url, s.key, kind="cloud", state="running"))
                           ) if caller == "token" else http
        try:
            assert driver.artifact_formats(ids) == s.store.artifact_formats(ids)
        finally:
            driver.close()
            http.close()
