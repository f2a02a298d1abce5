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

import pytest

from sematic_k8s.errors import DatabaseLocked, ResolutionEnded
from sematic_k8s.store.inflight import Beats
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from waiting import wait_for

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


def locked_write() -> DatabaseLocked:
    return DatabaseLocked.at("db.sqlite3", 120)


def held_by_another(path: Path) -> bool:
    """Whether another open file description (as another process's would) finds ``path`` held."""
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def test_a_beat_that_gave_up_waiting_for_the_lock_stays_on_its_way_until_the_next_lands(tmp_path):
    """Between a write that gave up waiting for the lock (``DatabaseLocked``) and the process's next write of the
    beat, the beat stays on its way; the next write that lands lets go of both, and the file is removed. One that
    gives up again keeps its own hold in place of the first's."""
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=120)
    file = tmp_path / "db.sqlite3-beats" / "r0"
    for _ in range(2):
        with pytest.raises(DatabaseLocked), beats.on_the_way(["r0"]):
            raise locked_write()
        assert held_by_another(file) and beats.on_its_way("r0")
    assert len([fd for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(file)]) == 1
    with beats.on_the_way(["r0"]):
        assert beats.on_its_way("r0")
    assert not file.exists()


def test_a_beat_refused_otherwise_after_one_that_gave_up_is_no_longer_on_its_way(tmp_path):
    """The next write failing for another reason (the resolution ended meanwhile: no beat of it is coming) lets go
    of the hold the one that gave up kept, as a write that lands does."""
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=120)
    with pytest.raises(DatabaseLocked), beats.on_the_way(["r0"]):
        raise locked_write()
    with pytest.raises(ResolutionEnded), beats.on_the_way(["r0"]):
        raise ResolutionEnded("r0", "failed", "the resolver stopped responding")
    assert not beats.on_its_way("r0")
    assert not (tmp_path / "db.sqlite3-beats" / "r0").exists()


def test_a_beat_that_gave_up_and_no_beat_followed_counts_until_its_wait_would_have_ended(tmp_path):
    """No beat follows the one that gave up (its loop stopped on its own ``DatabaseLocked``): it counts as on its
    way no longer than its wait would have (twice the busy timeout from its start), and the process's next write of
    any beat lets go of its hold."""
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=0.5)
    file = tmp_path / "db.sqlite3-beats" / "r0"
    with pytest.raises(DatabaseLocked), beats.on_the_way(["r0"]):
        raise locked_write()
    assert beats.on_its_way("r0")
    wait_for(lambda: not beats.on_its_way("r0"), 30, what="the kept beat's wait to end")
    assert held_by_another(file)
    with beats.on_the_way(["r1"]):
        pass
    assert not file.exists()


KEPT = ("import sys; from sematic_k8s.errors import DatabaseLocked; from sematic_k8s.store.inflight import Beats\n"
        "try:\n"
        "    with Beats(sys.argv[1], waits=120).on_the_way(['r0']): raise DatabaseLocked.at(sys.argv[1], 120)\n"
        "except DatabaseLocked: print('gave up', flush=True)\n"
        "sys.stdin.read()")


def test_a_killed_processs_beat_that_gave_up_is_not_on_its_way(tmp_path):
    """A process whose beat gave up waiting, killed (kill -9) before its next: the kernel lets go of the hold it
    kept, and its resolution may be marked at once."""
    beats = Beats(str(tmp_path / "db.sqlite3"), waits=120)
    proc = subprocess.Popen([sys.executable, "-c", KEPT, str(tmp_path / "db.sqlite3")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "gave up\n"
    assert beats.on_its_way("r0")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not beats.on_its_way("r0")
