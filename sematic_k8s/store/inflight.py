"""Heartbeats on their way into a SQLite file, which the marking-dead leaves alone.

SQLite has one writer at a time: a write carrying a resolution's beat waits for the database's write lock, which
another process may hold for longer than the heartbeat timeout (an ``sqlite3`` shell inside ``BEGIN``). Once it is
let go, whichever waiter polls first gets it; a reader or the server's sweeper that gets it before the beat would
find the resolution silent and mark it dead, though its process is alive and its beat a moment away.

So, while such a write runs (its wait for the lock included), its process holds a shared ``flock`` on
``<database>-beats/<resolution id>`` (:meth:`Beats.on_the_way`), and the marking-dead, holding the write lock (no
beat can land meanwhile), leaves a silent resolution alone whose file is locked (:meth:`Beats.on_its_way`): its
beat lands once the marking's transaction ends. The kernel lets go of a ``flock`` when its process dies, even by
kill -9, so a dead process's resolution is marked as before. A file's modification time is when its latest writer
stops waiting at the latest (twice its busy timeout): a writer stopped while it waits (SIGSTOP) counts no longer.
Both sides read this machine's clock, as a SQLite file is on one machine. The last writer done with a file removes
it; one killed before that leaves it, empty and unlocked (the resolution's next beat removes it).

A write that gives up waiting (``DatabaseLocked``: the lock held past the busy timeout) keeps its files held, until
its process's next write of those beats lands or fails otherwise (the heartbeat's next, an interval later): between
the two no beat would be on its way, and a reader getting the lock then would mark the live resolution dead. Its
wait's end (the file's modification time) still counts, so one that no beat follows (its loop stopped on its own
``DatabaseLocked``) is marked once that passed, and kill -9 lets go of it at once, as of any other."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator

from sematic_k8s.errors import DatabaseLocked

log = logging.getLogger("sematic_k8s")
# a beat's file -> this process's hold of it by its last write of that beat, which gave up waiting for the lock
# (its descriptor, and when its wait would have ended): kept until the next write of the beat lands or fails otherwise
_kept: dict[str, tuple[int, float]] = {}
_keeping = threading.Lock()


class Beats:
    """The beats on their way into the SQLite file ``database``, whose writes wait ``waits`` seconds for its lock
    (its files beside the file itself, whatever link a process opened it by)."""

    def __init__(self, database: str, waits: float) -> None:
        self.dir, self.waits = os.path.realpath(database) + "-beats", waits

    def _path(self, resolution_id: str) -> str:
        return os.path.join(self.dir, resolution_id)

    @contextlib.contextmanager
    def on_the_way(self, resolution_ids: Iterable[str]) -> Iterator[None]:
        """The block (a write carrying these resolutions' beats) with their beats known to be on their way. A file
        that cannot be made or opened (a directory this user may not write; no descriptor left: a server's write
        merging the beats of hundreds of drivers) leaves that beat, and the rest, unknown, as before: logged. A block
        that gives up waiting for the lock (``DatabaseLocked``) keeps its files held (see the module's docstring)."""
        _let_go_of_kept_past_their_wait()
        held: dict[str, tuple[int, float]] = {}
        ids = sorted(set(resolution_ids))
        gave_up = False
        try:
            for i, res_id in enumerate(ids):
                try:
                    held[self._path(res_id)] = self._hold(self._path(res_id))
                except OSError as e:
                    log.warning("the beats of %d resolution(s) (%s...) are not known to be on their way: %s",
                                len(ids) - i, res_id, e)
                    break
            yield
        except DatabaseLocked:
            gave_up = True
            raise
        finally:
            _settle([self._path(res_id) for res_id in ids], held, gave_up)

    def _hold(self, path: str) -> tuple[int, float]:
        """The file at ``path`` held (its descriptor), and when its wait ends (its modification time)."""
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                os.makedirs(self.dir, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if _at(fd, path):
                    until = time.time() + 2 * self.waits
                    os.utime(fd, (until, until))
                    return fd, until
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # removed by a writer done with it meanwhile: the file now there

    def on_its_way(self, resolution_id: str) -> bool:
        """Whether a beat of the resolution is on its way: a writer holds its file, and waits no longer than it may."""
        path = self._path(resolution_id)
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return os.fstat(fd).st_mtime > time.time()
                if _at(fd, path):
                    return False  # no writer holds it: one killed before it removed the file
            finally:
                os.close(fd)


def _settle(paths: list[str], held: dict[str, tuple[int, float]], gave_up: bool) -> None:
    """A write of the beats at ``paths``, holding ``held``, ended. One that gave up waiting for the lock: its holds are
    kept, in place of those kept of the same beats before (a beat it could not hold keeps the one before). Else: the
    holds kept of its beats are let go of, then its own (so that the last one removes the file)."""
    with _keeping:
        before = [(path, _kept.pop(path)) for path in (held if gave_up else paths) if path in _kept]
        if gave_up:
            _kept.update(held)
    for path, (fd, _) in before + ([] if gave_up else list(held.items())):
        _let_go(fd, path)


def _let_go_of_kept_past_their_wait() -> None:
    """Let go of the kept holds whose wait has ended (no beat of theirs followed: the file counts no longer)."""
    now = time.time()
    with _keeping:
        ended = [(path, _kept.pop(path)) for path, (_, until) in list(_kept.items()) if until <= now]
    for path, (fd, _) in ended:
        _let_go(fd, path)


def _at(fd: int, path: str) -> bool:
    """Whether the file open as ``fd`` is still the one at ``path`` (not removed meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _let_go(fd: int, path: str) -> None:
    """Let go of a beat's file; remove it when no other writer holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _at(fd, path):
            os.unlink(path)
    except OSError:  # another writer's beat is on its way: it stays (BlockingIOError), or it is gone already
        pass
    finally:
        os.close(fd)
