"""Cache poisoning across API keys, over real HTTP against a real uvicorn server with keys required: a key records a
resolved run under the cache key another key's pipeline computes, its output a pickle that makes a directory when
loaded. The other key's pipeline never loads it (its func runs, or its own earlier hit is reused), and says so once;
an operator's trusted key's outputs are reused; no key (nor a token it minted) writes into another key's resolution.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import sematic_k8s as sk
from sematic_k8s import caching, serialization
from sematic_k8s.errors import ServerError
from sematic_k8s.storage.base import artifact_key
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.tables import Base
from sematic_k8s_server import auth
from sematic_k8s_server.config import ServerConfig
from sematic_k8s_server.db import open_store
from sematic_k8s_server.schemas import UNTOLD
from serving import Served, peak_rss_kib, record_resolution, serve, server_process, write_through_api

NAMESPACE = "owners"
CALLS: list[int] = []


@sk.func(cache=True)
def double(x: int) -> int:
    CALLS.append(x)
    return 2 * x


@sk.func
def pipe(x: int) -> int:
    return double(x)


class MakesDirectory:
    """Pickled, it is ``os.mkdir(path)``: what any pickle may run when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (self.path,)


def resolve(served: Served, key: str | None, x: int) -> Any:  # noqa: ANN401 - the pipeline's value
    return pipe(x).resolve(sk.LocalResolver(home=served.home, server=served.url, api_key=key,
                                            cache_namespace=NAMESPACE))


def key_of(x: int) -> str:
    """The cache key ``double(x)`` computes in :data:`NAMESPACE`."""
    return caching.cache_key(NAMESPACE, double.path, {"x": serialization.serialize(x).id})


def record_hits(served: Served, key: str, outputs: dict[int, tuple[str, bytes]]) -> dict[int, str]:
    """Write, with API key ``key``, a resolution of its own holding a resolved run of ``double(x)`` for each of
    ``outputs`` (x -> its output's format and bytes, stored and recorded inline), as any client of the API can; the
    runs' ids, by x."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="evil:pipe", state="resolved", created_at=utcnow()))
    storage, ids = LocalStorage(served.home / "storage"), {}
    for x, (fmt, payload) in outputs.items():
        art = serialization.content_id(fmt, payload)
        storage.put(artifact_key(art), payload)
        batch.artifacts[art] = {"id": art, "format": fmt, "type_name": "int", "summary": None, "size": len(payload),
                                "created_at": utcnow(), "inline": payload}
        run_id = uuid.uuid4().hex
        batch.add_run(RunRecord(id=run_id, root_id=root, parent_id=None, func_path=double.path, func_name="double",
                                state="resolved", cache_key=key_of(x), output_id=art, source_hash=double.source_hash,
                                inputs={"x": serialization.serialize(x).id}, created_at=utcnow(), ended_at=utcnow()))
        ids[x] = run_id
    write_through_api(served.url, key, batch)
    return ids


def key_id(served: Served, key: str | None) -> str | None:
    return auth.Authenticator(served.store.engine, required=True).authenticate(key).key_id


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    CALLS.clear()
    with serve(tmp_path) as s:
        yield s


def test_another_keys_run_under_my_cache_key_is_never_loaded(served: Served, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Key A resolves double(1); key B then records later runs under the keys of double(1) and double(2), each output a
    pickle that makes a directory when loaded. A's double(1) reuses A's own run, its double(2) runs the func: nothing
    of B's is loaded, and the log says once that a run was skipped and why (never B's run's id: see
    test_a_cache_look_up_never_names_a_run_the_caller_may_not_reuse)."""
    bob = auth.create_key(served.store.engine, "bob")
    assert resolve(served, served.key, 1) == 2 and CALLS == [1]
    marker = tmp_path / "pwned"
    poisoned = (serialization.PICKLE, pickle.dumps(MakesDirectory(marker)))
    skipped = record_hits(served, bob, {1: poisoned, 2: poisoned})
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        assert resolve(served, served.key, 1) == 2 and CALLS == [1]  # its own hit, though B's run is more recent
        assert resolve(served, served.key, 2) == 4 and CALLS == [1, 2]
    assert not marker.exists()
    said = [r.getMessage() for r in caplog.records if "not reusing a cached run" in r.getMessage()]
    assert said == ["double: not reusing a cached run with the same cache key: another API key recorded it (or it "
                    "was recorded before the server recorded owners), and the server reuses only your key's outputs "
                    "and those of the keys it trusts (--cache-trusted-key); running it (said once per resolution)"]
    runs = Base.metadata.tables["runs"]
    with served.store.engine.connect() as conn:
        owned = conn.execute(sa.select(runs.c.cache_key).where(runs.c.cached_from.is_(None),
                                                               runs.c.cache_key.is_not(None),
                                                               runs.c.owner == key_id(served, served.key))).scalars()
        assert sorted(owned) == sorted([key_of(1), key_of(2)])  # A's two executed runs, recorded as A's
    carol = auth.create_key(served.store.engine, "carol")

    def cached(key: str | None) -> str | int:  # the single look-up, GET /store/cached/KEY: the run's id, or 404
        with served.client(key) as c:
            r = c.get(f"/api/v1/store/cached/{key_of(2)}")
            return r.json()["id"] if r.status_code == 200 else r.status_code

    assert cached(served.key) not in (skipped[2], 404) and cached(bob) == skipped[2] and cached(carol) == 404
    # B itself reuses its own runs (its pipeline loads what it recorded): the pickle runs, in B's process only
    with pytest.raises(sk.ResolutionFailed, match="output should be int, got NoneType"):
        resolve(served, bob, 2)
    assert marker.is_dir()


