"""A full disk (docs/FAULTS.md "Full disk"), caused for real: a small tmpfs mounted for the test and filled by a
func's side effect in the middle of a resolution (or by the test, under a server). The resolution ends with one
error saying which disk is full and how to continue, recorded as an infrastructure failure, never the func's;
nothing recorded before is lost, no partial artifact is left, and once space is freed ``continue`` finishes it.
The server answers a write its disk cannot take with 507, which the HTTP store does not retry; reads go on."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import disk_pipelines as dp
import sematic_k8s as sk
from sematic_k8s import serialization
from sematic_k8s import store as stores
from sematic_k8s.errors import DiskFull
from sematic_k8s.settings import DRIVER_ENV
from sematic_k8s.specs import DriverSpec, ResolutionSettings
from sematic_k8s.storage.base import put_artifact
from sematic_k8s.storage.local import LocalStorage
from sematic_k8s.storage.urls import storage_url
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, RunRecord, utcnow
from serving import serve, wait_for

SERVER_507 = ("the server's disk is full (its metadata database cannot grow): nothing of this request was "
              "recorded; its log names the disk")
HERE = Path(__file__).parent
DISK_SIZE = 24 << 20  # bytes: room for the database's reserve (made while 16 MiB are free) and little more


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`DISK_SIZE` mounted for the test (root only), unmounted after it."""
    where = tmp_path / "disk"
    where.mkdir()
    with dp.tmpfs(where, DISK_SIZE):
        try:
            yield where
        finally:
            for url in [u for u in stores._STORES if str(where) in u]:  # the embedded stores' files on it
                stores._STORES.pop(url).close()


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default, whose loop writes nothing but what its runs did (no heartbeat while a step fills the
    disk: the write that meets the full disk is the one each test means)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_INTERVAL", "3600")


def continue_advice(root_id: str) -> str:
    return (f"free space on that disk, then continue the resolution: rerun_from={root_id!r}, rerun_mode='continue' "
            f"(or `sematic-k8s rerun {root_id} --mode continue`, or its dashboard page)")


def check_ended_on_full_disk(home: Path, root_id: str, said: str, full: Path) -> None:
    """The error ``said`` names the full disk (by ``full``, where the write was) and how to continue; the resolution
    is recorded as failed with the same words, as an infrastructure failure; no run is blamed; the database is
    sound."""
    assert re.fullmatch(rf"the disk holding {re.escape(str(full))} is full \([0-9.]+ (bytes|[KMG]iB) left\): "
                        + re.escape(continue_advice(root_id)), said), said
    with sqlite3.connect(home / "db.sqlite3") as conn:  # a connection of its own: what is on disk
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        state, error = conn.execute("SELECT state, error FROM resolutions WHERE id = ?", (root_id,)).fetchone()
        blamed = conn.execute("SELECT func_name, error FROM runs WHERE root_id = ? AND error != 'null'",
                              (root_id,)).fetchall()
    assert state == "failed" and error == f"infrastructure failure, not the pipeline's: DiskFull: {said}", error
    assert blamed == []  # a full disk is never the func's failure


def artifact_files(home: Path) -> dict[str, Path]:
    """Every file under the home's artifact storage, by name: each is a value under its content id, nothing else."""
    found = {p.name: p for p in (home / "storage").rglob("*") if p.is_file()}
    stray = [name for name in found if name.startswith(".") or name.endswith(".tmp")]
    assert stray == [], f"files left by writes that met the full disk: {stray}"
    return found


def test_a_full_disk_under_artifact_storage_ends_the_resolution_in_words_and_continue_finishes_it(
        small_disk, tmp_path, embedded):
    home, flag = small_disk / "home", str(tmp_path / "filled")
    f = dp.storage_fills(str(home), flag)
    with pytest.raises(DiskFull) as err:  # was: the func failed with OSError, then a raw "database or disk is full"
        f.resolve(sk.LocalResolver(home=home, max_parallelism=2))
    check_ended_on_full_disk(home, f.id, str(err.value), home / "storage")
    runs = {r.func_name: r for r in sk.LocalResolver(home=home).store.runs_of_root(f.id)}
    assert runs["big"].state == "resolved"  # recorded before the disk filled: kept
    assert runs["fill_then_big"].state == "canceled" and runs["fill_then_big"].output_id is None
    files = artifact_files(home)
    first = serialization.serialize(dp.big.fn(1))
    assert list(files) == [first.id]  # the value that met the full disk left nothing, not even part of itself
    serialization.verify(first.id, first.format, files[first.id].read_bytes())

    (home / dp.FILLER).unlink()
    again = dp.storage_fills(str(home), flag)
    assert again.resolve(sk.LocalResolver(home=home, rerun_from=f.id, rerun_mode="continue")) == 2 * dp.SIZE
    store = sk.LocalResolver(home=home).store
    assert store.get_resolution(again.id).state == "resolved"
    reused = {r.func_name: r for r in store.runs_of_root(again.id)}["big"]
    assert reused.notes["reused_from"] == runs["big"].id  # what resolved before the disk filled was reused
    wait_for(lambda: (home / "db.sqlite3-reserve").exists(), 30, what="the database's reserve to be made again")


