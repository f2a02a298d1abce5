"""A server's wait for a lock another PostgreSQL session holds, bounded: :class:`~sematic_k8s.errors.TableLocked`.

An operator's ``LOCK TABLE runs IN ACCESS EXCLUSIVE MODE`` (a manual migration, maintenance) holds every statement
that touches the table for as long as it is held. Unbounded, a server request waited with it, holding a thread and a
pooled connection, while its client gave up at its own timeout (60 s) and sent it again beside it, until the pool was
used up and every request failed. :func:`listen` sets ``lock_timeout`` on each session of an engine once, as the pool
makes its connection (``SET lock_timeout``, committed: a session setting, no round trip of any transaction's), so
that a statement waiting longer is canceled by PostgreSQL (SQLSTATE 55P03, ``lock_not_available``) and its
transaction rolled back, nothing of it recorded; the error is raised as ``TableLocked`` naming the table and the
bound in effect (the server answers it 503: clients send it again; the engine's one SQLSTATE hook,
:mod:`~sematic_k8s.store.pgstates`).

An operator's shorter ``lock_timeout`` (on the server's role or database, ``ALTER ROLE ... SET lock_timeout``) is
kept: each new session reads its own (``pg_settings``, in milliseconds) and sets the bound only when that is 0
(unbounded) or longer. A session whose setting fails (its connection lost meanwhile) is not used: the error is
raised, the pool closes the connection, and the request meets it as any connection it could not have (never a
session left unbounded). The pool's connections made before :func:`listen` (the start-up migration's) are closed.

Only the server's request engines are bounded (``sematic_k8s_server.db.open_store``, after its start-up migration;
its claim beats' store, ``claim_beats._own``): the migration's wait for another process's (``pg_advisory_xact_lock``)
must last as long as that one does, and its transaction sets ``lock_timeout`` back to the database's own
(:func:`~sematic_k8s.store.schema.migrate`: ``SET LOCAL lock_timeout TO DEFAULT`` is the value the session started
with, from its role, database or connect options, never a session's ``SET``, so on a bounded session too). The row
locks writers take on each other (``FOR UPDATE`` in :mod:`~sematic_k8s.store.guards` and
:mod:`~sematic_k8s.store.writes`, a labels change) are held for one transaction of milliseconds; only a session that
is not a writer's holds one as long as the bound, and those wait no longer than for a table.

Behind a pooler that hands a server session to other clients between transactions (PgBouncer's transaction pooling,
which runs no reset query; ``$SEMATIC_K8S_DB_POOLER=transaction``) a session's ``SET`` would not keep the bound: the
engine's later transactions may run on server sessions never bounded, and the ``SET`` stays on the one it was made
on, for whichever client gets it next (another application's too). There (``per_transaction``) nothing is set on the
session: each transaction begins with ``set_config('lock_timeout', ..., true)`` (``SET LOCAL``: gone with the
transaction, on whichever server session ran it), the bound or the operator's shorter one (``pg_settings.reset_val``:
the role's, database's or connect options', never another client's ``SET`` on that server session; read with a
connection's first transaction and again after :data:`OPERATORS_KEPT`, the others setting it as read), one statement,
its failure raised as the transaction's (never a transaction run unbounded).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from sematic_k8s.errors import TableLocked
from sematic_k8s.store import pgstates

LOCK_NOT_AVAILABLE = "55P03"  # lock_not_available: canceling statement due to lock timeout
MAX_MS = 2**31 - 1  # PostgreSQL's largest lock_timeout (about 24 days)
BOUND_MS = "sk_lock_timeout_ms"  # a session's info key: the lock_timeout in effect on it, in milliseconds
READ_AT = "sk_lock_timeout_read_at"  # per transaction: when the connection's BOUND_MS was read (time.monotonic)
OPERATORS_KEPT = 60.0  # seconds a per-transaction bound read with the operator's lock_timeout is set as read
# a row lock's context: 'while updating tuple (0,1) in relation "runs"', in the database's language ('beim Sperren von
# Tupel (0,1) in Relation »runs«'): the last name quoted on the line of the tuple's id, whatever the quotes
_RELATION = re.compile(r"\(\d+,\d+\)[^\n]*[^\w\s][^\S\n]?([^\n]+?)[^\S\n]?[^\w\s][^\S\n]*$", re.MULTILINE)
_NAME = re.compile(r'"([^"]+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def listen(engine: sa.Engine, seconds: float, on_timeout: Callable[[], None] | None = None, *,
           per_transaction: bool = False) -> None:
    """Bound the lock waits of every session of ``engine`` (PostgreSQL) from now to ``seconds`` (0: unbounded,
    nothing set), or to the operator's shorter ``lock_timeout``; raise :class:`TableLocked` past it, after
    ``on_timeout()``. ``per_transaction`` (behind a transaction-pooling PgBouncer): each transaction's own bound, no
    session's."""
    if not seconds > 0:
        return
    bound = min(max(1, round(seconds * 1000)), MAX_MS)  # milliseconds: a number, no text of anyone
    # the bound, or the operator's shorter one (the role's, database's or connect options': a session's SET is not
    # in reset_val), for this transaction only (set_config's is_local: SET LOCAL), in one round trip; pg_settings
    # builds every setting's row (~0.5 ms, 20 times a plain set_config's): read once per connection a while
    # (:data:`OPERATORS_KEPT`), as a session's bound is read once as it connects, then set as read
    local = ("SELECT b, set_config('lock_timeout', b::text, true) FROM (SELECT CASE WHEN reset_val::bigint BETWEEN 1 "
             f"AND {bound} THEN reset_val::bigint ELSE {bound} END AS b FROM pg_settings "
             "WHERE name = 'lock_timeout') AS s")

    def begin(conn: sa.Connection) -> None:
        # SQLAlchemy runs it in the transaction being begun (no other begun from here), its failure raised as the
        # transaction's, through the engine's error hooks (a connection lost: invalidated, its info with it)
        read = conn.info.get(READ_AT)
        if read is not None and time.monotonic() - read < OPERATORS_KEPT:
            conn.exec_driver_sql(f"SELECT set_config('lock_timeout', '{int(conn.info[BOUND_MS])}', true)")
            return
        conn.info[BOUND_MS] = conn.exec_driver_sql(local).scalar_one()
        conn.info[READ_AT] = time.monotonic()

    def connect(dbapi: Any, record: Any) -> None:
        cursor = dbapi.cursor()
        try:
            cursor.execute("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")  # ms: the role's, the
            row = cursor.fetchone()  # database's or the connect options'; 0: none
            own = int(row[0]) if row is not None else 0
            if not 0 < own <= bound:
                cursor.execute(f"SET lock_timeout = {bound}")
            dbapi.commit()  # a session's SET in a transaction rolled back would be undone with it
        finally:
            cursor.close()
        record.info[BOUND_MS] = own if 0 < own <= bound else bound

    def locked(context: Any) -> None:
        if on_timeout is not None:
            on_timeout()
        conn = context.connection
        waited = conn.info.get(BOUND_MS, bound) if conn is not None and not conn.invalidated else bound
        orig = context.original_exception
        raise TableLocked.at(locked_table(orig, context.statement), waited / 1000) from orig

    if per_transaction:
        event.listen(engine, "begin", begin)
    else:
        event.listen(engine, "connect", connect)
        engine.dispose()  # the sessions made before (the migration's), not bounded: closed (any checked out: let go)
    pgstates.on(engine, LOCK_NOT_AVAILABLE, locked)


def locked_table(error: Any, statement: str | None) -> str | None:
    """The table a 55P03 ``error`` waited for: its context's relation (a row lock; said in any language), else the
    one table ``statement`` reads or writes (a table lock: PostgreSQL names none), else the one of those PostgreSQL
    points at (``diag.statement_position``); None when it cannot be told."""
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
