"""Concurrent requests sharing database work: writes merged into few transactions with the answer each request
would have had alone, credentials checked for many requests in one query, and several server processes
(``--workers``) behind one port, each seeing every write's live events and every revocation at once."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sematic_k8s import serialization
from sematic_k8s.errors import DriverReplaced, ResolutionEnded, RunResolved
from sematic_k8s.store.guards import Replayed
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import Base
from sematic_k8s.store.texts import NulText
from sematic_k8s.store.wire import batch_to_json, dumps
from sematic_k8s_server.config import ServerConfig
from sematic_k8s_server.events import EventBus
from sematic_k8s_server.relay import PgRelay
from sematic_k8s_server.writes import groups, write_all
from serving import create_api_key, serve, server_process, wait_for

RUN_IDS = ["a1", "a2", "a3"]
NOW = utcnow()


def _new_run(run_id: str, func: str) -> dict:
    return {"id": run_id, "root_id": "r0", "parent_id": None, "func_path": f"m:{func}", "func_name": func,
            "state": "created", "created_at": NOW}


def _batch(new: list, upd: list, res: str | None, number: int | None) -> Batch:
    b = Batch(new_runs={r: _new_run(r, f) for r, f in new}, run_updates={r: dict(fields) for r, fields in upd},
              resolution_updates={"r0": {"state": res}} if res else {})
    if number and b:  # a driver's write (the HTTP store numbers the batches it sends, never an empty one)
        b.fence, b.sequence = {"r0": 1}, {"r0": number}
    return b


batches = st.lists(st.builds(
    _batch,
    st.lists(st.tuples(st.sampled_from(RUN_IDS), st.sampled_from(["f", "g"])), max_size=2),
    st.lists(st.tuples(st.sampled_from(RUN_IDS), st.dictionaries(
        st.sampled_from(["state", "func_name", "attempts"]), st.sampled_from(["x", "resolved", "1"]), min_size=1)),
        max_size=3),
    st.sampled_from([None, "running", "resolved"]),
    st.sampled_from([None, None, 1, 2, 3])), max_size=8)  # a driver's numbered writes, in any order


def _rows(store: SqlStore) -> dict:
    with store.engine.connect() as conn:
        return {t: sorted(tuple(r) for r in conn.execute(sa.select(Base.metadata.tables[t])))
                for t in ("runs", "resolutions")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches)
def test_merged_batches_record_what_writing_them_one_by_one_records(tmp_path_factory, sequence) -> None:
    """Whatever the batches insert and update, in whatever order, the merged writes leave the same rows, and
    refuse the same batches (an update of the resolution once it ended, of a run's state once it resolved), and
    skip the same ones (a driver's numbered write not newer than the last one applied)."""
    home = tmp_path_factory.mktemp("merge")
    with contextlib.ExitStack() as stores:  # closed after each example: 60 of them, two databases each
        one_by_one, merged = (stores.enter_context(contextlib.closing(SqlStore(f"sqlite:///{home / name}")))
                              for name in ("a.db", "b.db"))
        for store in (one_by_one, merged):
            store.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running",
                                                "created_at": NOW}]))
            assert store.take_over("r0") == 1
            with store.engine.begin() as conn:  # the takeover's time: the same in both
                conn.execute(sa.text("UPDATE resolutions SET driver_epoch_at = NULL"))
        alone = []
        for b in sequence:
            replays: set[str] = set()
            try:
                one_by_one.write(b, replays=replays)
                alone.append(Replayed if replays else None)
            except (ResolutionEnded, RunResolved) as e:  # a change of an ended resolution or a resolved run: refused
                alone.append(type(e))
        assert [e if e is None else type(e) for e in write_all(merged.write, sequence)] == alone
        assert _rows(merged) == _rows(one_by_one)
    assert len(groups(sequence)) <= max(1, len(sequence))


