"""A PostgreSQL database that takes no writes, said as :class:`~sematic_k8s.errors.DatabaseReadOnly`.

A failover can leave the database's URL on a standby for a while, and an operator may set
``default_transaction_read_only`` on the database or its role: PostgreSQL then refuses every write with SQLSTATE 25006
("cannot execute INSERT in a read-only transaction"), which psycopg raises as an ``InternalError``, a class that
otherwise means a fault of the statement. :func:`listen` makes it a ``DatabaseReadOnly`` (the server answers it 503:
clients retry) and drops the engine's pooled connections, whose sessions keep the setting they started with: the next
write connects afresh, to the primary the URL reaches by then, or with the setting undone.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from sematic_k8s.errors import DatabaseReadOnly
from sematic_k8s.store import pgstates

READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction


def listen(engine: sa.Engine) -> None:
    """Raise :class:`DatabaseReadOnly` for PostgreSQL's read-only refusals on ``engine``, its pool dropped
    (:mod:`~sematic_k8s.store.pgstates`)."""
    pgstates.on(engine, READ_ONLY_SQLSTATE, _read_only)


def _read_only(context: Any) -> None:
    context.is_disconnect = True  # this connection and the pool's older ones: their sessions stay read-only
    raise DatabaseReadOnly()
