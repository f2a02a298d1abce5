"""The same resolution code against either store: SqlStore (embedded) and HttpStore (through a real server)."""

from __future__ import annotations

import dataclasses

import pytest

import sematic_k8s as sk
from sematic_k8s import limits
from sematic_k8s.errors import DriverReplaced, LabelsChanged, ServerError, TooManyTags
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.wire import batch_from_json, batch_to_json, dumps
from sematic_k8s_server.config import ServerConfig
from serving import free_port, serve

try:
    import cache_records
    import server_pipeline as sp
except ImportError:  # pragma: no cover
    from tests import server_pipeline as sp
    from tests.support import cache_records


@pytest.fixture(params=["sql", "http"])
def setup(request, tmp_path, monkeypatch):
    """(resolver factory, the store it records to)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    if request.param == "sql":
        r = sk.LocalResolver(home=tmp_path)
        yield (lambda **kw: sk.LocalResolver(home=tmp_path, **kw)), r.store
        return
    with serve(tmp_path) as s:
        def make(**kw) -> sk.LocalResolver:
            return sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key, **kw)
        store = make().store
        assert isinstance(store, HttpStore)
        yield make, store


def by_func(store, root_id: str) -> dict[str, RunRecord]:
    return {r.func_name: r for r in store.runs_of_root(root_id)}


def test_same_pipeline_either_store(setup, tmp_path) -> None:
    make, store = setup
    flag = tmp_path / "flag"
    flag.touch()
    f = sp.pipeline(3, 4, str(flag))
    with pytest.raises(sk.ResolutionFailed) as info:
        f.resolve(make(cache_namespace="ns"))
    runs = by_func(store, f.id)
    assert info.value.run_id == runs["flaky"].id
    assert {n: r.state for n, r in runs.items()} == {"pipeline": "failed", "add": "resolved", "square": "resolved",
                                                     "flaky": "failed"}
    assert runs["flaky"].error["type"] == "RuntimeError"
    assert store.get_resolution(f.id).state == "failed"

    flag.unlink()
    again = sp.pipeline(0, 0, str(flag))  # arguments ignored on a rerun
    assert again.resolve(make(rerun_from=runs["flaky"].id[:12], cache_namespace="ns")) == 490  # a unique start
    new = by_func(store, again.id)
    assert new["add"].notes["reused_from"] == runs["add"].id
    rerun = store.get_resolution(again.id)
    assert rerun.rerun_of == f.id and rerun.settings["rerun_from"] == runs["flaky"].id  # whole

    third = sp.pipeline(3, 4, str(flag))
    assert third.resolve(make(cache_namespace="ns")) == 490
    assert by_func(store, third.id)["square"].cached_from == runs["square"].id
    assert store.find_cached(runs["square"].cache_key).id == runs["square"].id
    many = store.find_cached_many([runs["square"].cache_key, "0" * 64, runs["square"].cache_key])
    assert {k: r.id for k, r in many.items()} == {runs["square"].cache_key: runs["square"].id}
    assert store.find_cached_many([]) == {}
    if hasattr(store, "find_hits"):  # the SQL store: the hits with their outputs' formats, in one query
        hits = store.find_hits([runs["square"].cache_key, "0" * 64])
        art = store.get_artifact(runs["square"].output_id)
        assert {k: (r.id, a) for k, (r, a) in hits.items()} == {
            runs["square"].cache_key: (runs["square"].id, (art.format, art.type_name, art.inline, art.size))}
        assert store.artifact_formats([art.id, "0" * 64]) == {art.id: (art.format, art.type_name, art.inline, art.size)}
        outputs = store.output_formats(f.id)
        assert outputs[art.id] == (art.format, art.type_name, art.inline, art.size)
        assert set(outputs) == {r.output_id for r in store.runs_of_root(f.id) if r.output_id}

    # reads agree field by field (datetimes survive the JSON round trip)
    rec = store.get_run(runs["add"].id)
    assert isinstance(rec.created_at, type(utcnow())) and rec.created_at.tzinfo is None
    assert store.get_run("0" * 32) is None and store.get_resolution("0" * 32) is None
    assert [r.id for r in store.list_runs(root_id=f.id, func="add")] == [runs["add"].id]
    assert len(store.list_resolutions(limit=2)) == 2 and len(store.list_resolutions(limit=2, offset=2)) == 1
    art = store.get_artifact(runs["add"].output_id)
    assert art.summary == 7 and store.artifacts([art.id])[0] == art
    assert store.artifacts([]) == [] and store.get_artifact("f" * 64) is None
    assert store.cancel_requested(f.id) is False


def test_http_and_sql_records_are_equal(tmp_path) -> None:
    with serve(tmp_path) as s:
        f = sp.pipeline(1, 1, str(tmp_path / "none"))
        f.resolve(sk.LocalResolver(home=tmp_path, server=s.url, api_key=s.key))
        http = HttpStore(s.url, s.key)
        sql: SqlStore = s.store
        for run in sql.runs_of_root(f.id):
            assert http.get_run(run.id) == run
        assert http.get_resolution(f.id) == sql.get_resolution(f.id)
        assert sorted(http.runs_of_root(f.id), key=lambda r: r.id) == sorted(sql.runs_of_root(f.id), key=lambda r: r.id)
        http.close()


def test_http_store_pages_past_the_server_limit(tmp_path) -> None:
    with serve(tmp_path) as s:
        root = "aa" * 16
        batch = Batch()
        for i in range(1500):
            batch.add_run(RunRecord(id=f"{i:032x}", root_id=root, parent_id=None, func_path="m:f", func_name="f",
                                    state="created", created_at=utcnow()))
        s.store.write(batch)
        http = HttpStore(s.url, s.key)
        assert len(http.list_runs(root_id=root, limit=1200)) == 1200
        assert len(http.list_runs(root_id=root, limit=5000, offset=100)) == 1400
        assert len(http.runs_of_root(root)) == 1500


def test_artifact_records_of_more_ids_than_the_server_takes_at_once_are_asked_in_parts(tmp_path) -> None:
    """``HttpStore.artifacts`` of 25,000 ids (a driver's rerun of a fan-out of 12,500 runs wants each input's and
    output's record; a planning wave of that many cache hits, their outputs') gets every recorded one: asked
    :data:`~sematic_k8s.store.http.PAGE` ids a request (the server takes at most 10,000). Was: one request of all
    of them, refused (422), and the driver failed with it."""
    with serve(tmp_path) as s:
        ids = [f"{i:064x}" for i in range(25_000)]
        batch = Batch()
        for art in (ids[0], ids[12_345], ids[-1]):
            batch.artifacts[art] = {"id": art, "format": "json", "type_name": "int", "summary": 1, "size": 1,
                                    "created_at": utcnow()}
        s.store.write(batch)
        http = HttpStore(s.url, s.key)
        try:
            assert sorted(a.id for a in http.artifacts(ids)) == [ids[0], ids[12_345], ids[-1]]
        finally:
            http.close()


def _runs_batch(root: str, n: int, source: str = "x" * 200) -> Batch:
    batch = Batch(new_resolutions=[{"id": root, "root_func_path": "m:f", "state": "running", "created_at": utcnow()}])
    for i in range(n):
        batch.add_run(RunRecord(id=f"{root[:2]}{i:030x}", root_id=root, parent_id=None, func_path="m:f",
                                func_name="f", state="created", source_text=source, created_at=utcnow()))
    batch.update_run(f"{root[:2]}{0:030x}", state="running")
    return batch


def test_a_batch_over_the_servers_request_cap_lands_in_parts(tmp_path, monkeypatch) -> None:
    """A batch larger than the server takes (its --max-request-mb, here 64 KiB; a fan-out's records through a
    driver) is sent again in parts, in order, when refused with 413; one larger than the client's own part size
    goes in parts at once. A single record over the cap is refused in the server's words."""
    from sematic_k8s.store import http

    posts: list[int] = []
    with serve(tmp_path, config=ServerConfig(max_request_bytes=64 * 1024)) as s:
        store = HttpStore(s.url, s.key)
        request = store.connections.request
        monkeypatch.setattr(store.connections, "request", lambda method, target, body, headers: (
            posts.append(len(body or b"")) if target.endswith("/store/write") else None)
            or request(method, target, body, headers))
        store.write(_runs_batch("aa" * 16, 600))  # ~230 KB
        runs = s.store.runs_of_root("aa" * 16)
        assert len(runs) == 600 and {r.id: r.state for r in runs}[f"aa{0:030x}"] == "running"
        assert posts[0] > 64 * 1024 and len(posts) >= 5  # refused whole, then halves, and halves of those
        posts.clear()
        monkeypatch.setattr(http, "WRITE_BYTES", 16 * 1024)
        store.write(_runs_batch("bb" * 16, 300))
        assert len(s.store.runs_of_root("bb" * 16)) == 300
        assert posts and max(posts) <= 16 * 1024  # split before sending: nothing was refused
        with pytest.raises(ServerError, match="--max-request-mb") as info:
            store.write(_runs_batch("cc" * 16, 1, source="y" * 100_000))
        assert info.value.status == 413
        store.close()