def test_a_drivers_write_after_the_batch_ending_its_resolution_is_refused_merged_too(tmp_path) -> None:
    """A driver's write (fenced) arriving with the batch that ends its resolution, after it: refused as it is alone
    (ResolutionEnded), its run not recorded. Was (found by the property test above): merged with the ending batch,
    its fence was checked against the resolution before its end, and its run recorded in an ended resolution."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db'}")
    store.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": NOW}]))
    assert store.take_over("r0") == 1
    errors = write_all(store.write, [_batch([], [], "resolved", None), _batch([("a1", "f")], [], None, 1)])
    assert errors[0] is None and isinstance(errors[1], ResolutionEnded), errors
    assert store.get_run("a1") is None and store.get_resolution("r0").state == "resolved"  # type: ignore[union-attr]


def test_only_the_faulty_batch_of_a_merged_write_fails(tmp_path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'db'}")
    good = [Batch(new_runs={f"g{i}": _new_run(f"g{i}", "f")}) for i in range(3)]
    bad = Batch(new_runs={"b0": {**_new_run("b0", "f"), "func_name": None}})  # NOT NULL
    errors = write_all(store.write, [good[0], bad, good[1], good[2]])
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert isinstance(errors[1], sa.exc.IntegrityError)
    assert {r.id for r in store.runs_of_root("r0")} == {"g0", "g1", "g2"}


def test_only_the_batch_holding_a_nul_character_of_a_merged_write_fails_naming_its_own_field(tmp_path) -> None:
    """The store's one check of a record's text (store.texts) refuses a merged group whole: its batches are then
    written one by one, the faulty one refused alone, its field named as in its own request (a new resolution's index
    in its own batch, not the group's). Was (while the server's schemas checked NUL characters too, this check of the
    group never refused): every request of the group refused."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db'}")
    good = [Batch(new_resolutions=[{"id": f"r{i}", "root_func_path": "m:p", "state": "running", "created_at": NOW}],
                  new_runs={f"g{i}": _new_run(f"g{i}", "f")}) for i in range(3)]
    bad = Batch(new_resolutions=[{"id": "rb", "root_func_path": "m:\x00", "state": "running", "created_at": NOW}])
    errors = write_all(store.write, [good[0], good[1], bad, good[2]])
    assert errors[:2] == [None, None] and errors[3] is None, errors
    assert isinstance(errors[2], NulText) and errors[2].path == "new_resolutions.0.root_func_path", errors[2]
    assert {r.id for r in store.runs_of_root("r0")} == {"g0", "g1", "g2"}
    assert store.get_resolution("rb") is None and store.get_resolution("r2") is not None


def test_batches_of_two_drivers_are_not_merged_and_only_the_older_ones_refused(tmp_path) -> None:
    """Requests of an older and a newer driver of one resolution (different fences) arriving together: never one
    transaction (checked against one epoch, the older driver's writes would pass), the older one's refused alone."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db'}")
    store.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": NOW}],
                      new_runs={r: _new_run(r, "f") for r in RUN_IDS}))
    older = store.take_over("r0")
    newer = store.take_over("r0")
    stale = Batch(run_updates={"a1": {"state": "resolved"}}, fence={"r0": older})
    fresh = Batch(run_updates={"a2": {"state": "resolved"}}, fence={"r0": newer})
    other = Batch(run_updates={"a3": {"state": "running"}})  # not fenced (e.g. the CloudResolver following it)
    assert len(groups([stale, fresh])) == 2
    errors = write_all(store.write, [fresh, other, stale])  # fresh and other merge; stale does not
    assert errors[:2] == [None, None] and isinstance(errors[2], DriverReplaced)
    assert {r.id: r.state for r in store.runs_of_root("r0")} == {"a1": "created", "a2": "resolved", "a3": "running"}


def test_a_replayed_batch_is_skipped_alone(tmp_path) -> None:
    """Two numbered writes of one driver arriving together are never one transaction (each is checked against the
    last one applied: merged, the older one's fields would land with the newer one's number); a late first attempt
    merged with other drivers' batches leaves the group unwritten, which is then written batch by batch: the others
    land, the late one is skipped (answered as written, ``Replayed``)."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db'}")
    store.write(Batch(new_resolutions=[{"id": r, "root_func_path": "m:p", "state": "running", "created_at": NOW}
                                       for r in ("r0", "r1")],
                      new_runs={r: _new_run(r, "f") for r in RUN_IDS}))
    epoch = store.take_over("r0")
    late = Batch(run_updates={"a1": {"notes": {"step": 1}}}, fence={"r0": epoch}, sequence={"r0": 1})
    newer = Batch(run_updates={"a1": {"notes": {"step": 2}}}, fence={"r0": epoch}, sequence={"r0": 2})
    assert len(groups([newer, late])) == 2
    results = write_all(store.write, [newer, late])  # the retry of 1, then 2, landed; the first attempt of 1 now
    assert results[0] is None and isinstance(results[1], Replayed)
    assert store.get_run("a1").notes == {"step": 2}
    other = Batch(run_updates={"a2": {"state": "running"}})  # not numbered
    another = Batch(run_updates={"a3": {"state": "running"}}, fence={"r1": store.take_over("r1")}, sequence={"r1": 9})
    assert len(groups([other, late, another])) == 1
    results = write_all(store.write, [other, late, another])
    assert results[0] is None and isinstance(results[1], Replayed) and results[2] is None
    assert {r.id: (r.state, r.notes) for r in store.runs_of_root("r0")} == {
        "a1": ("created", {"step": 2}), "a2": ("running", {}), "a3": ("running", {})}


