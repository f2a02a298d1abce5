"""A SQLite database another process keeps locked, said as :class:`~sematic_k8s.errors.DatabaseLocked`.

A write waits for SQLite's write lock for the busy timeout (``schema.SQLITE_BUSY_MS``); past it SQLite answers
"database is locked" (``SQLITE_BUSY``) and the transaction is rolled back, nothing of it recorded. That happens
when another process leaves a write transaction open (an ``sqlite3`` shell inside ``BEGIN``, a database browser
with unwritten changes). :func:`listen` makes that error on an engine a ``DatabaseLocked`` naming the file and what
to do (an ``InfrastructureError``: never pinned on a func; the server answers it 503)."""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s.errors import DatabaseLocked


def listen(engine: sa.Engine, waited: float) -> None:
    """Raise :class:`DatabaseLocked` for SQLite's "database is locked" on ``engine`` (a file database whose writes
    wait ``waited`` seconds for the lock), in place of SQLAlchemy's OperationalError."""
    path = engine.url.database

    def handle_error(context: Any) -> None:
        orig = context.original_exception
        if isinstance(orig, sqlite3.OperationalError) and (getattr(orig, "sqlite_errorname", None) == "SQLITE_BUSY"
                                                           or str(orig) == "database is locked"):  # Python 3.10
            raise DatabaseLocked.at(str(path), waited)

    event.listen(engine, "handle_error", handle_error)
