"""Nothing stays "running" forever (DESIGN.md "Faults"): a resolving process heartbeats; when it dies (kill -9)
its resolution is marked failed with a plain reason, by any reader and by the server's sweeper, a cancel
completes, and ``continue`` finishes it to the same value."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import fault_pipelines as fp
import sematic_k8s as sk
from outages import ServerProcess
from sematic_k8s.errors import ResolutionEnded
from sematic_k8s.future import new_id
from sematic_k8s.store import liveness
from sematic_k8s.store.records import Batch, ResolutionRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import ResolutionRow
from serving import serve, wait_for
from skewed_clock import FAKETIME, skewed

HERE = Path(__file__).parent
TIMEOUT = "2"  # seconds of silence after which a resolution is dead, in these tests
FAST_BEATS = {"SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.2"}


def start_resolver(tmp_path: Path, root_id: str, gate: Path, env: dict[str, str], **popen: Any) -> subprocess.Popen:
    """A process resolving ``gated(3, gate)`` as resolution ``root_id``, with fast heartbeats (``popen``: more of
    Popen's arguments, e.g. to read its stderr)."""
    code = (f"import fault_pipelines as fp, sematic_k8s as sk; "
            f"fp.gated(3, {str(gate)!r}).resolve(sk.LocalResolver(root_id={root_id!r}, max_parallelism=2))")
    env = {**os.environ, **env, **FAST_BEATS, "SEMATIC_K8S_HOME": str(tmp_path), "PYTHONPATH": pythonpath(env)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, **popen)


def pythonpath(env: dict[str, str]) -> str:
    """PYTHONPATH for a process of these tests: ``env``'s, this folder (the fixture pipelines), the test's."""
    return os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(HERE), os.environ.get("PYTHONPATH")) if p)


def _resolved(store: SqlStore, root_id: str) -> int:
    return sum(r.state == "resolved" for r in store.runs_of_root(root_id))