def test_a_full_disk_under_the_database_ends_the_resolution_in_words_and_continue_finishes_it(
        small_disk, tmp_path, embedded):
    home, flag, gate = small_disk / "home", str(tmp_path / "filled"), tmp_path / "gate"
    f = dp.database_fills(str(home), flag, str(gate))
    try:
        with pytest.raises(DiskFull) as err:  # was: a raw OperationalError, the resolution left "running"
            f.resolve(sk.LocalResolver(home=home, max_parallelism=2))
    finally:
        gate.touch()  # the gated step's thread, left behind by the ended resolution, returns
    check_ended_on_full_disk(home, f.id, str(err.value), home / "db.sqlite3")
    states = sorted((r.func_name, r.state) for r in sk.LocalResolver(home=home).store.runs_of_root(f.id))
    # add(1, 1), recorded before the disk filled, and fill_then_small, which resolved meanwhile: recorded with the end
    assert states == [("add", "canceled"), ("add", "resolved"), ("database_fills", "canceled"),
                      ("fill_then_small", "resolved"), ("wait_for", "canceled")], states

    (home / dp.FILLER).unlink()
    again = dp.database_fills(str(home), flag, str(gate))
    assert again.resolve(sk.LocalResolver(home=home, rerun_from=f.id, rerun_mode="continue")) == 21
    reused = sorted(r.func_name for r in sk.LocalResolver(home=home).store.runs_of_root(again.id)
                    if "reused_from" in (r.notes or {}))
    assert reused == ["add", "fill_then_small"]  # what resolved before and as the disk filled was reused


def _driver(tmp_path: Path, db: str, spec: DriverSpec, name: str) -> tuple[int, str]:
    """Run a driver process for ``spec`` (worker processes, records in ``db``) to its end: its exit code and what it
    printed."""
    env = {**os.environ, DRIVER_ENV: spec.to_json(), "SEMATIC_K8S_DB_URL": db,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("SEMATIC_K8S_SERVER", None)
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "sematic_k8s.driver"], env=env, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=subprocess.STDOUT, timeout=240).returncode
    return code, log.read_text()


