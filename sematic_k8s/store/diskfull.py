"""A full disk under the SQL store: said as :class:`~sematic_k8s.errors.DiskFull`, with room kept to record the end.

SQLite answers a write that its disk cannot take with "database or disk is full" (``SQLITE_FULL``), PostgreSQL with
SQLSTATE 53100; either way the transaction is rolled back and nothing recorded before is touched (SQLite's
write-ahead log keeps every commit: a checkpoint that cannot copy it back leaves it as it is).
:func:`listen` makes every such error on an engine a ``DiskFull`` naming the disk (an ``InfrastructureError``:
never pinned on a func; the server answers it 507).

A resolution that meets a full disk still has to record its end (and what resolved since its last write), or
it would show as running until its heartbeat times out, and then as "the resolver stopped responding". So a
SQLite database keeps a :class:`Reserve` beside it: a file of :data:`RESERVE_BYTES` given back to the disk for a
write that ends a resolution and finds the disk full (:meth:`~sematic_k8s.store.sql.SqlStore.write`), and made
again once the disk has room.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s.errors import DiskFull

RESERVE_BYTES = 1 << 20  # a resolution's end and the few records before it: a few hundred pages of SQLite's log
RESERVE_WHEN_FREE = 16 * RESERVE_BYTES  # made only while the disk has this much free: never what fills it
PG_DISK_FULL = "53100"


def listen(engine: sa.Engine) -> None:
    """Raise :class:`DiskFull` for the database's "disk full" errors on ``engine``, in place of SQLAlchemy's."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    where = database if database and database != ":memory:" else None

    def handle_error(context: Any) -> None:
        orig = context.original_exception
        if isinstance(orig, sqlite3.Error) and (getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL"
                                                or str(orig) == "database or disk is full"):  # Python 3.10
            raise DiskFull.at(where) if where else DiskFull(f"SQLite: {orig}")
        if getattr(orig, "sqlstate", None) == PG_DISK_FULL:
            raise DiskFull(f"the PostgreSQL database's disk is full: {str(orig).strip().splitlines()[0]}",
                           "free space on the database server's disk")

    event.listen(engine, "handle_error", handle_error)


class Reserve:
    """The file ``path`` of :data:`RESERVE_BYTES`, kept while the disk has room, given back when it is full."""

    def __init__(self, path: str) -> None:
        self.path = path

    def keep(self) -> None:
        """Make the file, unless it is there or the disk is short of space (then a later call does)."""
        if os.path.exists(self.path):
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            if shutil.disk_usage(os.path.dirname(self.path) or ".").free < RESERVE_WHEN_FREE:
                return
            with open(tmp, "wb") as f:
                f.write(os.urandom(RESERVE_BYTES))  # not zeros: a compressing file system would keep nothing
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def release(self) -> bool:
        """Give the file's space back to the disk; whether there was one to give."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True
