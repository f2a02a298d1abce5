"""Read-only API keys (``api-keys create NAME --read-only``: dashboards, monitoring, CI status checks), over real HTTP
on SQLite and PostgreSQL: every read works (API, events stream, artifacts, logs); every write and action, whatever
its route, is a 403 whose one line names the key, its role and what to use instead, nothing of it applied. Was: every
key could record, cancel, re-run and label. The one check sits in the Guard: a walk over the app's routes shows every
route but GET and HEAD refuses the key (a route added later is covered without a check of its own). A read-only key
is refused at once once revoked, as any key; ``api-keys list`` shows each key's role; migration 0014 keeps every key
made before with exactly its rights."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner

import sematic_k8s as sk
from revisions import at_revision, table_as_left
from sematic_k8s.errors import ServerError
from sematic_k8s.storage.base import log_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store import schema
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import utcnow
from sematic_k8s_server import auth
from sematic_k8s_server.cli import main
from serving import Served, app_routes, create_api_key, record_resolution, serve

READS = frozenset({"GET", "HEAD"})
PARAMS = {"artifact_id": "b" * 64, "key_id": "c" * 32, "cache_key": "d" * 64}  # else: the seeded resolution's id


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    db_url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with serve(tmp_path, db_url) as s:
        yield s


def _db_url(served: Served) -> str:
    return served.store.engine.url.render_as_string(hide_password=False)


def _viewer(served: Served, name: str = "viewer") -> str:
    """A read-only key made as a person makes one: ``sematic-k8s api-keys create NAME --read-only``."""
    return create_api_key(_db_url(served), served.home, name, "--read-only")


def _cli(served: Served, *args: str) -> str:
    result = CliRunner().invoke(main, ["api-keys", *args, "--db-url", _db_url(served), "--home", str(served.home)])
    assert result.exit_code == 0, result.output
    return result.output


def _refused(r: httpx.Response, name: str = "viewer") -> str:
    assert r.status_code == 403, (r.request.method, r.request.url.path, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    assert f"key {name!r} is read-only: use a" in detail, detail
    return detail


def _seeded(served: Served) -> str:
    """A running cloud resolution recorded by the user key, with an input artifact and a log."""
    storage = LocalStorage(served.home / "storage")
    root = record_resolution(served.url, served.key, kind="cloud", state="running", image="img@sha256:" + "e" * 64,
                             inputs={"x": ("json", b"42")}, storage=storage)
    storage.put(log_key(root), b"hello\n")
    return root


def _as_recorded(served: Served, root: str) -> tuple:
    """What a refused action would have changed: the resolution (state, labels, note, cancel), the resolutions
    and the keys recorded."""
    res = served.store.get_resolution(root)
    assert res is not None
    run = served.store.get_run(root)
    assert run is not None
    keys = [(k["name"], k["revoked_at"]) for k in auth.list_keys(served.store.engine)]
    return (res.state, res.tags, res.note, res.labels_version, run.state, run.notes,
            served.store.cancel_requested(root), len(served.store.list_resolutions()), keys)


def test_a_read_only_key_reads_everything_and_changes_nothing(served: Served) -> None:
    viewer = _viewer(served)
    root = _seeded(served)
    art = served.store.get_run(root).inputs["x"]
    with served.client(viewer) as c:
        for path in ["/api/v1/resolutions", f"/api/v1/resolutions/{root}", f"/api/v1/resolutions/{root}/graph",
                     f"/api/v1/resolutions/{root}/counts", f"/api/v1/resolutions/{root}/overview", "/api/v1/runs",
                     f"/api/v1/runs/{root}", f"/api/v1/runs/{root}/logs", f"/api/v1/artifacts/{art}",
                     f"/api/v1/artifacts/{art}/data", "/api/v1/pipelines", f"/api/v1/store/runs_of_root/{root}",
                     f"/api/v1/store/cancel_requested/{root}"]:
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:300])
        assert c.get(f"/api/v1/artifacts/{art}/data").content == b"42"
        # the live events stream: opened, and it carries a change the user key makes
        with c.stream("GET", "/api/v1/events") as stream, served.client() as user:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == ": connected"
            labeled = threading.Thread(target=lambda: user.post(f"/api/v1/resolutions/{root}/labels",
                                                                json={"add": ["seen"]}), daemon=True)
            labeled.start()
            assert any(line.startswith("data: ") and root in line for line in lines)
            labeled.join(10)
        before = _as_recorded(served, root)
        asked = {
            f"/api/v1/resolutions/{root}/cancel": ({}, "to cancel a resolution"),
            f"/api/v1/resolutions/{root}/rerun": ({"mode": "continue"}, "to re-run a resolution"),
            f"/api/v1/resolutions/{root}/labels": ({"add": ["x"], "note": "mine"}, "to label a resolution"),
            f"/api/v1/resolutions/{root}/token": ({}, "to mint or revoke a resolution token"),
            "/api/v1/store/write": ({"resolution_updates": {root: {"state": "failed"}},
                                     "run_updates": {root: {"state": "failed", "notes": {"a": 1}}}},
                                    "to record runs"),
            "/api/v1/api-keys": ({"name": "mine", "admin": True}, "use an admin key to manage API keys"),
        }
        for path, (body, says) in asked.items():
            assert says in _refused(c.post(path, json=body)), path
        assert _refused(c.post(f"/api/v1/resolutions/{root}/cancel", json={})).startswith(
            "key 'viewer' is read-only: use a user key to cancel a resolution")
        assert c.get("/api/v1/api-keys").status_code == 403  # listing keys takes an admin key, as for a user key
    assert _as_recorded(served, root) == before  # nothing of any refused request applied
    assert served.store.get_resolution(root).tags == ["seen"]  # the user key's label: the one change
    with served.client() as c:  # the user key still may (its rights unchanged)
        assert c.post(f"/api/v1/resolutions/{root}/cancel", json={}).status_code == 202


def test_every_route_but_get_refuses_a_read_only_key(served: Served) -> None:
    """Walks the app's own routes: any route that takes another method than GET or HEAD, now or added later, refuses
    a read-only key with the one-line 403, nothing applied, but the two POST routes marked as reads (the Guard's one
    exception, ``auth.READ_BY_POST``), which answer it (here 422: the body the walk sends lacks their fields); the same
    key reads on. A route newly marked as a read fails this test until it is named here."""
    viewer = _viewer(served)
    root = _seeded(served)
    before = _as_recorded(served, root)
    walked, answered = [], []
    with served.client(viewer) as c:
        for template, route in app_routes(served.app.routes):
            for method in sorted(set(route.methods) - READS):
                path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS.get(m.group(1), root), template)
                r = c.request(method, path, json={})
                if r.status_code == 422:
                    answered.append((method, template))
                else:
                    _refused(r)
                    walked.append((method, template))
        assert c.get(f"/api/v1/resolutions/{root}").status_code == 200
    assert ("POST", "/api/v1/store/write") in walked and ("POST", "/api/v1/api-keys") in walked, walked
    assert len(walked) + len(answered) >= 10, walked
    assert sorted(answered) == [("POST", "/api/v1/store/artifact_formats"), ("POST", "/api/v1/store/artifacts"),
                                ("POST", "/api/v1/store/cached")], answered
    assert _as_recorded(served, root) == before


def _rows(served: Served) -> dict[str, list[tuple]]:
    """Every row of every table of the server's database: what a request that writes nothing leaves as it was."""
    tables = sa.MetaData()
    tables.reflect(served.store.engine)
    with served.store.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(sa.select(t))), key=repr) for name, t in tables.tables.items()}