def test_a_worker_whose_storage_disk_is_full_ends_the_resolution_in_words_and_continue_finishes_it(tmp_path):
    """A driver with worker processes, its artifact storage a directory on a small disk that a worker's func fills:
    the worker's store of its value meets the full disk. It exits 75 saying so (DiskFull), and the run is recorded
    with those words, as an infrastructure failure, not retried; the resolution ends as in-process; the driver exits
    1 (a restart would meet the same disk). Once space is freed, ``continue`` finishes it."""
    disk, flag = tmp_path / "disk", str(tmp_path / "filled")
    disk.mkdir()
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with dp.tmpfs(disk, 1 << 20):
        storage = LocalStorage(disk / "storage")
        f = dp.worker_storage_fills(str(disk), flag)
        root = serialization.serialize(f)
        put_artifact(storage, root)
        spec = DriverSpec(root={"id": root.id, "format": root.format}, storage_url=storage_url(storage), image="none",
                          executor="process", resolution=ResolutionSettings(root_id=f.id, max_parallelism=2))
        where = re.escape(str(storage.root.resolve()))  # as the worker names it: from the storage's URL
        code, printed = _driver(tmp_path, db, spec, "driver")
        # was: exit 75 read as StorageUnreachable "could not reach artifact storage", retried three times, then the
        # run failed with those words
        assert code == 1, printed
        store = stores.sql_store(db)
        error = store.get_resolution(f.id).error or ""
        said = error.removeprefix("infrastructure failure, not the pipeline's: DiskFull: ")
        assert re.fullmatch(rf"the disk holding {where} is full \([0-9.]+ (bytes|[KMG]iB) "
                            r"left\): " + re.escape(continue_advice(f.id)), said), error
        assert f"resolution {f.id} failed: DiskFull: {said}" in printed, printed
        runs = {r.func_name: r for r in store.runs_of_root(f.id)}
        assert runs["remote_big"].state == "resolved"  # stored and recorded before the disk filled: kept
        met = runs["remote_fill_then_big"]
        assert met.state == "canceled" and met.attempts == 1, met  # not failed, not retried: the disk stays full
        assert met.error["type"] == "DiskFull" and "InfrastructureError" in met.error["mro"], met.error
        assert re.fullmatch(rf"the disk holding {where} is full \([0-9.]+ (bytes|[KMG]iB) "
                            r"left\): free space on that disk", met.error["message"]), met.error
        assert [r.func_name for r in runs.values() if r.state == "failed"] == []  # no func is blamed
        stray = [p.name for p in storage.root.rglob("*")  # a log's ids (.<log>.appends) are not a write's leftovers
                 if (p.name.startswith(".") and not p.name.endswith(".log.appends")) or p.name.endswith(".tmp")]
        assert stray == [], f"files left by writes that met the full disk: {stray}"

        (disk / dp.FILLER).unlink()
        continued = uuid.uuid4().hex
        spec = DriverSpec(root=None, storage_url=storage_url(storage), image="none", executor="process",
                          resolution=ResolutionSettings(rerun_from=f.id, rerun_mode="continue", root_id=continued,
                                                        max_parallelism=2),
                          root_func=dp.worker_storage_fills.path, root_source_file=dp.worker_storage_fills.source_file)
        code, printed = _driver(tmp_path, db, spec, "continued")
        assert code == 0, printed
        assert store.get_resolution(continued).state == "resolved"
        assert store.get_artifact(store.get_run(continued).output_id).summary == 2 * dp.SIZE
        reused = {r.func_name: r for r in store.runs_of_root(continued)}["remote_big"]
        assert reused.notes["reused_from"] == runs["remote_big"].id  # what resolved before the disk filled


def _in_thread(fn) -> BaseException | None:  # noqa: ANN001 - a call
    """Call ``fn`` on a thread and wait for it (60 s at most): what it raised. A call still retrying fails the test."""
    raised: list[BaseException | None] = [None]

    def call() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            raised[0] = e

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "still trying after 60 s: a full disk was retried as an outage"
    return raised[0]


def _resolution(res_id: str) -> Batch:
    now = utcnow()
    return Batch(new_resolutions=[{"id": res_id, "root_func_path": "m:f", "state": "running", "created_at": now,
                                   "heartbeat_at": now}])


def _beat(res_id: str) -> Batch:
    return Batch(resolution_updates={res_id: {"heartbeat_at": utcnow()}})


def _runs(root_id: str, n: int) -> Batch:
    """``n`` new runs of a resolution: more rows than fit in a table's pages so far, so the table must grow."""
    batch = Batch()
    for i in range(n):
        batch.add_run(RunRecord(id=f"{root_id[:24]}{i:08x}", root_id=root_id, parent_id=root_id, func_path="m:g",
                                func_name="g", state="created", source_text="x" * 500, created_at=utcnow()))
    return batch


