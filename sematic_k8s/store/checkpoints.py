"""SQLite WAL checkpoints off the writers' path.

In WAL mode (``synchronous=NORMAL``) a commit appends to the write-ahead log without an fsync: it is durable
against a crash of the process as soon as it returns. The fsyncs come with *checkpoints*, which copy the log
back into the database file; by default SQLite runs one inside whichever commit takes the log past 1,000
pages, so that commit (a resolution's flush, a rerun's clone of 10,000 runs) waits for the copy and for the
disk. As SQLite's documentation suggests for such writers, :class:`Checkpointer` runs them on a thread of its
own instead (``PRAGMA wal_checkpoint(PASSIVE)``: it never blocks a reader or a writer, and writes nothing a
crash could lose); the writers' own automatic checkpoint stays as a backstop at :data:`BACKSTOP_PAGES`, should
the thread fall behind.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable

BACKSTOP_PAGES = 10_000  # wal_autocheckpoint of the writers' connections: ~40 MB of log before they checkpoint
SETTLE_S = 1.0  # after a write, how long the thread waits for more before it checkpoints (one per burst)
IDLE_S = 30.0  # a thread with nothing to do this long ends (the next write starts another)


class Checkpointer:
    """Checkpoints the WAL of the SQLite database at ``path`` on a daemon thread, soon after :meth:`wrote` is
    called (writes close together share one checkpoint). The thread starts with the first write and ends after
    :data:`IDLE_S` without one; :meth:`close` ends it after a last checkpoint. ``tend``, when given, is called
    after each checkpoint (the database's other upkeep off the writers' path)."""

    def __init__(self, path: str, tend: Callable[[], None] | None = None) -> None:
        self.path = path
        self._tend = tend
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._closing = threading.Event()  # set by close(): no more threads, and the settling wait cut short
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        """A transaction was committed: checkpoint soon."""
        with self._lock:
            if self._closing.is_set():
                return
            self._due.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"sqlite checkpoints of {self.path}",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Checkpoint what is left and end the thread."""
        with self._lock:
            thread = self._thread
            self._closing.set()
            self._due.set()
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while self._next():
                self._checkpoint(conn)
                if self._tend is not None:
                    self._tend()
            self._checkpoint(conn)
        finally:
            conn.close()

    def _next(self) -> bool:
        """Wait for a write, then for its burst to end; False when the thread should end (closed, or idle)."""
        if not self._due.wait(IDLE_S):
            with self._lock:
                if not self._due.is_set():  # still nothing: end (a write from now on starts a new thread)
                    self._thread = None
                    return False
        if self._closing.is_set():
            return False
        self._closing.wait(SETTLE_S)
        self._due.clear()
        return not self._closing.is_set()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        """One passive checkpoint. A failure (the file removed, the disk full) is not the writers' concern: the
        log keeps every commit, and their backstop checkpoint or the next attempt copies it back."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