def kill_when_gated(proc: subprocess.Popen, gate: Path, recorded: Callable[[], int]) -> None:
    """SIGKILL the resolver once its gated step runs and ``recorded()`` (resolved runs in the database) says the
    two steps before it are written: what it had recorded must survive, what it had not is not the point."""
    wait_for(lambda: Path(f"{gate}.started").exists() or proc.poll() is not None, 60, what="the gated step")
    wait_for(lambda: recorded() >= 2 or proc.poll() is not None, 60, what="the first two steps to be recorded")
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def test_a_killed_local_resolver_is_marked_failed_and_continued_to_the_same_value(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", TIMEOUT)
    root_id, gate = new_id(), tmp_path / "gate"
    proc = start_resolver(tmp_path, root_id, gate, {})
    wait_for(lambda: (tmp_path / "db.sqlite3").exists(), 60, what="the database")
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    kill_when_gated(proc, gate, lambda: _resolved(store, root_id))
    res = wait_for(lambda: (r := store.get_resolution(root_id)).state != "running" and r, 30,
                   what="the dead resolution to be marked")  # a read (the CLI's, the dashboard's) marks it
    assert res.state == "failed" and res.error.startswith("the resolver stopped responding at ")
    states = {r.func_name + str(r.inputs): r.state for r in store.runs_of_root(root_id)}
    assert "running" not in states.values() and "canceled" in states.values()
    resolved_before = {r.id for r in store.runs_of_root(root_id) if r.state == "resolved"}
    assert len(resolved_before) == 2  # add(3, 1) and add(1, 1)
    # their outputs, kept inline in the same transactions (WAL, synchronous=NORMAL: durable across a kill -9)
    assert all(store.get_artifact(store.get_run(i).output_id).inline for i in resolved_before)

    gate.touch()
    again = fp.gated(3, str(gate))
    assert again.resolve(sk.LocalResolver(home=tmp_path, rerun_from=root_id, rerun_mode="continue")) == 3 + 1 + 2
    reused = {r.notes.get("reused_from") for r in store.runs_of_root(again.id)}
    assert resolved_before <= reused  # what had resolved was not run again
    assert store.get_resolution(again.id).state == "resolved"


def test_the_servers_sweeper_marks_a_dead_resolution_and_a_cancel_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", TIMEOUT)  # the server's (in this process)
    with serve(tmp_path) as s:
        root_id, gate = new_id(), tmp_path / "gate"
        proc = start_resolver(tmp_path, root_id, gate, {"SEMATIC_K8S_SERVER": s.url, "SEMATIC_K8S_API_KEY": s.key})
        kill_when_gated(proc, gate, lambda: _resolved(s.store, root_id))
        with s.client() as c:
            r = c.post(f"/api/v1/resolutions/{root_id}/cancel")  # asked of a process that is gone
            assert r.status_code == 202 and r.json()["state"] == "canceling"

            def state_in_the_database() -> str:  # not through the API: no read marks it, the sweeper must
                with s.store.engine.connect() as conn:
                    return conn.scalar(sa.text("SELECT state FROM resolutions WHERE id = :id"), {"id": root_id})
            wait_for(lambda: state_in_the_database() != "canceling", 30, what="the sweeper")
            res = c.get(f"/api/v1/resolutions/{root_id}").json()
            assert res["state"] == "canceled"
            assert res["error"].startswith("the resolver stopped responding at ") and res["heartbeat_at"]
            runs = c.get("/api/v1/runs", params={"root_id": root_id}).json()["items"]
            assert {r["state"] for r in runs} <= {"resolved", "canceled"}
            gate.touch()
            r = c.post(f"/api/v1/resolutions/{root_id}/rerun", json={"mode": "continue"})
            assert r.status_code != 409, r.text  # it has ended: continuing it is allowed
            if r.status_code == 202:  # this server reruns local resolutions itself: let it finish
                continued = r.json()["resolution_id"]
                done = wait_for(lambda: (x := c.get(f"/api/v1/resolutions/{continued}").json()).get("state")
                                in ("resolved", "failed") and x, 60, what="the continued resolution")
                assert done["state"] == "resolved", done


def test_a_live_resolver_busy_in_a_long_func_is_not_marked_dead(tmp_path, monkeypatch):
    """Its timer heartbeats while an inline func holds the loop for longer than the timeout."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "1")
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_INTERVAL", "0.2")
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    root_id = new_id()
    seen: list[str] = []

    @sk.func
    def watched(x: int) -> int:  # runs inline in the loop's thread; reads its own resolution meanwhile
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            seen.append(store.get_resolution(root_id).state)
            time.sleep(0.1)
        return x

    assert watched(4).resolve(sk.LocalResolver(home=tmp_path, root_id=root_id)) == 4
    assert set(seen) == {"running"} and store.get_resolution(root_id).state == "resolved"


@pytest.mark.parametrize("through", ["embedded", "server"])
def test_a_resolver_marked_dead_while_stopped_is_refused_when_it_comes_back(tmp_path, monkeypatch, through):
    """A resolver that stops heartbeating without dying (SIGSTOP: a suspended laptop, a process cut off from its
    store) is marked dead (by a reader; by the server's sweeper) and its resolution continued by another; when it
    comes back (SIGCONT), its first write to the ended resolution is refused (the server: 409): it stops, saying
    so, and the dead resolution's record stays as marked, not flipped to resolved beside its continuation."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", TIMEOUT)  # the readers' and the server's (this process)
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        settings: dict = {}
        if through == "server":
            s = stack.enter_context(serve(tmp_path))
            env = {"SEMATIC_K8S_SERVER": s.url, "SEMATIC_K8S_API_KEY": s.key}
            settings = {"server": s.url, "api_key": s.key}
        root_id, gate = new_id(), tmp_path / "gate"
        proc = start_resolver(tmp_path, root_id, gate, env, stderr=subprocess.PIPE, text=True)
        stack.callback(lambda: proc.poll() is None and (proc.send_signal(signal.SIGCONT), proc.kill(), proc.wait(30)))
        wait_for(lambda: (tmp_path / "db.sqlite3").exists(), 60, what="the database")
        store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
        wait_for(lambda: Path(f"{gate}.started").exists() and _resolved(store, root_id) >= 2, 60,
                 what="the gated step")
        proc.send_signal(signal.SIGSTOP)
        res = wait_for(lambda: (r := store.get_resolution(root_id)).state != "running" and r, 30,
                       what="the silent resolution to be marked dead")
        assert res.state == "failed"
        marked = {r.id: (r.state, r.ended_at) for r in store.runs_of_root(root_id)}

        gate.touch()  # the continuation runs the gated step; so will the stale process once it comes back
        again = fp.gated(3, str(gate))
        resolver = sk.LocalResolver(home=tmp_path, rerun_from=root_id, rerun_mode="continue", **settings)
        assert again.resolve(resolver) == 3 + 1 + 2

        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert f"ResolutionEnded: resolution {root_id} has already ended as failed" in err, err[-2000:]
        after = store.get_resolution(root_id)
        assert (after.state, after.error, after.ended_at) == (res.state, res.error, res.ended_at)
        assert {r.id: (r.state, r.ended_at) for r in store.runs_of_root(root_id)} == marked  # nothing more landed
        assert store.get_resolution(again.id).state == "resolved"


def test_a_heartbeat_racing_the_marking_dead_on_sqlite_is_refused_once_it_commits(tmp_path):
    """SQLite's twin of the PostgreSQL race (``tests/store/test_postgres.py``): a reader marks a silent resolution
    failed (its transaction holding the write lock, not committed yet) while the resolver's heartbeat, a batch of
    resolution updates only, is on its way in. The write must take the lock before it checks the resolution, and
    then see "failed"; checked first, it saw "running", waited for the lock and landed on the ended resolution."""
    db = tmp_path / "db.sqlite3"
    store = SqlStore(f"sqlite:///{db}")
    store.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running",
                                        "created_at": utcnow(), "heartbeat_at": utcnow()}]))
    started: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: started.append(args[2]))
    sweeper = sqlite3.connect(db, isolation_level=None)
    sweeper.execute("BEGIN IMMEDIATE")
    sweeper.execute("UPDATE resolutions SET state = 'failed', error = 'silent' WHERE id = 'r0'")
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            store.write(Batch(resolution_updates={"r0": {"heartbeat_at": utcnow()}}))
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)
    writer = threading.Thread(target=beat)
    writer.start()
    wait_for(lambda: any(s.startswith(("BEGIN IMMEDIATE", "UPDATE resolutions")) for s in started), 30,
             what="the heartbeat's write to wait for the write lock")
    beat_before = sweeper.execute("SELECT heartbeat_at FROM resolutions WHERE id = 'r0'").fetchone()[0]
    sweeper.execute("COMMIT")
    sweeper.close()
    writer.join(60)
    assert [type(e) for e in errors] == [ResolutionEnded]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state, heartbeat_at FROM resolutions WHERE id = 'r0'").fetchone() == (
            "failed", beat_before)


