"""A PostgreSQL database that takes no writes, said as :class:`~sematic_k8s.errors.DatabaseReadOnly`.

A failover can leave the database's URL on a standby for a while, and an operator may set
``default_transaction_read_only`` on the database or its role: PostgreSQL then refuses every write with SQLSTATE 25006
("cannot execute INSERT in a read-only transaction"), which psycopg raises as an ``InternalError``, a class that
otherwise means a fault of the statement. :func:`listen` makes it a ``DatabaseReadOnly`` (the server answers it 503:
clients retry).

The pool's sessions keep the setting they started with, and after a failover every one of them reaches the demoted
server: a refusal drops the pool's connections (each made before it connects afresh as it is next checked out), so the
next write reaches the primary the URL reaches by then, or a session with the setting undone. At most once per
:data:`REDIAL_EVERY` seconds for an engine: while the database stays read-only a fresh session says the same, and
dropping the pool at each refused write connected afresh for every write (and every read after it). A refusal
within the interval keeps its connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from sematic_k8s.errors import DatabaseReadOnly
from sematic_k8s.store import pgstates

READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction
REDIAL_EVERY = 5.0  # seconds between two drops of an engine's pool for read-only refusals: a client's Retry-After


def listen(engine: sa.Engine, on_refused: Callable[[], None] | None = None) -> None:
    """Raise :class:`DatabaseReadOnly` for PostgreSQL's read-only refusals on ``engine``, its pool dropped at most
    once per :data:`REDIAL_EVERY` seconds (:mod:`~sematic_k8s.store.pgstates`), after ``on_refused()`` (a server's
    store: the beats refused meanwhile are no sign of their resolvers' death, ``SqlStore.judge_from_now``)."""
    lock = threading.Lock()
    dropped = [float("-inf")]  # when the pool was last dropped for a refusal (time.monotonic)

    def read_only(context: Any) -> None:
        if on_refused is not None:
            on_refused()
        now = time.monotonic()
        with lock:
            due = now - dropped[0] >= REDIAL_EVERY
            if due:
                dropped[0] = now
        if due:
            context.is_disconnect = True  # this connection, and the pool's older ones: their sessions stay read-only
        raise DatabaseReadOnly()

    pgstates.on(engine, READ_ONLY_SQLSTATE, read_only)