def test_two_records_of_one_artifact_arriving_together_are_each_checked(tmp_path) -> None:
    """A record of an artifact written ahead and the true one, in requests arriving together: never merged (the
    second one would be dropped unchecked); one with its bytes replaces the lie, one without is reported as a
    conflict (for the server to read the stored bytes)."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db'}")
    for n, inline in enumerate((True, False)):
        value = serialization.serialize([n] * 10)
        honest = {**value.record(), "created_at": NOW, "inline": value.payload if inline else None}
        ahead = {**honest, "format": "pickle", "type_name": "os.system", "inline": None}
        sequence = [Batch(artifacts={value.id: ahead}), Batch(artifacts={value.id: honest})]
        assert len(groups(sequence)) == 2
        conflicts: set[str] = set()
        assert write_all(functools.partial(store.write, conflicts=conflicts), sequence) == [None, None]
        recorded = store.get_artifact(value.id)
        assert recorded is not None
        assert (recorded.format, conflicts) == (("json", set()) if inline else ("pickle", {value.id}))


def _batch_body(b: Batch) -> bytes:
    return dumps(batch_to_json(b))


def _seed(root: str, n: int) -> tuple[Batch, list[str]]:
    """A batch recording resolution ``root`` running with ``n`` runs created; the batch, and the runs' ids."""
    seed = Batch()
    seed.add_resolution(ResolutionRecord(id=root, root_func_path="m:p", state="running", created_at=utcnow()))
    ids = [uuid.uuid4().hex for _ in range(n)]
    for run_id in ids:
        seed.add_run(RunRecord(id=run_id, root_id=root, parent_id=None, func_path="m:f", func_name="f",
                               state="created", created_at=utcnow()))
    return seed, ids


def test_concurrent_requests_each_get_their_own_answer(tmp_path: Path) -> None:
    """200 requests at once, one of them refused (a required field null): that one gets 422, every other one is
    recorded; a revoked key among them gets 401 while the others pass."""
    with serve(tmp_path) as s, httpx.Client(base_url=s.url, headers={"X-API-Key": s.admin_key}) as admin:
        root = uuid.uuid4().hex
        seed, ids = _seed(root, 200)
        assert admin.post("/api/v1/store/write", content=_batch_body(seed),  # the key's own resolution: it writes it
                          headers={"X-API-Key": s.key, "Content-Type": "application/json"}).status_code == 200
        revoked = admin.post("/api/v1/api-keys", json={"name": "gone"}).json()
        admin.post(f"/api/v1/api-keys/{revoked['id']}/revoke", json={}).raise_for_status()
        bodies = [(s.key, _batch_body(Batch(run_updates={r: {"state": "running"}}))) for r in ids]
        bodies[50] = (s.key, _batch_body(Batch(new_runs={"bad": {**_new_run("bad", "f"), "root_id": root,
                                                                 "func_name": None}})))  # 'bad': not an id
        bodies[120] = (revoked["key"], _batch_body(Batch(run_updates={ids[120]: {"state": "running"}})))
        start = threading.Barrier(50)

        def send(item: tuple[str, bytes]) -> int:
            with httpx.Client(base_url=s.url, timeout=60) as c:
                try:
                    start.wait(5)
                except threading.BrokenBarrierError:
                    pass
                return c.post("/api/v1/store/write", content=item[1],
                              headers={"X-API-Key": item[0], "Content-Type": "application/json"}).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(send, bodies))
        assert codes[50] == 422 and codes[120] == 401
        assert all(code == 200 for i, code in enumerate(codes) if i not in (50, 120))
        states = {r.id: r.state for r in s.store.runs_of_root(root)}
        assert "bad" not in states and states[ids[120]] == "created"
        assert all(states[r] == "running" for i, r in enumerate(ids) if i not in (50, 120))