# -- clocks that disagree: machines whose embedded stores share one PostgreSQL database ----------------------------
# Liveness is judged on the database's clock alone (the heartbeat written is its time, and so is the cutoff a reader
# or the sweeper compares it with), so a resolver's or a reader's skewed clock neither kills a live resolution nor
# hides a dead one. The skew is real: the resolver or the reader runs under libfaketime (``faketime``, Debian's
# package), its wall clock 5 minutes off, its monotonic clock left alone (``FAKETIME_DONT_FAKE_MONOTONIC``: the
# heartbeat's intervals).

SKEW_TIMEOUT = 5.0  # seconds of silence after which a resolution is dead, in these tests: far less than the skew
needs_faketime = pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (apt-get install faketime)")


@needs_faketime
def test_skewed_shows_a_clock_off_by_the_offset() -> None:
    """The faking itself works (else the tests below would prove nothing): the wall clock 5 minutes behind, the
    monotonic one not, and ``time.sleep`` sleeps (libfaketime 0.9.10 broke it: ``skewed_clock.SITE``)."""
    code = "import time, json; time.sleep(0.1); print(json.dumps([time.time(), time.monotonic()]))"
    skew = skewed("-5m")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **skew, "PYTHONPATH": pythonpath(skew)},
                         capture_output=True, text=True, check=True).stdout
    wall, mono = json.loads(out)
    assert 290 < time.time() - wall < 310
    assert abs(time.monotonic() - mono) < 60