def test_a_cache_look_up_never_names_a_run_the_caller_may_not_reuse(served: Served) -> None:
    """A's key and B's each record a resolved run of double(1) (B's the more recent), B's alone one of double(2). A's
    look-ups over real HTTP (``POST /store/cached`` and ``GET /store/cached/KEY``, by A's key, a token A minted, a
    read-only key; through the HTTP store too) answer A's own run of double(1) as a hit and tell that double(2)'s key
    has a run A may not reuse, never its id: no id of B's is anywhere in an answer. B's own look-ups are as before
    (its runs its hits). Was: ``skipped`` named B's newest run of each key A missed."""
    bob = auth.create_key(served.store.engine, "bob")
    viewer = auth.create_key(served.store.engine, "viewer", read_only=True)
    assert served.key is not None
    mine = record_hits(served, served.key, {1: (serialization.JSON, b"2")})
    theirs = record_hits(served, bob, {1: (serialization.JSON, b"2"), 2: (serialization.JSON, b"4")})
    root = record_resolution(served.url, served.key, kind="local", state="running")
    token, _ = auth.mint_token(served.store.engine, root, minted_by=key_id(served, served.key),
                               lifetime=dt.timedelta(hours=1))
    keys = [key_of(1), key_of(2), key_of(3)]  # key_of(3): no run at all
    for caller, hits in ((served.key, {key_of(1): mine[1]}), (token, {key_of(1): mine[1]}), (viewer, {})):
        with served.client(caller) as c:
            r = c.post("/api/v1/store/cached", json={"keys": keys})
            assert r.status_code == 200, r.text
            assert {k: d["id"] for k, d in r.json()["items"].items()} == hits, r.text
            assert r.json()["skipped"] == {k: UNTOLD for k in keys[:2] if k not in hits}, r.text
            one = c.get(f"/api/v1/store/cached/{key_of(2)}")
            assert one.status_code == 404, one.text
            for answer in (r.text, one.text):
                assert not [run_id for run_id in theirs.values() if run_id in answer], answer
        store = HttpStore(served.url, caller)
        try:
            found, skipped = store.find_reusable(keys)
            assert {k: run.id for k, run in found.items()} == hits and skipped == set(keys[:2]) - hits.keys()
        finally:
            store.close()
    with served.client(bob) as c:  # the owner's own flow: its runs its hits, nothing skipped, nothing of A's named
        r = c.post("/api/v1/store/cached", json={"keys": keys})
        assert r.status_code == 200 and r.json()["skipped"] == {}, r.text
        assert {k: d["id"] for k, d in r.json()["items"].items()} == {key_of(x): theirs[x] for x in (1, 2)}
        assert mine[1] not in r.text
        assert c.get(f"/api/v1/store/cached/{key_of(2)}").json()["id"] == theirs[2]


def test_the_operators_trusted_key_fills_every_keys_cache_until_it_is_revoked(tmp_path: Path) -> None:
    """With ``cache_trusted_keys=("filler",)``, A's pipeline reuses what the key named filler recorded (its func does
    not run); once filler is revoked, its runs are hits for nobody else (the func runs)."""
    CALLS.clear()
    with serve(tmp_path, config=ServerConfig(cache_trusted_keys=("filler",))) as s:
        filler = auth.create_key(s.store.engine, "filler")
        record_hits(s, filler, {3: (serialization.JSON, b"6"), 4: (serialization.JSON, b"8")})
        assert resolve(s, s.key, 3) == 6 and CALLS == []
        auth.revoke_key(s.store.engine, "filler")
        assert resolve(s, s.key, 4) == 8 and CALLS == [4]
    with pytest.raises(ValueError, match=r"cache trusted key ' filler': give an API key's name"):
        ServerConfig(cache_trusted_keys=(" filler",))