def test_workers_share_live_events_and_revocations(tmp_path: Path, postgres_url: str) -> None:
    """``server --workers 2`` on PostgreSQL: a live-event subscriber on one connection hears the writes sent
    over many others (whichever process served them), and a key revoked through one process is refused by
    the next request on every connection."""
    create = functools.partial(create_api_key, postgres_url, tmp_path)

    admin, alice = create("root", "--admin"), create("alice")
    with server_process(tmp_path, "--db-url", postgres_url, "--workers", "2") as (_, url):
        root = uuid.uuid4().hex
        seen: list[dict] = []
        connected = threading.Event()

        def follow() -> None:
            with httpx.Client(base_url=url, timeout=60) as c, \
                    c.stream("GET", f"/api/v1/events?root_id={root}", headers={"X-API-Key": admin}) as r:
                for line in r.iter_lines():
                    connected.set()
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if sum(e.get("state") == "running" and e["type"] == "run" for e in seen) == 20:
                            return

        listener = threading.Thread(target=follow, daemon=True)
        listener.start()
        assert connected.wait(30)
        seed, ids = _seed(root, 20)
        headers = {"X-API-Key": alice, "Content-Type": "application/json"}
        httpx.post(url + "/api/v1/store/write", content=_batch_body(seed), headers=headers).raise_for_status()
        clients = [httpx.Client(base_url=url, timeout=30, headers=headers) for _ in range(8)]
        try:
            for i, run_id in enumerate(ids):
                clients[i % 8].post("/api/v1/store/write",
                                    content=_batch_body(Batch(run_updates={run_id: {"state": "running"}})))
            listener.join(30)
            assert {e["id"] for e in seen if e.get("state") == "running" and e["type"] == "run"} == set(ids)
            keys = httpx.get(url + "/api/v1/api-keys", headers={"X-API-Key": admin}).json()["items"]
            alice_id = next(k["id"] for k in keys if k["name"] == "alice")
            assert httpx.post(f"{url}/api/v1/api-keys/{alice_id}/revoke", json={},
                              headers={"X-API-Key": admin}).json() == {"revoked": 1}
            for c in clients:  # kept-alive connections, spread over both processes
                assert c.get("/api/v1/resolutions").status_code == 401
        finally:
            for c in clients:
                c.close()


def test_the_write_fast_path_answers_as_the_route_does(tmp_path: Path) -> None:
    """Bodies the fast path does not take as they are reach the route, which answers as it always did."""
    with serve(tmp_path) as s, s.client() as c:
        json_headers = {"Content-Type": "application/json"}
        r = c.post("/api/v1/store/write", content=b"{not json", headers=json_headers)
        assert r.status_code == 422 and r.json()["detail"].startswith("body")
        r = c.post("/api/v1/store/write", json={"new_runs": ["a list"]})
        assert r.status_code == 422 and "body field 'new_runs'" in r.json()["detail"]
        r = c.post("/api/v1/store/write", json={"run_updates": {"a1": {"colour": "red"}}})
        assert r.status_code == 422 and r.json()["detail"] == ("body field 'run_updates.a1.colour': not a field of "
                                                               "this request or record, or one that may not be "
                                                               "changed: see /docs for the fields it takes")
        x = {**_new_run("a2", "f"), "root_id": "a0"}
        r = c.post("/api/v1/store/write", json={"new_runs": {"a2": {**x, "created_at": "Z"}}})
        assert r.status_code == 422 and r.json()["detail"].startswith("bad batch")
        r = c.post("/api/v1/store/write", json={"new_runs": {"a2": {**x, "func_name": None,
                                                                     "created_at": NOW.isoformat()}}})
        assert r.status_code == 422 and "func_name" in r.json()["detail"]
        assert c.post("/api/v1/store/write", json={}).json() == {"ok": True}
        assert s.store.runs_of_root("a0") == []