@needs_faketime
def test_a_live_resolver_whose_clock_is_behind_is_not_marked_dead_by_a_reader(tmp_path, monkeypatch, postgres_url):
    """A LocalResolver 5 minutes behind the reader (both on one PostgreSQL), at a gate: read by a process with the
    right time and a 5 s timeout, it stays running as long as it beats (was: marked failed by the first read, its
    runs canceled, and the resolver stopped), and resolves once the gate opens."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    root_id, gate = new_id(), tmp_path / "gate"
    proc = start_resolver(tmp_path, root_id, gate, {"SEMATIC_K8S_DB_URL": postgres_url, **skewed("-5m")},
                          stderr=subprocess.PIPE, text=True)
    try:
        store = SqlStore(postgres_url, stale_after=SKEW_TIMEOUT)
        wait_for(lambda: Path(f"{gate}.started").exists() or proc.poll() is not None, 60, what="the gated step")
        deadline = time.monotonic() + 2 * SKEW_TIMEOUT  # reads for longer than the timeout: its beats keep it alive
        while time.monotonic() < deadline:
            res = store.get_resolution(root_id)
            listed = {r.id: r.state for r in store.list_resolutions()}
            assert res is not None and (res.state, res.error, listed[root_id]) == ("running", None, "running"), res
            assert proc.poll() is None
            time.sleep(0.2)
        gate.touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert store.get_resolution(root_id).state == "resolved"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


READER = """
import json, sys, time
from sematic_k8s.store.sql import SqlStore
url, root_id, timeout, reads, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
store = SqlStore(url, stale_after=timeout)
read = {"get": lambda: store.get_resolution(root_id),
        "list": lambda: next(r for r in store.list_resolutions(limit=1000) if r.id == root_id)}
deadline = time.monotonic() + seconds  # the real seconds it reads for (monotonic: not faked)
while time.monotonic() < deadline:
    seen = [read[how]() for how in reads.split(",")]
    if any(r.state != "running" for r in seen):
        break
    time.sleep(0.2)
print(json.dumps([{"state": r.state, "error": r.error} for r in seen]))
"""


def read_as(reader: str | None, url: str, root_id: str, reads: str, seconds: float) -> list[dict[str, Any]]:
    """:data:`READER` in a process whose clock is ``reader`` off (None: not), with a :data:`SKEW_TIMEOUT`: it reads
    the resolution (``reads``: "get", "list" or both, "get,list": ``get_resolution``, ``list_resolutions``) until a
    read shows it not running, or for ``seconds``; what the last reads showed (state, error)."""
    env = {**os.environ, **(skew := skewed(reader)), "PYTHONPATH": pythonpath(skew)}
    out = subprocess.run([sys.executable, "-c", READER, url, root_id, str(SKEW_TIMEOUT), reads, str(seconds)],
                         env=env, capture_output=True, text=True, timeout=seconds + 60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@needs_faketime
def test_a_reader_whose_clock_is_ahead_does_not_mark_a_live_resolver_dead(tmp_path, monkeypatch, postgres_url):
    """A reader process 5 minutes ahead of the database and of a live LocalResolver at its gate (one PostgreSQL)
    reads it, by ``get_resolution`` and ``list_resolutions``, for twice the 5 s timeout: it stays running (a read
    judging silence on its own clock would find every beat 5 minutes old and mark it failed, its runs canceled),
    and resolves once the gate opens."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    root_id, gate = new_id(), tmp_path / "gate"
    proc = start_resolver(tmp_path, root_id, gate, {"SEMATIC_K8S_DB_URL": postgres_url}, stderr=subprocess.PIPE,
                          text=True)
    try:
        wait_for(lambda: Path(f"{gate}.started").exists() or proc.poll() is not None, 60, what="the gated step")
        seen = read_as("+5m", postgres_url, root_id, "get,list", 2 * SKEW_TIMEOUT)
        assert [r["state"] for r in seen] == ["running", "running"], seen
        assert proc.poll() is None
        gate.touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert SqlStore(postgres_url).get_resolution(root_id).state == "resolved"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@needs_faketime