def test_a_stale_drivers_batch_is_refused_in_every_part(tmp_path, monkeypatch) -> None:
    """A batch sent in parts carries its fence in each: once another driver took the resolution over, no part of
    the older driver's batch is recorded (it is told DriverReplaced, with the takeover's time)."""
    from sematic_k8s.store import http

    monkeypatch.setattr(http, "WRITE_BYTES", 16 * 1024)
    with serve(tmp_path) as s:
        store = HttpStore(s.url, s.key)
        store.write(_runs_batch("dd" * 16, 1))
        older = store.take_over("dd" * 16)
        assert store.take_over("dd" * 16) == older + 1  # a second driver, through the server too
        batch = _runs_batch("ee" * 16, 200)  # ~75 KB: sent in parts
        batch.update_run(f"dd{0:030x}", state="resolved")
        batch.fence = {"dd" * 16: older}
        with pytest.raises(DriverReplaced, match=r"another driver took over resolution d+ at .* UTC: this one stops"):
            store.write(batch)
        assert s.store.runs_of_root("ee" * 16) == [] and s.store.get_run(f"dd{0:030x}").state == "running"
        batch.fence = {"dd" * 16: older + 1}  # the newer driver's
        store.write(batch)
        assert len(s.store.runs_of_root("ee" * 16)) == 200 and s.store.get_run(f"dd{0:030x}").state == "resolved"
        store.close()


