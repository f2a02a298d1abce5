"""The API behind the dashboard, on SQLite and PostgreSQL, through a real server: the pipelines index
(grouped by root func, filters, progress), tags and notes (API and HTTP store), a resolution's overview
(fan-outs grouped and paged, edges, distinguishing inputs), run counts, followed logs, and the storage
allow-list (a record never makes the server read a storage it is not configured with)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import sematic_k8s as sk
from sematic_k8s import serialization
from sematic_k8s.storage.base import log_key, put_artifact
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s_server.storages import ALLOW_ENV, StorageNotAllowed, Storages, names
from serving import Served, serve

try:
    import big_resolution as big
    import server_pipeline as sp
    import sweep_pipeline as sw
except ImportError:  # pragma: no cover
    from tests import big_resolution as big
    from tests import server_pipeline as sp
    from tests import sweep_pipeline as sw


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with serve(tmp_path, url) as s:
        yield s


def test_pipelines_index_labels_and_filters(served: Served, tmp_path: Path) -> None:
    resolver = sk.LocalResolver(home=tmp_path, server=served.url, api_key=served.key)
    sweep = sw.sweep(3)
    assert sweep.resolve(resolver)["best"] == 0.3
    adds = [sp.add(i, 1) for i in range(3)]
    for f in adds:
        f.resolve(resolver)
    big_id = big.record_fanout(served.store, 40, running=5)
    with served.client() as c:
        page = c.get("/api/v1/pipelines").json()
        groups = {g["root_func_path"].rpartition(":")[2]: g for g in page["groups"]}
        assert set(groups) == {"sweep", "add", "pipeline"} and page["total"] == 3
        assert [g["root_func_path"] for g in page["groups"]] == [  # the func with the newest resolution first
            "server_pipeline:add", "sweep_pipeline:sweep", "sweep:pipeline"]
        assert groups["add"]["count"] == 3 and groups["add"]["states"] == {"resolved": 3}
        assert [r["id"] for r in groups["add"]["resolutions"]] == [f.id for f in reversed(adds)]
        running = groups["pipeline"]["resolutions"][0]
        assert running["run_counts"] == {"resolved": 36, "running": 6, "created": 1}  # progress: 36/43
        assert groups["sweep"]["resolutions"][0]["run_counts"] is None  # ended: not counted
        assert sorted(page["funcs"]) == sorted(g["root_func_path"] for g in page["groups"])

        # tags and a note, from the API and the HTTP store
        r = c.post(f"/api/v1/resolutions/{adds[0].id}/labels", json={"add": ["nightly", "lr=0.1"], "note": "first"})
        assert r.status_code == 200 and r.json()["tags"] == ["lr=0.1", "nightly"] and r.json()["note"] == "first"
        res = HttpStore(served.url, served.key).label_resolution(adds[0].id, remove=["lr=0.1"])
        assert res is not None and res.tags == ["nightly"] and res.note == "first"
        assert c.post(f"/api/v1/resolutions/{adds[1].id}/labels", json={"note": "keep the tags"}).json()["tags"] == []
        bad = c.post(f"/api/v1/resolutions/{adds[0].id}/labels", json={"add": ["two words"]})
        assert bad.status_code == 422 and "bad tag 'two words'" in bad.text
        assert c.post(f"/api/v1/resolutions/{'ab' * 16}/labels", json={"add": ["x"]}).status_code == 404
        assert served.store.get_resolution(adds[0].id).tags == ["nightly"]
        # the same body sent twice, someone's change between: the second (a late copy) adds nothing back
        labels = f"/api/v1/resolutions/{adds[0].id}/labels"
        twice = {"add": ["x"], "labels_version": res.labels_version}
        assert c.post(labels, json=twice).json()["tags"] == ["nightly", "x"]
        assert c.post(labels, json={"remove": ["x"]}).json()["tags"] == ["nightly"]
        late = c.post(labels, json=twice)
        assert late.status_code == 409 and late.json()["detail"] == (
            f"the labels of resolution {adds[0].id} changed since they were read (tags now: nightly; note now: "
            "'first'): nothing was changed; read them again and make your change to them")
        old = c.post(labels, json={"note": "mine", "note_was": "first"})  # an edit of a client before labels_version
        assert old.status_code == 422 and "note_was is no longer taken: send labels_version" in old.text
        assert served.store.get_resolution(adds[0].id).tags == ["nightly"]

        def ids(**query: str) -> set[str]:
            page = c.get("/api/v1/pipelines", params={**query, "per_func": 50}).json()
            return {r["id"] for g in page["groups"] for r in g["resolutions"]}

        assert ids(tag="nightly") == {adds[0].id}
        assert ids(q="NIGHT") == {adds[0].id}  # tags, notes and funcs match in any case
        assert ids(q="tags") == {adds[1].id}
        assert ids(q=sweep.id[:8]) == {sweep.id}  # an id prefix
        assert ids(func="add") == {f.id for f in adds}
        assert ids(func="sweep_pipeline:sweep") == {sweep.id}
        assert ids(state="running") == {big_id}
        assert ids(q="100%_") == set()  # LIKE wildcards are literal
        created = served.store.get_resolution(adds[1].id).created_at
        since = (created.isoformat() + "Z")
        assert ids(since=since) == {adds[1].id, adds[2].id}
        assert ids(until=since) == {sweep.id, adds[0].id, big_id}  # big's records are from January
        assert ids(since="2026-01-05T08:00:00+00:00", until="2026-01-05T10:00:00+00:00") == {big_id}
        hist = c.get("/api/v1/pipelines", params={"func": "add", "per_func": 1, "history_offset": 1}).json()
        assert [r["id"] for r in hist["groups"][0]["resolutions"]] == [adds[1].id]
        assert c.get("/api/v1/pipelines", params={"since": "yesterday"}).status_code == 422

        counts = c.get(f"/api/v1/resolutions/{big_id}/counts").json()
        assert counts == {"resolution_id": big_id, "state": "running", "total": 43,
                          "counts": {"resolved": 36, "running": 6, "created": 1}, "waiting": {}, "driver_epoch": 0}
        assert c.get(f"/api/v1/resolutions/{'ab' * 16}/counts").status_code == 404


def test_overview_groups_fan_outs_and_tells_runs_apart(served: Served, tmp_path: Path) -> None:
    resolver = sk.LocalResolver(home=tmp_path, server=served.url, api_key=served.key)
    f = sw.sweep(30)
    f.resolve(resolver)
    with served.client() as c:
        ov = c.get(f"/api/v1/resolutions/{f.id}/overview").json()
        assert ov["total_runs"] == 1 + 3 + 30 + 1 and ov["counts"] == {"resolved": 35}
        kinds = {(n["kind"], n["func_name"]) for n in ov["nodes"]}
        assert kinds == {("run", "sweep"), ("run", "train"), ("group", "add"), ("run", "best")}
        group = next(n for n in ov["nodes"] if n["kind"] == "group")
        assert group["count"] == 30 and group["states"] == {"resolved": 30} and group["parent_id"] == f.id
        assert sorted(n["label"] for n in ov["nodes"] if n["func_name"] == "train") == [
            "lr=0.001", "lr=0.01", "lr=0.1"]
        by_id = {n["id"]: n for n in ov["nodes"]}
        best = next(n for n in ov["nodes"] if n["func_name"] == "best")
        into_best = {(by_id[e["source"]]["func_name"], tuple(e["params"])) for e in ov["edges"]
                     if e["destination"] == best["id"]}
        assert into_best == {("train", ("scores",)), ("add", ("sums",))}  # the group's 30 edges are one

        # a page of the group, one by one; the rest stays a group
        page = c.get(f"/api/v1/resolutions/{f.id}/overview",
                     params={"expand": f"{group['id']}@10", "page": 12}).json()
        adds = [n for n in page["nodes"] if n["func_name"] == "add"]
        rest = [n for n in adds if n["kind"] == "group"]
        assert len(adds) == 13 and len(rest) == 1
        assert rest[0]["count"] == 18 and (rest[0]["offset"], rest[0]["shown"], rest[0]["total"]) == (10, 12, 30)
        assert sorted(n["label"] for n in adds if n["kind"] == "run") == sorted(f"x={i}" for i in range(10, 22))
        assert c.get(f"/api/v1/resolutions/{f.id}/overview", params={"expand": "nope"}).status_code == 422
        assert c.get(f"/api/v1/resolutions/{'cd' * 16}/overview").status_code == 404

        # thousands of runs: a few nodes
        big_id = big.record_fanout(served.store, 5000, running=20)
        ov = c.get(f"/api/v1/resolutions/{big_id}/overview").json()
        assert ov["total_runs"] == 5003 and len(ov["nodes"]) == 4
        group = next(n for n in ov["nodes"] if n["kind"] == "group")
        assert group["count"] == 5000 and group["states"] == {"resolved": 4980, "running": 20}

        # the func's source text was recorded with each run
        run = c.get(f"/api/v1/runs/{best['id']}").json()
        assert run["source_text"].startswith("@sk.func\ndef best(") and "picking the best" in run["source_text"]


def test_a_large_log_is_served_a_part_at_a_time_cut_at_whole_characters(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A log of megabytes is answered a part at a time (4 MiB by default, at most 16 MiB), each cut at whole UTF-8
    characters, with where it starts and where the next begins; its last part from the start of a line; the HTTP
    store (the CLI's `logs`) reads it whole, part by part."""
    with serve(tmp_path) as s, s.client() as c:
        f = sp.add(1, 2)
        f.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key))
        storage = LocalStorage(tmp_path / "storage")
        before = c.get(f"/api/v1/runs/{f.id}/logs").content
        text = before.decode() + "".join(f"line {i}: é € 𝄞 {'x' * (i % 40)}\n" for i in range(250_000))
        storage.append(log_key(f.id), text.encode()[len(before):])
        size = len(text.encode())
        url = f"/api/v1/runs/{f.id}/logs"

        def part(**params: int) -> tuple[str, int, int, int]:
            r = c.get(url, params=params)
            assert r.status_code == 200, r.text
            return r.text, int(r.headers["x-log-start"]), int(r.headers["x-log-next"]), int(r.headers["x-log-size"])

        first, start, following, whole = part()
        assert size > 9_000_000 and whole == size and start == 0 and (4 << 20) - 4 < following <= 4 << 20
        assert first.encode() == text.encode()[:following]  # no character cut (a cut one would be U+FFFD)
        got, offset = [first], following
        while offset < size:
            chunk, start, offset, _ = part(offset=offset)
            assert start == len("".join(got).encode())
            got.append(chunk)
        assert "".join(got) == text
        small, offset = [], 0  # parts of 5 bytes: most of them end inside a character of 2, 3 or 4 bytes
        while offset < 2_000:
            chunk, _, offset, _ = part(offset=offset, limit=5)
            small.append(chunk)
        assert "".join(small) == text.encode()[:offset].decode() and "\ufffd" not in "".join(small)
        last, start, following, _ = part(tail=1_000)
        assert size - 1_000 < start and text.encode()[start - 1:start] == b"\n" and following == size
        assert last.encode() == text.encode()[start:]
        assert part(offset=size + 10)[1:] == (size, size, size)
        assert c.get(url, params={"limit": (16 << 20) + 1}).status_code == 422

        monkeypatch.setattr("sematic_k8s.store.http.LOG_PART_BYTES", 1 << 20)  # the CLI's reads: part by part
        store = sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key).store
        assert isinstance(store, HttpStore) and store.get_logs(f.id) == text.encode()


