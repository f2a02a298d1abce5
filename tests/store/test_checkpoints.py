"""SQLite's WAL checkpoints run on a thread of the store's own, not inside a writer's commit
(sematic_k8s/store/checkpoints.py): a commit is durable in the log when it returns, and the log reaches the
database file soon after, without a writer waiting for it."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sematic_k8s.store import checkpoints
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore


def _resolution(res_id: str) -> Batch:
    return Batch(new_resolutions=[{"id": res_id, "root_func_path": "m:f", "state": "running",
                                   "created_at": utcnow()}])


def _in_database_file(db: Path, tmp: Path, res_id: str) -> bool:
    """Whether the database file alone (a copy without its write-ahead log) holds the resolution."""
    copy = tmp / f"copy-{time.monotonic_ns()}.sqlite3"
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return conn.execute("SELECT count(*) FROM resolutions WHERE id = ?", (res_id,)).fetchone()[0] == 1
    except sqlite3.OperationalError:  # not even the tables yet: they are in the log too
        return False
    finally:
        conn.close()


def _threads(db: Path) -> list[threading.Thread]:
    """The checkpoint threads of this database (other tests' stores may have theirs)."""
    return [t for t in threading.enumerate() if t.name == f"sqlite checkpoints of {db}"]


def _eventually(check, seconds: float = 20.0) -> bool:  # noqa: ANN001 - a predicate
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_commit_reaches_the_database_file_through_the_checkpoint_thread(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    store = SqlStore(f"sqlite:///{db}")
    try:
        store.write(_resolution("r1"))
        assert store.get_resolution("r1") is not None
        # the writers' own checkpoint waits for 40 MB of log: only the store's thread copies this one back
        assert _eventually(lambda: _in_database_file(db, tmp_path, "r1")), "the log was never checkpointed"
    finally:
        store.close()
    assert not _threads(db), "close() left the checkpoint thread running"


def test_close_checkpoints_what_is_left_and_a_later_write_starts_a_new_thread(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "SETTLE_S", 30.0)  # the thread would wait long before its first checkpoint
    db = tmp_path / "db.sqlite3"
    store = SqlStore(f"sqlite:///{db}")
    store.write(_resolution("r1"))
    store.close()  # ... but close() does not: it checkpoints now
    assert _in_database_file(db, tmp_path, "r1")
    assert not _threads(db)


def test_an_idle_thread_ends_and_the_next_write_is_checkpointed_by_a_new_one(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "IDLE_S", 0.2)
    monkeypatch.setattr(checkpoints, "SETTLE_S", 0.0)
    db = tmp_path / "db.sqlite3"
    store = SqlStore(f"sqlite:///{db}")
    try:
        store.write(_resolution("r1"))
        assert _eventually(lambda: not _threads(db)), "an idle checkpoint thread did not end"
        assert _in_database_file(db, tmp_path, "r1")
        store.write(_resolution("r2"))
        assert _eventually(lambda: _in_database_file(db, tmp_path, "r2"))
    finally:
        store.close()


KILLED_WRITER = """
import os, sys
from sematic_k8s.store import checkpoints
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
checkpoints.SETTLE_S = 3600.0  # no checkpoint before the kill: the commits live in the log alone
store = SqlStore(sys.argv[1])
for i in range(50):
    store.write(Batch(new_resolutions=[{"id": f"r{i}", "root_func_path": "m:f", "state": "running",
                                        "created_at": utcnow()}]))
print("written", flush=True)
sys.stdin.read()
"""


def test_commits_not_yet_checkpointed_survive_a_kill_9_of_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, f"sqlite:///{db}"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()
        proc.wait()
    assert Path(f"{db}-wal").stat().st_size > 0  # the commits were in the log only when the process died
    store = SqlStore(f"sqlite:///{db}")
    try:
        assert len(store.list_resolutions(limit=100)) == 50
    finally:
        store.close()