def test_the_write_fast_path_keeps_the_guards_answers(tmp_path: Path) -> None:
    """``POST /store/write`` goes to the fast path before the app's middleware: the Guard's refusals are the
    same as for any other request (no key, too large, unknown key), and a body that is not JSON reaches the
    route, already guarded, which refuses it as it always did."""
    with serve(tmp_path, config=ServerConfig(max_request_bytes=1024)) as s:
        with s.client(key=None) as anonymous:
            r = anonymous.post("/api/v1/store/write", json={})
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "X-API-Key"
        with s.client(key="sk8s_not-a-key") as bad:
            assert bad.post("/api/v1/store/write", json={}).status_code == 401
        with s.client() as c:
            r = c.post("/api/v1/store/write", json={"run_updates": {"a1": {"state": "x" * 2000}}})
            assert r.status_code == 413 and "--max-request-mb" in r.json()["detail"]
            r = c.post("/api/v1/store/write", content=b"{}", headers={"Content-Type": "text/plain"})
            assert r.status_code == 422 and r.json()["detail"].startswith("body")
            assert c.post("/api/v1/store/write", json={}).json() == {"ok": True}  # the connection still serves


def test_a_write_while_the_database_is_down_is_a_503_to_retry_and_the_next_one_lands(
        tmp_path: Path, postgres_server: str, postgres_url: str) -> None:
    """The server's database refuses connections (its sessions cut, new ones not allowed): ``POST /store/write``
    answers 503 with Retry-After, as every route does, in the words :func:`.dbfailures.told` gives (the kind of failure,
    never the driver's words, which name the database's host, port and user: those are the server's log's), and writes
    again once it is back. Was: the driver's first line ("OperationalError: connection failed: connection to server
    at \"127.0.0.1\", port ... failed: ...")."""
    import psycopg

    name = postgres_url.rsplit("/", 1)[1]
    url = sa.engine.make_url(postgres_url)
    admin = psycopg.connect(postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                            autocommit=True)

    def allow(on: bool) -> None:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if on else "false"}')
        if not on:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    root = uuid.uuid4().hex
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=root, root_func_path="m:f", state="running", created_at=utcnow()))
    try:
        with serve(tmp_path, postgres_url, api_keys_required=False) as s, s.client(key=None) as c:
            assert c.post("/api/v1/store/write", content=dumps(batch_to_json(batch)),
                          headers={"Content-Type": "application/json"}).json() == {"ok": True}
            update = {"resolution_updates": {root: {"state": "resolved"}}}
            allow(False)
            r = c.post("/api/v1/store/write", json=update)
            assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
            said = r.json()["detail"]
            assert said == ("the metadata database is unavailable (OperationalError; the server's log has its "
                            "words)"), r.text
            for named in (url.host, str(url.port), url.username, name):  # the driver's words name them: the log's
                assert named not in said, named
            allow(True)
            assert c.post("/api/v1/store/write", json=update).json() == {"ok": True}
            assert s.store.get_resolution(root).state == "resolved"
    finally:
        allow(True)
        admin.close()


class _Recorded(EventBus):
    """An event bus that keeps what it is handed (from the relay's listener thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def publish(self, events: list[dict]) -> None:
        self.events.extend(events)


def test_events_published_as_a_process_stops_still_reach_the_others_in_order(postgres_url: str) -> None:
    """A process's events go out on its relay's own thread (a write does not wait for them): stopping the
    relay sends those still pending first, in the order they were published."""
    engine = sa.create_engine(postgres_url)
    listener, sender = PgRelay(engine, _Recorded()), PgRelay(engine, EventBus())
    listener.start()
    sender.start()
    events = [{"type": "run", "id": f"r{i}", "root_id": "x", "state": "running"} for i in range(300)]
    for event in events:
        sender.publish([event])
    sender.stop()
    heard = listener.bus
    assert isinstance(heard, _Recorded)
    wait_for(lambda: len(heard.events) >= len(events) or None, 30, what="the events at the other process")
    listener.stop()
    engine.dispose()
    assert heard.events == events
