"""A SQLite database kept locked, said as :class:`~sematic_k8s.errors.DatabaseLocked`.

A write waits for SQLite's write lock for the busy timeout (``schema.SQLITE_BUSY_MS``); past it SQLite answers
"database is locked" (``SQLITE_BUSY``) and the transaction is rolled back, nothing of it recorded. That happens
when another process leaves a write transaction open (an ``sqlite3`` shell inside ``BEGIN``, a database browser
with unwritten changes), or when a write of this very process (another of its connections: a resolution's loop
beside its heartbeat thread) holds the lock that long. :func:`listen` makes that error on an engine a
``DatabaseLocked`` naming the file, which of the two held it (this process's write transactions on each file are
counted: those begun ``BEGIN IMMEDIATE``, :func:`~sematic_k8s.store.guards.hold_write_lock`, until they end), and
what to do (an ``InfrastructureError``: never pinned on a func; the server answers it 503)."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s.errors import DatabaseLocked

_HOLDS = "sk_write_lock"  # Connection.info key: the file whose write lock the connection holds
_held: dict[str, int] = {}  # file -> write transactions this process holds open on it now
_count = threading.Lock()


def held_here(path: str) -> bool:
    """Whether a connection of this process holds the write lock of the SQLite file ``path`` now."""
    with _count:
        return _held.get(os.path.realpath(path), 0) > 0


def _took(conn: sa.Connection, path: str) -> None:
    conn.info[_HOLDS] = path
    with _count:
        _held[path] = _held.get(path, 0) + 1


def _let_go(conn: sa.Connection) -> None:
    path = conn.info.pop(_HOLDS, None)
    if path is not None:
        with _count:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]


def listen(engine: sa.Engine, waited: float) -> None:
    """Raise :class:`DatabaseLocked` for SQLite's "database is locked" on ``engine`` (a file database whose writes
    wait ``waited`` seconds for the lock), in place of SQLAlchemy's OperationalError; count the write transactions
    it holds open."""
    path = str(engine.url.database)
    real = os.path.realpath(path)

    def after_execute(conn: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE") and _HOLDS not in conn.info:
            _took(conn, real)

    def handle_error(context: Any) -> None:
        orig = context.original_exception
        if isinstance(orig, sqlite3.OperationalError) and (getattr(orig, "sqlite_errorname", None) == "SQLITE_BUSY"
                                                           or str(orig) == "database is locked"):  # Python 3.10
            raise DatabaseLocked.at(path, waited, by_this_process=held_here(real))

    event.listen(engine, "after_cursor_execute", after_execute)
    for ended in ("commit", "rollback"):
        event.listen(engine, ended, _let_go)
    event.listen(engine, "handle_error", handle_error)
