"""A SQLite database another process keeps locked (DESIGN.md "Faults"): a write transaction left open on the
embedded home's ``db.sqlite3`` (an ``sqlite3`` shell inside ``BEGIN``, a database browser with unwritten changes)
for longer than a write waits for SQLite's lock. The resolution stops with one line naming the file and what to
do, nothing recorded is lost, and ``continue`` finishes it once the lock is let go; a server over that database
answers 503 meanwhile, and its client's retried write lands once it is let go. A live resolution whose heartbeat
waits for that lock past the heartbeat timeout is not marked dead by a reader that gets the lock first."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

import fault_pipelines as fp
import sematic_k8s as sk
from outages import ServerProcess, running
from sematic_k8s.errors import DatabaseLocked, ServerError
from sematic_k8s.future import new_id
from sematic_k8s.resolvers.heartbeat import Heartbeat
from sematic_k8s.store import guards, liveness, schema
from sematic_k8s.store.http import HttpStore
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from sematic_k8s.store.tables import ResolutionRow, RunRow
from serving import serve, wait_for

BUSY_MS = 2000  # how long a write waits for the lock, in these tests (120 s otherwise)


class LockHolder:
    """Another process holding ``db``'s write lock (``BEGIN IMMEDIATE``, nothing written) until :meth:`release`;
    with ``now=False``, started beforehand and taking it at :meth:`take`."""

    def __init__(self, db: Path, *, now: bool = True) -> None:
        code = (f"import sqlite3, sys; c = sqlite3.connect({str(db)!r}, isolation_level=None); "
                f"{'' if now else 'sys.stdin.readline(); '}"
                "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); sys.stdin.read(); c.execute('ROLLBACK')")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.waiting = not now
        if now:
            self.take()

    def take(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.waiting:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "held\n"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.communicate("", timeout=30)


@pytest.fixture
def short_busy(monkeypatch):
    monkeypatch.setattr(schema, "SQLITE_BUSY_MS", BUSY_MS)
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_TIMEOUT", "1")
    monkeypatch.setenv("SEMATIC_K8S_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)


def test_an_embedded_resolution_meeting_a_database_locked_by_another_process_stops_in_words(tmp_path, short_busy):
    """The loop's write of what resolved waits out the busy timeout: ``DatabaseLocked`` naming the file, the
    transaction left open, ``fuser`` and how to continue (was: a raw "(sqlite3.OperationalError) database is locked
    [SQL: BEGIN IMMEDIATE]", after waiting as long again to record the end). What was recorded before stays;
    ``continue``, once the lock is let go, reuses it and finishes."""
    db = tmp_path / "db.sqlite3"
    gate = tmp_path / "gate"
    f = fp.gated(3, str(gate))
    outcome: dict = {}

    def resolve() -> None:
        try:
            outcome["value"] = f.resolve(sk.LocalResolver(home=tmp_path, max_parallelism=2))
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e
    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    wait_for(lambda: Path(f"{gate}.started").exists() or outcome, 60, what="the gated step")
    store = SqlStore(f"sqlite:///{db}")
    wait_for(lambda: sum(r.state == "resolved" for r in store.runs_of_root(f.id)) >= 2 or outcome, 60,
             what="the first two steps to be recorded")
    holder = LockHolder(db)
    try:
        gate.touch()  # the gated step and the last addition resolve; their write meets the lock
        thread.join(120)
        assert not thread.is_alive()
        error = outcome.get("error")
        assert isinstance(error, DatabaseLocked), outcome
        words = str(error)
        assert (f"the database {db} stayed locked by another process (a write transaction left open on it) "
                "for 2 s") in words, words
        assert f"`fuser {db}`" in words and f"rerun_from={f.id!r}, rerun_mode='continue'" in words, words
        assert "\n" not in words
    finally:
        holder.release()

    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = {r.id for r in store.runs_of_root(f.id) if r.state == "resolved"}
    assert len(kept) == 2  # add(3, 1) and add(1, 1), recorded before the lock
    res = wait_for(lambda: (r := store.get_resolution(f.id)).state != "running" and r, 30,
                   what="the silent resolution to be marked by a read")
    assert res.state == "failed"
    again = fp.gated(3, str(gate))
    assert again.resolve(sk.LocalResolver(home=tmp_path, rerun_from=f.id, rerun_mode="continue")) == 3 + 1 + 2
    assert kept <= {r.notes.get("reused_from") for r in store.runs_of_root(again.id)}
    store.close()


def test_a_server_over_a_database_locked_by_another_process_answers_503_and_the_retry_lands(tmp_path, short_busy,
                                                                                            caplog):
    """A write through the server meets the lock: 503 in words (no path of the server's: its log names the file;
    was "the metadata database is unavailable: OperationalError: database is locked"); the HTTP store retries it,
    and it lands once the lock is let go."""
    with serve(tmp_path) as s:
        root_id = new_id()
        batch = Batch(new_resolutions=[{"id": root_id, "root_func_path": "m:f", "state": "running",
                                        "created_at": utcnow()}])
        holder = LockHolder(tmp_path / "db.sqlite3")
        outcome: dict = {}
        try:
            with pytest.raises(ServerError) as refused:
                HttpStore(s.url, api_key=s.key, retry_window=0).write(batch)
            assert refused.value.status == 503
            assert ("the metadata database is locked by another process (a write transaction left open on it)"
                    in str(refused.value)), refused.value
            assert str(tmp_path) not in str(refused.value)

            def write() -> None:
                try:
                    HttpStore(s.url, api_key=s.key, retry_window=60).write(batch)
                    outcome["written"] = True
                except BaseException as e:  # noqa: BLE001
                    outcome["error"] = e
            thread = threading.Thread(target=write, daemon=True)
            thread.start()
            wait_for(lambda: caplog.text.count("stayed locked by another process") >= 2 or outcome, 60,
                     what="the retried write to meet the lock")  # the server's log names the file
        finally:
            holder.release()
        thread.join(90)
        assert outcome == {"written": True}, outcome
        assert s.store.get_resolution(root_id).state == "running"


def test_a_server_whose_own_write_holds_the_lock_answers_503_saying_so(tmp_path, short_busy):
    """A write through the server meets the lock held by another of the server's own connections (a write of its
    store that does not end): its 503 says so in the store's words, with its pid (was: "locked by another process",
    whoever held it); no path of the server's."""
    with serve(tmp_path) as s:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:  # a write of the server's process that does not end
            with s.store.engine.begin() as conn:
                guards.hold_write_lock(conn)
                held.set()
                release.wait(120)
        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        try:
            assert held.wait(30)
            batch = Batch(new_resolutions=[{"id": new_id(), "root_func_path": "m:f", "state": "running",
                                            "created_at": utcnow()}])
            with pytest.raises(ServerError) as refused:
                HttpStore(s.url, api_key=s.key, retry_window=0).write(batch)
        finally:
            release.set()
            holder.join(30)
        said = str(refused.value)
        assert refused.value.status == 503
        assert (f"the metadata database is locked by a write of this same process (pid {os.getpid()}, on another of "
                "its connections): nothing of this request was recorded") in said, said
        assert "another process" not in said and str(tmp_path) not in said, said