def test_a_read_only_keys_cache_look_up_and_artifact_records_by_id_are_reads_that_write_nothing(
        served: Served) -> None:
    """``POST /store/cached`` (a planning wave's cache look-up) and ``POST /store/artifacts`` (records by id) are reads
    sent by POST, their body holding many keys or ids: a read-only key gets their answers, as through the HTTP store
    (the server's rule of whose runs a look-up may hit unchanged: a key that recorded nothing, trusting no other, hits
    none), and every row of the database is as it was. Was: each a 403, as a write."""
    viewer = _viewer(served)
    root = _seeded(served)
    art = served.store.get_run(root).inputs["x"]
    before = _rows(served)
    store = HttpStore(served.url, viewer)
    try:
        assert [a.id for a in store.artifacts([art])] == [art]
        assert store.find_reusable(["d" * 64]) == ({}, set())
    finally:
        store.close()
    with served.client(viewer) as c:
        r = c.post("/api/v1/store/cached", json={"keys": ["d" * 64]})
        assert r.status_code == 200 and r.json() == {"items": {}, "skipped": {}}, r.text
    assert _rows(served) == before


@pytest.mark.parametrize("bad", ["\x00", "a" * 1_000_000, "x", "A" * 64], ids=["nul", "megabyte", "short", "upper"])
def test_artifact_records_by_id_take_artifact_ids_only(served: Served, bad: str) -> None:
    """``POST /store/artifacts`` (a read any key, a read-only one too, may send) takes artifact ids (sha256 hex), as
    ``POST /store/cached`` takes cache keys: anything else is a one-line 422 naming the body field, never sent to the
    database. Was: a NUL character was PostgreSQL's 422 naming nothing ("the database refuses a value of this
    request") and SQLite's search; 10,000 ids of a megabyte each (the body's bound) went into one query."""
    with served.client(_viewer(served)) as c:
        r = c.post("/api/v1/store/artifacts", json={"ids": ["b" * 64, bad]})
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"]
    assert "\n" not in detail and detail.startswith("body field 'ids.1': String should match pattern"), detail[:300]


MARKER = "SK_TEST_READ_ONLY_MARKERS"  # a directory: what ran of the user's code leaves a file there


