"""A SQLite file's beats on their way (``sematic_k8s/store/inflight.py``): what counts as a beat waiting for the
write lock, judged by another process's ``flock`` on ``<database>-beats/<resolution id>``. The race it settles (a
reader getting the lock before the beat) is ``tests/faults/test_locked_database.py``."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sematic_k8s.store.inflight import Beats
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore

HOLD = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_SH); "
        "os.utime(fd, (float(sys.argv[2]),) * 2); print('held', flush=True); sys.stdin.read()")


def held_by_another_process(path: Path, until: float) -> subprocess.Popen:
    """A process holding ``path`` as a waiting beat's writer does, its wait to end at ``until`` (this clock)."""
    path.parent.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(until)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_beat_held_by_a_live_process_is_on_its_way_until_its_wait_would_end(tmp_path):
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=120)
    file = tmp_path / "db.sqlite3-beats" / "r0"
    assert not beats.on_its_way("r0")  # no file
    proc = held_by_another_process(file, time.time() + 600)
    try:
        assert beats.on_its_way("r0")
        os.utime(file, (time.time() - 1,) * 2)  # its wait should have ended: a writer stopped while it waits
        assert not beats.on_its_way("r0")
    finally:
        proc.communicate("", timeout=30)
    os.utime(file, (time.time() + 600,) * 2)
    assert not beats.on_its_way("r0")  # left by a writer that ended (or was killed) before removing it


def test_a_killed_writers_beat_is_not_on_its_way(tmp_path):
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=120)
    proc = held_by_another_process(tmp_path / "db.sqlite3-beats" / "r0", time.time() + 600)
    assert beats.on_its_way("r0")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not beats.on_its_way("r0")  # the kernel let go of its flock


def test_a_beat_holds_its_file_while_it_is_written_and_removes_it_after(tmp_path):
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=120)
    file = tmp_path / "db.sqlite3-beats" / "r0"
    with beats.on_the_way(["r0", "r0"]):
        with open(file) as f:  # another open file description: as another process would see it
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the beat's file is not held")
            except BlockingIOError:
                pass
        assert time.time() + 200 < file.stat().st_mtime <= time.time() + 240  # its wait ends within twice 120 s
        with beats.on_the_way(["r0"]):  # another writer's beat of it (the loop's, beside the heartbeat's)
            pass
        assert file.exists()  # still held by the first
    assert not file.exists()


def test_a_beat_whose_file_cannot_be_made_is_written_all_the_same(tmp_path, caplog):
    """A store whose ``db.sqlite3-beats`` is not a directory it can write in: its beats land, logged."""
    store = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    (tmp_path / "db.sqlite3-beats").write_text("not a directory")
    store.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running",
                                        "created_at": utcnow(), "heartbeat_at": utcnow()}]))
    with caplog.at_level(logging.WARNING, logger="sematic_k8s"):
        store.write(Batch(resolution_updates={"r0": {"heartbeat_at": utcnow()}}))
    assert "the beats of 1 resolution(s) (r0...) are not known to be on their way" in caplog.text
    assert store.get_resolution("r0").state == "running"
    store.close()