def test_a_lock_held_by_a_write_of_this_same_process_is_not_said_to_be_another_processs(tmp_path, short_busy,
                                                                                       caplog):
    """A resolution's heartbeat thread whose beat waits out the busy timeout while another connection of its own
    process holds the write lock (a transaction of the store, begun as every write begins: ``BEGIN IMMEDIATE``)
    says the lock was this process's own, with its pid (was: "stayed locked by another process", sending its reader
    to look for a program that does not exist). Once that transaction ended, a lock another process holds is said as
    before."""
    db = tmp_path / "db.sqlite3"
    store = SqlStore(f"sqlite:///{db}")
    root_id = new_id()
    store.write(Batch(new_resolutions=[{"id": root_id, "root_func_path": "m:f", "state": "running",
                                        "created_at": utcnow(), "heartbeat_at": utcnow()}]))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # a write of this process that does not end: another connection of the same store
        with store.engine.begin() as conn:
            guards.hold_write_lock(conn)
            held.set()
            release.wait(120)
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(30)
    beats = Heartbeat(store, root_id, interval=0.2)
    beats.start()
    try:
        wait_for(lambda: "heartbeat not recorded" in caplog.text, 60, what="a beat to wait out the lock")
        release.set()
        holder.join(30)
        said = caplog.text
        assert (f"heartbeat not recorded: DatabaseLocked: the database {db} stayed locked by a write of this same "
                f"process (pid {os.getpid()}, on another of its connections) for 2 s") in said, said
        assert "another process" not in said, said

        caplog.clear()
        other = LockHolder(db)  # now another process: said so
        try:
            wait_for(lambda: "heartbeat not recorded" in caplog.text, 60, what="a beat to wait out the other lock")
        finally:
            other.release()
        assert (f"the database {db} stayed locked by another process (a write transaction left open on it) "
                "for 2 s") in caplog.text, caplog.text
        assert "this same process" not in caplog.text, caplog.text
    finally:
        release.set()
        beats.stop()
        store.close()