def test_clear_errors(tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match=f"cannot reach the sematic-k8s server at {dead}"):
        HttpStore(dead, retry_window=0.5).get_run("ab")
    with serve(tmp_path) as s:
        with pytest.raises(ServerError, match=f"API key missing or invalid for {s.url}") as info:
            HttpStore(s.url).get_run("ab")
        assert info.value.status == 401
        with pytest.raises(ServerError, match="HTTP 422"):
            HttpStore(s.url, s.key).write(Batch(run_updates={"ab": {"no_such_field": 1}}))
        with pytest.raises(ServerError, match="HTTP 422: bad batch: resolution ab has a sequence but no fence"):
            HttpStore(s.url, s.key).write(Batch(run_updates={"ab": {"state": "running"}}, sequence={"ab": 1}))
    with pytest.raises(ValueError, match="http://"):
        HttpStore("127.0.0.1:8000")


def test_batch_json_round_trip() -> None:
    b = Batch()
    run = RunRecord(id="ab", root_id="ab", parent_id=None, func_path="m:f", func_name="f", state="created",
                    input_refs={"x": {"dict": [["k", {"run": "cd"}]]}}, created_at=utcnow())
    b.add_run(run)
    b.update_run("cd", state="resolved", ended_at=utcnow())
    b.artifacts["e" * 64] = {"id": "e" * 64, "format": "json", "type_name": "int", "summary": 1, "size": 1,
                             "created_at": utcnow()}
    import json
    back = batch_from_json(json.loads(dumps(batch_to_json(b))))
    assert dataclasses.asdict(back) == dataclasses.asdict(b)


def test_cache_hits_are_recorded_whole_either_store(setup, monkeypatch) -> None:
    """A fan-out resolved again from the cache: each hit is a Run of its own with every field a run executed in
    its place would have, pointing at the run it reused (SqlStore: written in bulk; HttpStore: new runs)."""
    make, store = setup
    first = cache_records.hit_fan(5)
    assert first.resolve(make(cache_namespace="ns")) == 15
    second = cache_records.hit_fan(5)
    assert second.resolve(make(cache_namespace="ns")) == 15
    cache_records.check_hit_records(store, first.id, second.id, 5)
    # the funcs' source changed since: still hits, noted as such, with the source hash of the code that runs now
    for func in (cache_records.hit_inc, cache_records.hit_total):
        monkeypatch.setitem(func.__dict__, "source_hash", "0" * 64)
    third = cache_records.hit_fan(5)
    assert third.resolve(make(cache_namespace="ns")) == 15
    cache_records.check_hit_records(store, first.id, third.id, 5, source_changed=True)


