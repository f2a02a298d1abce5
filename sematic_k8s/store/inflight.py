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
it; one killed before that leaves it, empty and unlocked (the resolution's next beat removes it)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("sematic_k8s")


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
        merging the beats of hundreds of drivers) leaves that beat, and the rest, unknown, as before: logged."""
        held: list[tuple[int, str]] = []
        ids = sorted(set(resolution_ids))
        try:
            for i, res_id in enumerate(ids):
                try:
                    held.append((self._hold(self._path(res_id)), self._path(res_id)))
                except OSError as e:
                    log.warning("the beats of %d resolution(s) (%s...) are not known to be on their way: %s",
                                len(ids) - i, res_id, e)
                    break
            yield
        finally:
            for fd, path in held:
                _let_go(fd, path)

    def _hold(self, path: str) -> int:
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
                    return fd
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