def test_a_heartbeat_waiting_for_another_processs_lock_has_its_processs_planning_waiting_too(tmp_path, short_busy):
    """Whether a resolving process can write its planned runs while its heartbeat waits for the lock another process
    holds (so that those writes, carrying a beat, would keep it live): it cannot. A real LocalResolver process plans
    a fan-out of 20,000 runs, written as planned 200 at a time; another process takes the write lock once the first
    of them landed (planning under way), and keeps it until the resolution is silent by the database's clock (past
    the heartbeat timeout): meanwhile nothing of the resolving process lands, neither a beat nor a planned run. Its
    writes wait for the one lock its heartbeat waits for (SQLite has one writer at a time), so a beat carried by
    them would land no sooner than the heartbeat's own."""
    db, root_id, n = tmp_path / "db.sqlite3", new_id(), 20_000
    code = ("import fault_pipelines as fp, sematic_k8s as sk; from sematic_k8s.store import schema; "
            "from sematic_k8s.resolvers import planning; "
            "schema.SQLITE_BUSY_MS = 600_000; planning.PLANNED_RUNS_PER_WRITE = 200; "  # waits out the hold
            f"fp.fan({n}).resolve(sk.LocalResolver(root_id={root_id!r}, max_parallelism=1))")
    here = str(Path(__file__).parent)
    env = {**os.environ, "SEMATIC_K8S_HOME": str(tmp_path), "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.2",
           "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        wait_for(lambda: db.exists() or proc.poll() is not None, 60, what="the database")
        store = SqlStore(f"sqlite:///{db}")  # (migrated, if the resolver has not yet: under its lock)
        res, runs = ResolutionRow.__table__, RunRow.__table__

        def seen() -> tuple[int, object, bool]:  # runs recorded, the last beat, silent (a read: nothing marked)
            with store.engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).where(runs.c.root_id == root_id)).scalar_one()
                row = conn.execute(sa.select(res.c.heartbeat_at, liveness.silent(res, "sqlite", 1.0))
                                   .where(res.c.id == root_id)).one_or_none()
            return (count, *(row or (None, False)))
        holder = LockHolder(db, now=False)  # started now: it takes the lock at once when told
        try:
            wait_for(lambda: seen()[0] > 1 or proc.poll() is not None, 120, what="the first planned runs")
            holder.take()
            taken = seen()
            assert 1 < taken[0] < n, f"planning not under way when the lock was taken: {taken[0]} runs recorded"
            wait_for(lambda: seen()[2], 60, what="the resolution to be silent")
            count, beat, _ = seen()
            assert (count, beat) == taken[:2], ("the resolving process wrote while its heartbeat waited for the lock",
                                                taken, (count, beat))
            assert proc.poll() is None
        finally:
            holder.release()
        wait_for(lambda: seen()[0] > taken[0], 120, what="planning to go on once the lock is let go")
        store.close()
    finally:
        proc.kill()
        proc.wait(30)


# -- a live resolution whose beat waits for another process's lock, and a reader that gets the lock first ----------

LOCK_TIMEOUT = "2"  # seconds of silence after which a resolution is dead, in these tests
READ_STATE = ("import sys; from sematic_k8s.store.sql import SqlStore; "
              "print(SqlStore(sys.argv[1], stale_after=float(sys.argv[2])).get_resolution(sys.argv[3]).state)")