@pytest.mark.parametrize(("writer", "reader", "reads"), [("+5m", None, "get"), (None, "-5m", "get"),
                                                         (None, "-5m", "list")],
                         ids=["writer_5_min_ahead", "reader_5_min_behind", "reader_5_min_behind_listing"])
def test_a_killed_resolver_is_marked_dead_on_time_by_a_reader_whose_clock_disagrees(tmp_path, monkeypatch,
                                                                                     postgres_url, writer, reader,
                                                                                     reads):
    """A LocalResolver killed (kill -9) at its gate is marked dead within a minute by a reader with a 5 s timeout
    whose clock is 5 minutes behind the resolver's: the resolver's clock ahead (was: its beats, stamped 5 minutes in
    the future, hid its death for 5 minutes), or the reader's behind (a cutoff from its own clock missed it as
    long); the reader getting the resolution, or listing resolutions."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    root_id, gate = new_id(), tmp_path / "gate"
    proc = start_resolver(tmp_path, root_id, gate, {"SEMATIC_K8S_DB_URL": postgres_url, **skewed(writer)})
    store = SqlStore(postgres_url, stale_after=10 ** 6)  # reads without marking anything
    kill_when_gated(proc, gate, lambda: sum(r.state == "resolved" for r in store.runs_of_root(root_id)))
    [seen] = read_as(reader, postgres_url, root_id, reads, 60)
    assert seen["state"] == "failed", seen
    assert seen["error"].startswith("the resolver stopped responding at ")
    assert {r.state for r in store.runs_of_root(root_id)} <= {"resolved", "canceled"}


def test_a_live_resolution_whose_beat_waits_for_a_row_lock_on_postgres_is_not_marked_by_a_reader(tmp_path,
                                                                                                 monkeypatch,
                                                                                                 postgres_url):
    """PostgreSQL's twin of SQLite's lock held by another process (``test_locked_database.py``): another session
    holds the resolution's row (``SELECT ... FOR UPDATE`` in a transaction left open) past the heartbeat timeout, so
    the live resolver's heartbeat waits for it; a reader in a process of its own then finds the resolution silent
    and its marking waits for the row too. Once the row is let go, the beat, queued first, lands first, and the
    marking, finding it, marks nothing (PostgreSQL queues a row's waiters: held before; no change there)."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    root_id, gate = new_id(), tmp_path / "gate"
    proc = start_resolver(tmp_path, root_id, gate, {"SEMATIC_K8S_DB_URL": postgres_url}, stderr=subprocess.PIPE,
                          text=True)
    store = SqlStore(postgres_url, stale_after=10 ** 6)  # reads without marking anything
    res = store._res
    reader: subprocess.Popen | None = None
    try:
        wait_for(lambda: Path(f"{gate}.started").exists() or proc.poll() is not None, 60, what="the gated step")
        assert proc.poll() is None

        def waiting_for_locks() -> int:  # sessions of this database waiting for a lock
            with store.engine.connect() as c:
                return c.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND wait_event_type = 'Lock'"))
        with store.engine.connect() as holder:
            holder.execute(sa.select(res.c.id).where(res.c.id == root_id).with_for_update()).all()
            wait_for(lambda: waiting_for_locks() >= 1, 60, what="the heartbeat to wait for the row")
            with store.engine.connect() as c:
                wait_for(lambda: c.scalar(sa.select(liveness.silent(res, "postgresql", float(TIMEOUT)))
                                          .where(res.c.id == root_id)), 60, what="the resolution to be silent")
            code = ("import sys; from sematic_k8s.store.sql import SqlStore; "
                    "print(SqlStore(sys.argv[1], stale_after=float(sys.argv[2])).get_resolution(sys.argv[3]).state)")
            reader = subprocess.Popen([sys.executable, "-c", code, postgres_url, TIMEOUT, root_id],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONPATH": pythonpath({})})
            wait_for(lambda: waiting_for_locks() >= 2 or reader.poll() is not None, 60,
                     what="the reader's marking to wait for the row")
            holder.rollback()
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err[-3000:]
        assert out.strip() == "running"
        gate.touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert store.get_resolution(root_id).state == "resolved"
    finally:
        for p in (proc, reader):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
        store.close()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_reading_live_resolutions_writes_nothing_and_a_silent_one_is_marked_by_that_read(tmp_path, db, request):
    """A read of resolutions asks whether each is silent in the statement that reads them: reading a live, beating
    one (get and list) is that one statement, no transaction of its own asking the database (every read of a live
    resolution did that before); a silent one found by a read is marked dead before the read returns it."""
    url = request.getfixturevalue("postgres_url") if db == "postgresql" else f"sqlite:///{tmp_path / 'db'}"
    store = SqlStore(url, stale_after=60)
    now = utcnow()
    store.write(Batch(new_resolutions=[{"id": "live", "root_func_path": "m:p", "state": "running", "created_at": now,
                                        "heartbeat_at": now}]))
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda conn, cursor, sql, *_: statements.append(sql))
    try:
        assert store.get_resolution("live").state == "running"
        assert [r.state for r in store.list_resolutions()] == ["running"]
        assert len(statements) == 2 and all(s.lstrip().upper().startswith("SELECT") for s in statements), statements
        with store.engine.begin() as conn:  # its process went silent an hour ago
            conn.execute(sa.update(store._res).values(heartbeat_at=now - dt.timedelta(hours=1)))
        res = store.get_resolution("live")
        assert (res.state, res.error.startswith("the resolver stopped responding at ")) == ("failed", True)
    finally:
        store.close()


def test_a_ctrl_c_while_the_heartbeat_writes_for_a_busy_loop_waits_for_that_write(tmp_path: Path) -> None:
    """The heartbeat thread writes the loop's records while a long body runs on the loop's thread; the loop, back,
    waits for that write before it touches them again. A Ctrl-C during that wait (a lock's wait is interrupted by
    signals) let the loop go on at once, to abort writing the same batch the heartbeat was writing."""
    from sematic_k8s.resolvers.heartbeat import Heartbeat

    writing, release, wrote = threading.Event(), threading.Event(), threading.Event()

    def flush() -> None:  # the heartbeat's write of the loop's records, held until released
        writing.set()
        release.wait(60)
        wrote.set()

    def on_sigint(signum: int, frame: Any) -> None:  # Ctrl-C: the write goes on for a moment after it
        threading.Timer(0.3, release.set).start()
        raise KeyboardInterrupt

    beat = Heartbeat(SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}"), new_id(), interval=60, flush=flush, lag=0.01)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        beat.busy()  # the loop goes into a body
        beat.start()
        assert writing.wait(30), "the heartbeat never wrote for the busy loop"
        with pytest.raises(KeyboardInterrupt):
            threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGINT)).start()  # while back() waits
            beat.back()
        assert wrote.is_set(), "back() returned while the heartbeat was still writing the loop's records"
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
        beat.stop()