@sk.func
def body_marked(x: int) -> int:
    (Path(os.environ[MARKER]) / "body").write_text("ran")
    return x


def marked_namespace(root: Any) -> str:  # noqa: ANN401 - the root Future
    (Path(os.environ[MARKER]) / "cache_namespace").write_text("ran")
    return "ns"


def test_a_local_resolver_with_a_read_only_key_fails_before_any_user_code_runs(
        served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LocalResolver recording through the server with a read-only key fails at once, with one request (``GET
    /whoami``), in one line naming the key, its role and what to do, before any of the user's code runs (its
    cache_namespace callable, the func's body, each writing a marker file) and with nothing recorded. Was: the
    cache_namespace called, then the first write refused ("... use a user key to record runs ... (POST
    /api/v1/store/write)"). The same pipeline with a user key resolves."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(MARKER, str(markers))
    viewer = _viewer(served)
    resolver = sk.LocalResolver(home=tmp_path / "home", server=served.url, api_key=viewer,
                                cache_namespace=marked_namespace)
    with pytest.raises(ServerError) as info:
        body_marked(7).resolve(resolver)
    said = str(info.value)
    assert said.startswith("key 'viewer' is read-only: resolve with a user key ($SEMATIC_K8S_API_KEY"), said
    assert "\n" not in said and info.value.status == 403, said
    assert sorted(p.name for p in markers.iterdir()) == [], "user code ran"
    assert served.store.list_resolutions() == []
    assert body_marked(7).resolve(sk.LocalResolver(home=tmp_path / "home", server=served.url, api_key=served.key,
                                                   cache_namespace=marked_namespace)) == 7
    assert sorted(p.name for p in markers.iterdir()) == ["body", "cache_namespace"]


def test_a_revoked_read_only_key_is_refused_at_once_and_the_list_shows_roles(served: Served) -> None:
    viewer = _viewer(served, "ci-status")
    listed = {line.split()[1]: line for line in _cli(served, "list").splitlines()[1:]}
    assert "read-only" in listed["ci-status"] and "active" in listed["ci-status"], listed
    assert " admin " in listed["tests-admin"] and " user " in listed["tests"], listed
    with served.client(served.admin_key) as admin:
        items = admin.get("/api/v1/api-keys").json()["items"]
        roles = {k["name"]: (k["role"], k["admin"], k["read_only"]) for k in items}
        assert roles == {"tests": ("user", False, False), "tests-admin": ("admin", True, False),
                         "ci-status": ("read-only", False, True)}
        made = admin.post("/api/v1/api-keys", json={"name": "dash", "read_only": True})
        assert made.status_code == 201 and made.json()["role"] == "read-only", made.text
        both = admin.post("/api/v1/api-keys", json={"name": "both", "admin": True, "read_only": True})
        assert both.status_code == 422 and "admin and read-only" in both.json()["detail"], both.text
    with served.client(made.json()["key"]) as c:
        _refused(c.post("/api/v1/api-keys", json={"name": "x"}), "dash")
    with served.client(viewer) as c:
        assert c.get("/api/v1/resolutions").status_code == 200
        _cli(served, "revoke", "ci-status")
        r = c.get("/api/v1/resolutions")
        assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
    result = CliRunner().invoke(main, ["api-keys", "create", "both", "--admin", "--read-only", "--db-url",
                                       _db_url(served), "--home", str(served.home)])
    assert result.exit_code == 2 and "--admin and --read-only" in result.output, result.output
    assert "both" not in [k["name"] for k in auth.list_keys(served.store.engine)]


def test_upgrading_keeps_every_key_with_exactly_its_rights(db_url: str) -> None:
    keys = {"root": (auth.new_key(), True), "alice": (auth.new_key(), False)}
    with at_revision(db_url, "0013_tasks_left") as conn:
        old = table_as_left(conn, "api_keys")
        assert "read_only" not in old.c
        for name, (key, admin) in keys.items():
            conn.execute(sa.insert(old).values(id=uuid.uuid4().hex, name=name, key_hash=auth.hash_key(key),
                                               created_at=utcnow(), admin=admin, revoked_at=None))
    engine = sa.create_engine(db_url)
    try:
        schema.migrate(engine)
        checker = auth.Authenticator(engine, required=True)
        assert {name: checker.authenticate(key).role for name, (key, _) in keys.items()} == {
            "root": auth.ADMIN, "alice": auth.USER}
        viewer = auth.create_key(engine, "viewer", read_only=True)
        assert checker.authenticate(viewer).role == auth.READ_ONLY
        with engine.begin() as conn:  # a downgrade never widens a key: the read-only one is revoked, not a user key
            command.downgrade(schema.alembic_config(conn), "0013_tasks_left")
        with engine.connect() as conn:
            rows = {r.name: r.revoked_at for r in conn.execute(sa.select(old.c.name, old.c.revoked_at))}
        assert rows["viewer"] is not None and rows["root"] is None and rows["alice"] is None, rows
    finally:
        engine.dispose()