def test_no_key_nor_its_token_writes_into_another_keys_resolution(served: Served) -> None:
    """Key B may not add a run to key A's resolution, change one of its runs, record a resolution under its id, take
    it over or mint a token for it: each a 403 saying what to do instead. A token B minted before that check (made
    here directly) may not write into it either; no record can set an owner (422)."""
    bob = auth.create_key(served.store.engine, "bob")
    bob_id = key_id(served, bob)
    theirs = record_resolution(served.url, served.key, kind="local", state="running")
    mine = record_resolution(served.url, bob, kind="local", state="running")
    new_run = {"id": uuid.uuid4().hex, "root_id": theirs, "func_path": double.path, "func_name": "double",
               "state": "resolved", "cache_key": key_of(5), "created_at": utcnow().isoformat()}
    refusal = ("API key 'bob' may not write {what}: another API key recorded its resolution, and a key records only "
               "the resolutions its key started: start one of your own, or re-run this one (sematic-k8s rerun RUN_ID) "
               "to build on its runs")
    with served.client(bob) as c:
        for body, what in (({"new_runs": {new_run["id"]: new_run}}, f"run {new_run['id']}"),
                           ({"run_updates": {theirs: {"state": "failed"}}}, f"run {theirs}"),
                           ({"new_runs": {theirs: {**new_run, "id": theirs, "root_id": mine}}}, f"run {theirs}"),
                           ({"resolution_updates": {theirs: {"state": "failed"}}}, f"resolution {theirs}"),
                           ({"new_resolutions": [{"id": theirs, "root_func_path": "evil:p", "state": "running",
                                                  "created_at": utcnow().isoformat()}]}, f"resolution {theirs}")):
            r = c.post("/api/v1/store/write", json=body)
            assert r.status_code == 403 and r.json()["detail"] == refusal.format(what=what), r.text
        for path, action in ((f"/api/v1/store/take_over/{theirs}", "take over"),
                             (f"/api/v1/resolutions/{theirs}/token", "mint a token for")):
            r = c.post(path, json={})
            assert r.status_code == 403 and r.json()["detail"].startswith(
                f"API key 'bob' may not {action} resolution {theirs}: another API key recorded it"), r.text
        r = c.post("/api/v1/store/write", json={"run_updates": {mine: {"owner": "x" * 32}}})
        assert r.status_code == 422 and "owner" in r.json()["detail"]
    token, _ = auth.mint_token(served.store.engine, theirs, minted_by=bob_id, lifetime=dt.timedelta(hours=1))
    store = HttpStore(served.url, token)
    try:
        with pytest.raises(ServerError) as refused:
            store.write(Batch(new_runs={new_run["id"]: {**new_run, "created_at": utcnow()}}))
        assert refused.value.status == 403 and (f"resolution {theirs}'s token may not write run {new_run['id']}: "
                                                "another API key recorded its resolution") in str(refused.value)
    finally:
        store.close()
    assert served.store.get_run(new_run["id"]) is None and served.store.get_run(theirs).state == "running"
    with served.client() as c:  # A itself writes its own resolution's runs
        assert c.post("/api/v1/store/write", json={"new_runs": {new_run["id"]: new_run}}).status_code == 200