def test_a_server_back_from_an_outage_longer_than_the_timeout_does_not_mark_the_resolvers_it_silenced(tmp_path):
    """A resolver records through a server that is killed and stays down for longer than the heartbeat timeout, the
    resolver stopped meanwhile (a loaded machine: its retried beat lands late): the server, started again, reads it
    running, not dead, and it finishes. Was: "failed" ("the resolver stopped responding") by the first read or sweep
    after the restart, and the resolver ended with "has already ended as failed" (test_fault_matrix's server cases,
    about 1 in 4 on a loaded machine). A resolution silent since before the outage, whose resolver never comes back,
    is still marked, once the server has been up for the timeout."""
    timeout = 10.0  # the server's grace after its start: long enough for a loaded machine to read it within
    server = ServerProcess(tmp_path, env={"SEMATIC_K8S_HEARTBEAT_TIMEOUT": str(timeout)})
    root_id, gate = new_id(), tmp_path / "gate"
    gone, db_url = new_id(), f"sqlite:///{tmp_path / 'db.sqlite3'}"
    server.start()
    proc = start_resolver(tmp_path, root_id, gate, {"SEMATIC_K8S_SERVER": server.url})
    try:
        wait_for(lambda: Path(f"{gate}.started").exists() or proc.poll() is not None, 60, what="the gated step")
        assert proc.poll() is None
        proc.send_signal(signal.SIGSTOP)
        server.kill()
        db = SqlStore(db_url, create=False, stale_after=3600)  # reads mark nothing silent for less than an hour
        batch = Batch()
        batch.add_resolution(ResolutionRecord(id=gone, root_func_path="gone:f", state="running", created_at=utcnow(),
                                              heartbeat_at=utcnow(), settings={"kind": "local"}))
        db.write(batch)

        def silent_for_the_timeout() -> bool:  # on the database's clock, read without marking
            with db.engine.connect() as conn:
                return {root_id, gone} <= set(liveness.silent_ids(conn, ResolutionRow.__table__, timeout))
        wait_for(silent_for_the_timeout, 60, what="both resolutions silent for the timeout")
        server.start()

        def state(res_id: str) -> str:
            return httpx.get(f"{server.url}/api/v1/resolutions/{res_id}", timeout=30).json()["state"]
        assert state(root_id) == "running" and state(gone) == "running"  # the server's outage, not theirs
        proc.send_signal(signal.SIGCONT)
        gate.touch()
        assert proc.wait(120) == 0
        assert state(root_id) == "resolved"
        wait_for(lambda: state(gone) == "failed", 60, what="the resolution whose resolver is gone to be marked")
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(30)
        server.stop()