def test_a_server_whose_database_disk_is_full_answers_507_which_is_not_retried_and_reads_go_on(
        small_disk, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "3600")  # nothing is stale until the test says so
    db = small_disk / "db.sqlite3"
    with serve(tmp_path, f"sqlite:///{db}") as srv:
        client = HttpStore(srv.url, srv.key, retry_window=300)
        client.write(_resolution("a" * 32))
        client.write(_resolution("b" * 32))
        dp.truncate_log(db)
        filler = dp.fill_disk(small_disk)

        refused = _in_thread(lambda: client.write(_beat("b" * 32)))
        assert isinstance(refused, DiskFull), refused  # at once, not after the 300 s retry window
        detail = re.escape(SERVER_507)  # no path of the server's: its log names the disk
        assert re.fullmatch(rf"the sematic-k8s server at {re.escape(srv.url)} answered 507: {detail}: have the "
                            "server's operator free space on its disk", str(refused)), str(refused)
        assert f"the disk holding {db} is full" in caplog.text  # which one: in the server's log
        with srv.client() as http:
            answer = http.post("/api/v1/store/write",
                               json={"resolution_updates": {"b" * 32: {"heartbeat_at": utcnow().isoformat()}}})
            assert answer.status_code == 507 and re.fullmatch(detail, answer.json()["detail"]), answer.text

        # a write ending a resolution is recorded in the room the database's reserve gives back
        client.write(Batch(resolution_updates={"b" * 32: {"state": "failed", "ended_at": utcnow(),
                                                          "error": "infrastructure failure: its disk"}}))
        assert client.get_resolution("b" * 32).state == "failed"
        assert not (small_disk / "db.sqlite3-reserve").exists()
        dp.truncate_log(db)
        dp.fill_disk(small_disk, "filler-2")  # full again: the reserve is spent

        monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "1")  # resolution a is stale now: reading it would mark it
        with srv.client() as http:
            def read_while_full() -> bool:
                for path in (f"/api/v1/resolutions/{'a' * 32}", "/api/v1/resolutions"):
                    answer = http.get(path)
                    assert answer.status_code == 200, answer.text  # was 503: the marking-dead write failed the read
                return "cannot be marked dead yet" in caplog.text
            wait_for(read_while_full, 30, what="a read to try marking the stale resolution dead")
            assert http.get(f"/api/v1/resolutions/{'a' * 32}").json()["state"] == "running"

        filler.unlink()
        (small_disk / "filler-2").unlink()
        res = client.get_resolution("a" * 32)  # read again with room on the disk: marked dead now
        assert res.state == "failed" and res.error.startswith("the resolver stopped responding"), res
        client.write(_resolution("c" * 32))  # room again: writes are recorded
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        client.close()


def test_a_server_whose_postgresql_disk_is_full_answers_507_and_reads_go_on(postgres_server, tmp_path):
    where = Path(tempfile.mkdtemp(prefix="sk-disk-"))  # the postgres user enters it: not under pytest's 0700 dirs
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(where.rmdir)
        cleanup.enter_context(dp.tmpfs(where, 4 << 20, owner="postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:  # the database's tables on the small disk
            conn.execute(f"CREATE TABLESPACE {name} LOCATION '{where}'")
            conn.execute(f'CREATE DATABASE "{name}" TABLESPACE {name}')
        try:
            with serve(tmp_path, f"{postgres_server}/{name}") as srv:
                client = HttpStore(srv.url, srv.key, retry_window=300)
                client.write(_resolution("a" * 32))
                filler = dp.fill_disk(where)
                refused = _in_thread(lambda: client.write(_runs("a" * 32, 300)))
                assert isinstance(refused, DiskFull), refused  # at once (was: 503, retried for the window)
                assert str(refused) == (f"the sematic-k8s server at {srv.url} answered 507: {SERVER_507}: have the "
                                        "server's operator free space on its disk"), str(refused)
                assert client.get_resolution("a" * 32).state == "running"  # reads go on
                assert client.list_runs(root_id="a" * 32) == []  # nothing of the refused batch
                filler.unlink()
                client.write(_runs("a" * 32, 300))
                assert len(client.list_runs(root_id="a" * 32, limit=1000)) == 300
                client.close()
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.execute(f"DROP TABLESPACE IF EXISTS {name}")


def test_a_log_append_that_met_the_full_disk_is_taken_back_and_made_once_when_made_again(small_disk):
    """An append to a log in local storage (with an id, as a worker's or its executor's is) meets the full disk
    part way: `DiskFull`, and the log reads as it did. Once space is freed the same append, made again (as a
    restarted driver would), lands whole, once (its recorded id counted for nothing: its bytes never landed)."""
    from sematic_k8s.storage.base import append_id
    from sematic_k8s.storage.local import LocalStorage

    storage = LocalStorage(small_disk / "storage")
    storage.append("logs/r.log", b"line 1\n", append_id=append_id("first"))
    filler = dp.fill_disk(small_disk)
    big = b"".join(b"line %d\n" % i for i in range(2, 20000))
    with pytest.raises(DiskFull, match=f"the disk holding {re.escape(str(small_disk / 'storage'))} is full"):
        storage.append("logs/r.log", big, append_id=append_id("second"))
    assert storage.get("logs/r.log") == b"line 1\n"
    filler.unlink()
    for _ in range(2):
        storage.append("logs/r.log", big, append_id=append_id("second"))
    assert storage.get("logs/r.log") == b"line 1\n" + big