def test_an_owner_the_server_has_not_seen_written_is_read_from_the_database(served: Served) -> None:
    """A's resolution and run recorded in the database by another server process (this one never saw them written,
    so its checks read their owner): B's update of the run is refused all the same, A's lands."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="running", created_at=utcnow()))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:p", func_name="p", state="running",
                            created_at=utcnow()))
    batch.new_resolutions[0]["owner"] = batch.new_runs[root]["owner"] = key_id(served, served.key)
    served.store.write(batch)
    bob = auth.create_key(served.store.engine, "bob")
    with served.client(bob) as c:
        r = c.post("/api/v1/store/write", json={"run_updates": {root: {"state": "failed"}}})
        assert r.status_code == 403 and "another API key recorded its resolution" in r.json()["detail"], r.text
    with served.client() as c:
        assert c.post("/api/v1/store/write", json={"run_updates": {root: {"state": "resolved"}}}).status_code == 200
    assert served.store.get_run(root).state == "resolved"


def test_a_keys_refusal_for_a_resolution_recorded_before_owners_says_so(served: Served) -> None:
    """A running resolution recorded before the server recorded owners (written directly, no owner, as the migration
    leaves one): a key's write into it, its take-over and a token for it are refused saying that (was: 'another API key
    recorded it', though no key did, the asker's own perhaps)."""
    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="running", created_at=utcnow()))
    batch.add_run(RunRecord(id=root, root_id=root, parent_id=None, func_path="m:p", func_name="p", state="running",
                            created_at=utcnow()))
    served.store.write(batch)
    why = "was recorded before the server recorded owners (only its driver's token may write into it), and a key "
    with served.client() as c:
        r = c.post("/api/v1/store/write", json={"run_updates": {root: {"state": "failed"}}})
        assert r.status_code == 403 and r.json()["detail"].startswith(
            f"API key 'tests' may not write run {root}: its resolution {why}records only"), r.text
        for path, action in ((f"/api/v1/store/take_over/{root}", "take over"),
                             (f"/api/v1/resolutions/{root}/token", "mint a token for")):
            r = c.post(path, json={})
            assert r.status_code == 403 and r.json()["detail"].startswith(
                f"API key 'tests' may not {action} resolution {root}: it {why}records only"), r.text
    assert served.store.get_run(root).state == "running"


FLOODED = 150_000  # runs another key recorded under one cache key


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_cache_key_flooded_with_another_keys_runs_is_looked_up_reading_only_the_most_recent(
        tmp_path: Path, request: pytest.FixtureRequest, db: str) -> None:
    """A key records 150,000 resolved runs under the cache key another key's pipeline computes (or any of its own):
    each look-up of it (``POST /store/cached``, a driver's planning wave; any key's, a read-only one's too) reads the
    most recent run it may reuse and the most recent it may not, ranked by the database; the server's peak memory
    grows by less than 48 MiB. The answers are as before: the asker's own newest run a hit, the other key's told as
    skipped; a read-only key (which recorded nothing) is told the key has one it skipped (never which run). Was: every
    run of the key read into the server's memory, then judged in Python: 110-160 MiB and seconds of the server's time
    for each look-up, as often as any key asked."""
    db_url = request.getfixturevalue("postgres_url") if db == "postgresql" else f"sqlite:///{tmp_path / 'db.sqlite3'}"
    store = open_store(db_url)
    cache_key = "c" * 64
    t0 = dt.datetime(2026, 1, 1)
    try:
        mine, flooder = auth.create_key(store.engine, "mine"), auth.create_key(store.engine, "flooder")
        viewer = auth.create_key(store.engine, "viewer", read_only=True)
        owner = {k: auth.Authenticator(store.engine, required=True).authenticate(k).key_id for k in (mine, flooder)}

        def row(n: int, key: str) -> dict[str, Any]:
            return {"id": f"{n:032x}", "root_id": "a" * 32, "func_path": "m:f", "func_name": "f", "state": "resolved",
                    "cache_key": cache_key, "created_at": t0, "ended_at": t0 + dt.timedelta(seconds=n),
                    "inputs": {}, "input_refs": {}, "notes": {}, "settings": {}, "owner": owner[key]}

        runs = Base.metadata.tables["runs"]
        with store.engine.begin() as conn:
            conn.execute(runs.insert(), [row(n, mine) for n in (1, 2)])
            for start in range(3, FLOODED + 3, 25_000):
                conn.execute(runs.insert(), [row(n, flooder) for n in range(start, min(start + 25_000, FLOODED + 3))])
    finally:
        store.close()
    args = () if db == "sqlite" else ("--db-url", db_url)
    with server_process(tmp_path, *args) as (proc, url):
        for key in (mine, viewer):
            client = HttpStore(url, key)
            try:
                client.find_reusable(["d" * 64])  # warm: every module loaded
                before = peak_rss_kib(proc.pid)
                hits, skipped = client.find_reusable([cache_key])
                grown = peak_rss_kib(proc.pid) - before
            finally:
                client.close()
            if key == mine:
                assert [r.id for r in hits.values()] == [f"{2:032x}"] and skipped == set()
            else:
                assert hits == {} and skipped == {cache_key}
            assert grown < 48 * 1024, f"the server's memory grew by {grown // 1024} MiB for one look-up"