def test_an_artifact_larger_than_the_server_serves_is_a_413_without_reading_it_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server reads an artifact whole to verify it before sending a byte: one over its cap (256 MiB; 1 MiB
    here) is refused in words, as its record says, or (a record that says less) after reading no more than the
    cap; a smaller one is served, verified."""
    monkeypatch.setattr("sematic_k8s_server.verdicts.WHOLE_READ_BYTES", 1 << 20)
    storage = LocalStorage(tmp_path / "storage")
    with serve(tmp_path, storage=storage) as s, s.client() as c:
        small, big = serialization.serialize(b"s" * 100_000), serialization.serialize(b"b" * (2 << 20))
        lying = serialization.serialize(b"l" * (2 << 20))
        b = Batch()
        for value in (small, big, lying):
            put_artifact(storage, value)
            b.artifacts[value.id] = {**value.record(), "created_at": utcnow()}
        b.artifacts[lying.id]["size"] = 10  # its record says less than its bytes are
        s.store.write(b)
        r = c.get(f"/api/v1/artifacts/{small.id}/data")
        assert r.status_code == 200 and r.content == small.payload
        for value in (big, lying):
            r = c.get(f"/api/v1/artifacts/{value.id}/data")
            assert r.status_code == 413, r.text[:200]
            assert f"artifact {value.id} is {len(value.payload):,} bytes, more than this server serves" in r.json()[
                "detail"] and "read it from its storage directly" in r.json()["detail"]


def test_logs_follow_and_the_storage_allow_list(tmp_path: Path) -> None:
    with serve(tmp_path) as s, s.client() as c:
        f = sp.add(1, 2)
        resolver = sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key)
        resolver.inline_limit = 0  # its output in a file, as a cloud resolution's (small ones are kept inline)
        f.resolve(resolver)
        storage = LocalStorage(tmp_path / "storage")
        storage.append(log_key(f.id), b"")
        whole = c.get(f"/api/v1/runs/{f.id}/logs")
        size = int(whole.headers["x-log-size"])
        storage.append(log_key(f.id), "more: é\n".encode())
        more = c.get(f"/api/v1/runs/{f.id}/logs", params={"offset": size})
        assert more.text == "more: é\n" and int(more.headers["x-log-size"]) == size + len("more: é\n".encode())

        # a cloud resolution recorded in a storage this server does not read: a clear error, nothing read
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        other = tmp_path / "other"
        LocalStorage(other).put(log_key(f.id), b"from the other storage\n")
        for url in (f"s3://bucket/logs?endpoint=http%3A%2F%2F{host}", other.as_uri()):
            b = Batch()
            b.resolution_updates[f.id] = {"settings": {"kind": "cloud", "storage_url": url}}
            s.store.write(b)
            r = c.get(f"/api/v1/runs/{f.id}/logs")
            assert r.status_code == 409 and ALLOW_ENV in r.json()["detail"] and url in r.json()["detail"]
            data = c.get(f"/api/v1/artifacts/{s.store.get_run(f.id).output_id}/data", params={"resolution_id": f.id})
            assert data.status_code == 409
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody called
        listener.close()

    # the same storage on the allow-list: read from there
    (tmp_path / "again").mkdir()
    with serve(tmp_path / "again", allowed_storages=(other.as_uri(),)) as s2, s2.client() as c:
        s2.store.write(_copy_resolution(s.store, f.id))
        r = c.get(f"/api/v1/runs/{f.id}/logs")
        assert r.status_code == 200 and r.text == "from the other storage\n"

    storages = Storages(LocalStorage(tmp_path / "mine"), [other.as_uri()])
    assert storages.for_url(other.as_uri() + "/") is storages.for_url(other.as_uri())
    with pytest.raises(StorageNotAllowed):
        storages.for_url((tmp_path / "elsewhere").as_uri())
    # a record that gives no endpoint names the configured S3 storage of its bucket and prefix; one that
    # gives another endpoint, or another prefix, names none
    s3 = "s3://bucket/logs?endpoint=http%3A%2F%2F127.0.0.1%3A9000"
    assert names("s3://bucket/logs", s3) and names(s3, s3)
    assert not names("s3://bucket/logs?endpoint=http%3A%2F%2Fevil.example", s3)
    assert not names("s3://bucket/other", s3) and not names("s3://other/logs", s3)


def _copy_resolution(store, root_id: str) -> Batch:  # noqa: ANN001
    b = Batch()
    b.add_resolution(store.get_resolution(root_id))
    for r in store.runs_of_root(root_id):
        b.add_run(r)
    return b


def test_old_databases_get_the_new_columns(tmp_path: Path) -> None:
    """An embedded database made before tags, notes, source text, driver epochs, write sequences, labels' versions,
    the index of active key names, owners, task copies left and read-only keys: opened again, it gains the columns and
    keeps its records; a server database at revision 0002 is migrated the same way."""
    import sqlalchemy as sa

    from revisions import at_revision
    from sematic_k8s.store import schema
    from sematic_k8s.store.sql import SqlStore
    from sematic_k8s_server.db import open_store

    for name in ("embedded", "server"):
        url = f"sqlite:///{tmp_path / name}.sqlite3"
        # a server database migrated before these columns (0002: its API keys); an embedded home made before the
        # store had migrations: the first release's three tables alone, no revision
        with at_revision(url, "0002" if name == "server" else schema.FIRST_REVISION) as conn:
            conn.execute(sa.text("INSERT INTO resolutions (id, root_func_path, state, settings, created_at) "
                                 "VALUES ('abc', 'm:f', 'resolved', '{}', '2026-01-01 00:00:00')"))
            if name == "embedded":
                conn.execute(sa.text("DROP TABLE alembic_version"))
        store = SqlStore(url) if name == "embedded" else open_store(url)
        res = store.label_resolution("abc", add=["kept"], note="still here", set_note=True, labels_version=0)
        assert res is not None and res.tags == ["kept"] and res.note == "still here" and res.root_func_path == "m:f"
        assert res.labels_version == 1
        store.close()