def read_state(db: Path, root_id: str) -> str:
    """The resolution's state as a reader in a process of its own sees it (its read marks it dead if silent)."""
    out = subprocess.run([sys.executable, "-c", READ_STATE, f"sqlite:///{db}", LOCK_TIMEOUT, root_id],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def resolver_waiting_for_the_lock(stack: contextlib.ExitStack, tmp_path: Path, root_id: str, gate: Path,
                                  busy_ms: int, env: dict[str, str] | None = None, parallelism: int = 2):
    """A LocalResolver process at its gate (its heartbeat thread beating every 0.2 s, its writes waiting ``busy_ms``
    for the lock; ``env``: more of its environment, or other settings; ``parallelism``: its max_parallelism, 1: the
    gated step's body on its loop's thread), and another process holding the database's write lock until
    the resolution is silent by the database's clock: past the timeout, so its heartbeat waits for the lock. Returns
    both processes and a read of the resolution's last beat; ``stack`` ends them (and lets go of the lock)."""
    db = tmp_path / "db.sqlite3"
    code = ("import fault_pipelines as fp, sematic_k8s as sk; from sematic_k8s.store import schema; "
            f"schema.SQLITE_BUSY_MS = {busy_ms}; "
            f"fp.gated(3, {str(gate)!r}).resolve(sk.LocalResolver(root_id={root_id!r}, "
            f"max_parallelism={parallelism}))")
    here = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env={
        **os.environ, "SEMATIC_K8S_HOME": str(tmp_path), "SEMATIC_K8S_HEARTBEAT_INTERVAL": "0.2",
        "SEMATIC_K8S_HEARTBEAT_TIMEOUT": LOCK_TIMEOUT, **(env or {}),
        "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)})
    stack.callback(lambda: proc.poll() is None and (proc.send_signal(signal.SIGCONT), proc.kill(), proc.wait(30)))
    wait_for(lambda: db.exists() or proc.poll() is not None, 60, what="the database")
    store = SqlStore(f"sqlite:///{db}", stale_after=10 ** 6)  # reads without marking anything
    stack.callback(store.close)
    res = ResolutionRow.__table__

    def beat() -> tuple[object, bool]:  # the last beat; silent by the database's clock (a read: nothing marked)
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(res.c.heartbeat_at, liveness.silent(res, "sqlite", float(LOCK_TIMEOUT)))
                               .where(res.c.id == root_id)).one_or_none()
        return (None, False) if row is None else (row[0], bool(row[1]))
    def at_gate() -> bool:  # the first two steps recorded resolved, the gated one running
        states = [(r.func_name, r.state) for r in store.runs_of_root(root_id)]
        return states.count(("add", "resolved")) >= 2 and ("wait_for", "running") in states
    wait_for(lambda: (Path(f"{gate}.started").exists() and at_gate()) or proc.poll() is not None, 60,
             what="the gated step")
    assert proc.poll() is None
    holder = LockHolder(db)
    stack.callback(holder.release)
    wait_for(lambda: beat()[1], 60, what="the resolution to be silent while the lock is held")
    return proc, holder, beat


@pytest.mark.parametrize("through", ["embedded", "server"])
def test_a_live_resolution_whose_beat_waits_for_another_processs_lock_is_not_marked_by_a_reader_first(tmp_path,
                                                                                                     monkeypatch,
                                                                                                     through):
    """A live LocalResolver process whose heartbeat waits for the write lock another process holds past the
    heartbeat timeout (its own write; or through a ``sematic-k8s server`` process over the same SQLite home, the
    server's write of it); once the lock is let go, a reader in a process of its own gets it before the beat (the
    process whose write waits stopped for that moment: SQLite's waiters poll, and which one gets the lock is
    otherwise chance, 2 in 5 by hand) and finds the resolution silent. It is not marked dead: its beat is on its
    way (was: marked failed, its runs canceled, and the resolving process stopped with ResolutionEnded when its beat
    landed). The beat then lands (through the server, beside the server's own sweeper, which marks nothing either)
    and the resolution resolves."""
    monkeypatch.delenv("SEMATIC_K8S_SERVER", raising=False)
    monkeypatch.delenv("SEMATIC_K8S_DB_URL", raising=False)
    db, root_id, gate = tmp_path / "db.sqlite3", new_id(), tmp_path / "gate"
    with contextlib.ExitStack() as stack:
        server = None
        if through == "server":
            server = ServerProcess(tmp_path, env={"SEMATIC_K8S_HEARTBEAT_TIMEOUT": LOCK_TIMEOUT})
            stack.enter_context(running(server))
            stack.callback(lambda: server.proc is not None and server.proc.send_signal(signal.SIGCONT))
        proc, holder, beat = resolver_waiting_for_the_lock(
            stack, tmp_path, root_id, gate, 600_000, {"SEMATIC_K8S_SERVER": server.url} if server else None)
        writer = server.proc if server is not None else proc  # the process whose write of the beat waits
        assert writer is not None
        waited_since, _ = beat()
        writer.send_signal(signal.SIGSTOP)  # its beat still waits for the lock, and takes it no sooner than the reader
        holder.release()
        assert read_state(db, root_id) == "running"
        writer.send_signal(signal.SIGCONT)
        wait_for(lambda: beat()[0] != waited_since, 60, what="the waiting beat to land")
        gate.touch()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert read_state(db, root_id) == "resolved"
        assert list((tmp_path / "db.sqlite3-beats").iterdir()) == []  # each beat's file removed once it landed


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_resolution_whose_waiting_beat_will_not_land_is_marked_by_a_reader(tmp_path, how):
    """The same wait, and the resolving process killed (kill -9: the kernel lets go of what it held) or stopped
    (SIGSTOP, its beat's wait never ends) while its beat waits: a reader marks the resolution dead once the lock is
    let go, at once when killed, and once the beat's wait would have ended (twice its busy timeout from the wait's
    start: 6 s here) when stopped."""
    db, root_id, gate = tmp_path / "db.sqlite3", new_id(), tmp_path / "gate"
    with contextlib.ExitStack() as stack:
        proc, holder, _ = resolver_waiting_for_the_lock(stack, tmp_path, root_id, gate, 3000)
        if how == "killed":
            proc.kill()
            proc.wait(30)
            holder.release()
            assert read_state(db, root_id) == "failed"
        else:
            proc.send_signal(signal.SIGSTOP)
            holder.release()
            wait_for(lambda: read_state(db, root_id) == "failed", 60, what="the stopped resolver to be marked")
        res = SqlStore(f"sqlite:///{db}", stale_after=10 ** 6).get_resolution(root_id)
        assert res.error.startswith("the resolver stopped responding at "), res.error


READ_ON_GO = ("import sys; from sematic_k8s.store.sql import SqlStore; "  # read_state's reader, ready beforehand
              "s = SqlStore(sys.argv[1], stale_after=float(sys.argv[2])); s.engine.connect().close(); "
              "print('ready', flush=True); sys.stdin.readline(); "
              "print(s.get_resolution(sys.argv[3]).state, flush=True)")


def test_a_live_resolution_whose_beat_gave_up_waiting_for_the_lock_is_not_marked_before_its_next_beat(tmp_path):
    """The same wait, past the busy timeout (6 s here), the gated step's body on the loop's thread (max_parallelism=1:
    only the heartbeat thread writes meanwhile): the heartbeat's write gives up (``DatabaseLocked``, logged) and its
    next beat comes an interval (1 s here) later. A reader in a process of its own, ready beforehand, gets
    the lock in that gap, once it is let go (the resolving process stopped for that moment, so that its next beat
    surely comes later), and finds the resolution silent. It is not marked dead: the beat that gave up is on its way
    until the next one lands (was: marked failed, the resolving process stopped with ``ResolutionEnded`` at its next
    write). The next beat lands and the resolution resolves."""
    db, root_id, gate = tmp_path / "db.sqlite3", new_id(), tmp_path / "gate"
    with contextlib.ExitStack() as stack:
        proc, holder, beat = resolver_waiting_for_the_lock(stack, tmp_path, root_id, gate, 6000,
                                                           {"SEMATIC_K8S_HEARTBEAT_INTERVAL": "1"}, parallelism=1)
        said: list[str] = []

        def listen() -> None:  # the resolving process's stderr, line by line
            assert proc.stderr is not None
            for line in proc.stderr:
                said.append(line)
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        reader = subprocess.Popen([sys.executable, "-c", READ_ON_GO, f"sqlite:///{db}", LOCK_TIMEOUT, root_id],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.callback(lambda: reader.poll() is None and (reader.kill(), reader.wait(30)))
        assert reader.stdin is not None and reader.stdout is not None and reader.stdout.readline() == "ready\n"
        waited_since, _ = beat()
        wait_for(lambda: any("heartbeat not recorded: DatabaseLocked" in line for line in said)
                 or proc.poll() is not None, 60, what="the waiting beat to give up")
        proc.send_signal(signal.SIGSTOP)  # in the gap: its next beat comes after the reader's look
        holder.release()
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert reader.stdout.readline() == "running\n", "".join(said)[-3000:]
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: beat()[0] != waited_since or proc.poll() is not None, 60, what="the next beat to land")
        assert proc.poll() is None, "".join(said)[-3000:]
        gate.touch()
        assert proc.wait(120) == 0, "".join(said)[-3000:]
        listener.join(30)
        assert read_state(db, root_id) == "resolved"
        assert list((tmp_path / "db.sqlite3-beats").iterdir()) == []  # the kept beat's file removed once one landed
