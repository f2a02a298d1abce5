"""A server's wait for a lock another PostgreSQL session holds, bounded: :class:`~sematic_k8s.errors.TableLocked`.

An operator's ``LOCK TABLE runs IN ACCESS EXCLUSIVE MODE`` (a manual migration, maintenance) holds every statement
that touches the table for as long as it is held. Unbounded, a server request waited with it, holding a thread and a
pooled connection, while its client gave up at its own timeout (60 s) and sent it again beside it, until the pool was
used up and every request failed. :func:`listen` begins each of an engine's transactions with
``SET LOCAL lock_timeout`` (this transaction only: the setting goes with it), so that a statement waiting longer is
canceled by PostgreSQL (SQLSTATE 55P03, ``lock_not_available``) and its transaction rolled back, nothing of it
recorded; the error is raised as ``TableLocked`` naming the table (the server answers it 503: clients send it again).

Only the server's request engine is bounded (``sematic_k8s_server.db.open_store``, after its start-up migration):
the migration's wait for another process's (``pg_advisory_xact_lock``) must last as long as that one does, and its
transaction sets ``lock_timeout`` back to the database's own (:func:`~sematic_k8s.store.schema.migrate`). The row
locks writers take on each other (``FOR UPDATE`` in :mod:`~sematic_k8s.store.guards` and
:mod:`~sematic_k8s.store.writes`, a labels change) are held for one transaction of milliseconds; only a session that
is not a writer's holds one as long as the bound, and those wait no longer than for a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s.errors import TableLocked

LOCK_NOT_AVAILABLE = "55P03"  # lock_not_available: canceling statement due to lock timeout
_RELATION = re.compile(r'relation "([^"]+)"')  # a row lock's context: 'while updating tuple (0,1) in relation "runs"'
_NAME = re.compile(r'"([^"]+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def listen(engine: sa.Engine, seconds: float, on_timeout: Callable[[], None] | None = None) -> None:
    """Bound every transaction's lock waits on ``engine`` (PostgreSQL) to ``seconds`` (0: unbounded, nothing set);
    raise :class:`TableLocked` past it, after ``on_timeout()``."""
    if not seconds > 0:
        return
    setting = f"SET LOCAL lock_timeout = {max(1, round(seconds * 1000))}"  # milliseconds: a number, no text of anyone

    def begin(conn: sa.Connection) -> None:
        # On the driver's connection: a statement through ``conn`` would begin another transaction from this event.
        # psycopg begins the transaction with this statement; SQLAlchemy's own BEGIN is implicit.
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(setting)
        except Exception:  # noqa: BLE001, S110 - a connection lost now: the transaction's first statement says it
            pass
        finally:
            cursor.close()

    def handle_error(context: Any) -> None:
        orig = context.original_exception
        if getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            if on_timeout is not None:
                on_timeout()
            raise TableLocked.at(locked_table(orig, context.statement), seconds) from orig

    event.listen(engine, "begin", begin)
    event.listen(engine, "handle_error", handle_error)


def locked_table(error: Any, statement: str | None) -> str | None:
    """The table a 55P03 ``error`` waited for: its context's relation (a row lock), else the one table ``statement``
    reads or writes (a table lock: PostgreSQL names none), else the one of those PostgreSQL points at
    (``diag.statement_position``); None when it cannot be told."""
    diag = getattr(error, "diag", None)
    found = _RELATION.search(getattr(diag, "context", None) or "")
    if found:
        return found.group(1)
    tables = list(dict.fromkeys(m.group(1) or m.group(2) for m in _TABLE.finditer(statement or "")))
    if len(tables) == 1:
        return tables[0]
    position = getattr(diag, "statement_position", None)
    if statement and position and str(position).isdigit():
        name = _NAME.match(as_sent(statement), int(position) - 1)
        if name and (name.group(1) or name.group(2)) in tables:
            return name.group(1) or name.group(2)
    return None


_TABLE = re.compile(r'\b(?:FROM|JOIN|INTO|UPDATE)\s+(?:"([^"]+)"|([A-Za-z_][A-Za-z0-9_$]*))', re.IGNORECASE)
_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")


def as_sent(statement: str) -> str:
    """``statement`` as psycopg sends it, whose positions PostgreSQL counts: ``%(name)s`` and ``%s`` numbered
    ``$1``, ``$2``... (a name once, where it first comes), ``%%`` as ``%``."""
    numbers: dict[str | int, int] = {}

    def sent(found: re.Match[str]) -> str:
        if found.group(0) == "%%":
            return "%"
        key: str | int = found.group(1) or -len(numbers) - 1  # each %s its own
        return f"${numbers.setdefault(key, len(numbers) + 1)}"

    return _PLACEHOLDER.sub(sent, statement)