def test_a_silent_resolution_marked_by_another_process_first_is_read_as_marked(tmp_path: Path) -> None:
    """A read finds a resolution silent, and another store (a server's sweeper) marks it dead before this read's own
    marking comes (which then marks nothing): the read returns it as marked, failed, not the running one it found
    (was: 'running', so a rerun of it was refused as live although it had just been marked dead)."""
    url = f"sqlite:///{tmp_path / 'db'}"
    store, sweeper = SqlStore(url, stale_after=60), SqlStore(url, stale_after=60)
    now = utcnow()
    store.write(Batch(new_resolutions=[{"id": "gone", "root_func_path": "m:p", "state": "running", "created_at": now,
                                        "heartbeat_at": now}]))
    with store.engine.begin() as conn:  # its process went silent an hour ago
        conn.execute(sa.update(store._res).values(heartbeat_at=now - dt.timedelta(hours=1)))
    own_marking = store.expire_silent

    def swept_first(ids: Any = None) -> list[str]:
        assert sweeper.expire_silent() == ["gone"]  # the other process gets there first
        return own_marking(ids)

    store.expire_silent = swept_first  # type: ignore[method-assign]
    try:
        res = store.get_resolution("gone")
        assert (res.state, (res.error or "").startswith("the resolver stopped responding at ")) == ("failed", True)
    finally:
        store.close()
        sweeper.close()