def test_a_note_edit_made_to_a_replaced_note_is_refused_either_store(setup, tmp_path) -> None:
    """Two people edit one note: the edit made to the labels as they were before the other's landed is refused
    whole (LabelsChanged, 409 through the server), with the labels as they now are; the same edit landing again (a
    retry) is no error and changes nothing; an edit without ``labels_version`` replaces whatever is there."""
    make, store = setup
    f = sp.pipeline(1, 2, str(tmp_path / "no-flag"))
    f.resolve(make())
    first = store.label_resolution(f.id, note="first", set_note=True)
    assert first is not None and first.labels_version == 1
    theirs = store.label_resolution(f.id, note="theirs", set_note=True, labels_version=1)
    assert theirs is not None and (theirs.note, theirs.labels_version) == ("theirs", 2)
    with pytest.raises(LabelsChanged, match=r"changed since they were read \(tags now: none; note now: 'theirs'\): "
                                            "nothing was changed"):
        store.label_resolution(f.id, add=["mine"], note="mine", set_note=True, labels_version=1)
    now = store.get_resolution(f.id)
    assert (now.note, now.tags, now.labels_version) == ("theirs", [], 2)  # nothing of the refused edit, its tag neither
    again = store.label_resolution(f.id, note="theirs", set_note=True, labels_version=1)  # their edit, retried
    assert again is not None and (again.note, again.labels_version) == ("theirs", 2)
    cleared = store.label_resolution(f.id, note="", set_note=True, labels_version=2)
    assert cleared is not None and cleared.note is None
    assert store.label_resolution(f.id, note="blind", set_note=True).note == "blind"


def test_a_tag_change_made_to_changed_labels_is_refused_unless_in_effect_either_store(setup, tmp_path) -> None:
    """Tags are changed as the labels were read (``labels_version``): a late copy of an older "add x" does not add x
    again after it was removed (although the tags are again what that change was made to), nor does a late copy of
    a note edit set a note back that was edited back; a change already in effect (the same one again, or someone
    else's alike) is no error and changes nothing; a change that changes nothing never conflicts."""
    make, store = setup
    f = sp.pipeline(1, 2, str(tmp_path / "no-flag"))
    f.resolve(make())
    v0 = store.get_resolution(f.id).labels_version
    assert v0 == 0
    added = store.label_resolution(f.id, add=["x"], labels_version=v0)
    assert (added.tags, added.labels_version) == (["x"], 1)
    removed = store.label_resolution(f.id, remove=["x"], labels_version=1)
    assert (removed.tags, removed.labels_version) == ([], 2)
    with pytest.raises(LabelsChanged, match=r"resolution \w+ changed since they were read \(tags now: none; note now: "
                                            r"empty\): nothing was changed; read them again"):
        store.label_resolution(f.id, add=["x"], labels_version=v0)  # the late copy of the first change
    assert (store.get_resolution(f.id).tags, store.get_resolution(f.id).labels_version) == ([], 2)
    # someone else adds y; adding y made to the labels before theirs is already in effect: no error, no change
    store.label_resolution(f.id, add=["y"], labels_version=2)
    same = store.label_resolution(f.id, add=["y"], labels_version=2)
    assert (same.tags, same.labels_version) == (["y"], 3)
    assert store.label_resolution(f.id, remove=["nope"], labels_version=0).labels_version == 3  # changes nothing
    with pytest.raises(LabelsChanged, match="tags now: y;"):  # not in effect: removing y made before it was added
        store.label_resolution(f.id, add=["z"], remove=["y"], labels_version=2)
    # a note edited a -> b, then back to a: the late copy of a -> b sets nothing back
    store.label_resolution(f.id, note="a", set_note=True, labels_version=3)
    store.label_resolution(f.id, note="b", set_note=True, labels_version=4)
    store.label_resolution(f.id, note="a", set_note=True, labels_version=5)
    with pytest.raises(LabelsChanged, match="note now: 'a'"):
        store.label_resolution(f.id, note="b", set_note=True, labels_version=4)
    assert store.label_resolution(f.id, add=["z"]).tags == ["y", "z"]  # unconditional: made whatever they are
    res = store.get_resolution(f.id)
    assert (res.tags, res.note, res.labels_version) == (["y", "z"], "a", 7)


def test_more_tags_than_a_resolution_has_is_too_many_tags_either_store(setup, tmp_path) -> None:
    """A change that would leave a resolution more tags than it may have raises TooManyTags (a ValueError: the
    caller's change, not the infrastructure) from either store, with nothing changed; through the server it was a
    ServerError, an InfrastructureError."""
    make, store = setup
    f = sp.pipeline(1, 2, str(tmp_path / "no-flag"))
    f.resolve(make())
    store.label_resolution(f.id, add=[f"t{i}" for i in range(limits.TAGS - 1)])
    with pytest.raises(TooManyTags, match=rf"resolution {f.id} would have {limits.TAGS + 1} tags: a resolution has at "
                                          rf"most {limits.TAGS}; nothing was changed"):
        store.label_resolution(f.id, add=["x", "y"])
    assert len(store.get_resolution(f.id).tags) == limits.TAGS - 1
    assert store.label_resolution(f.id, add=["x"]).tags[-1] == "x"  # up to the bound: made
