"""PostgreSQL's refusals said in the store's own words: one ``handle_error`` hook on an engine, looking the error's
SQLSTATE up in the engine's table of what raises for it (:func:`on`). The table's entries:
25006 ``read_only_sql_transaction`` as :class:`~sematic_k8s.errors.DatabaseReadOnly`
(:mod:`~sematic_k8s.store.readonly`), 55P03 ``lock_not_available`` as :class:`~sematic_k8s.errors.TableLocked`
(:mod:`~sematic_k8s.store.lockwait`, a server's engines). A full disk (53100) is :mod:`~sematic_k8s.store.diskfull`'s,
with SQLite's; a statement timeout (57014) is told by the server's handlers
(:mod:`sematic_k8s_server.dbfailures`), not raised as another error.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

Said = Callable[[Any], None]  # given SQLAlchemy's ExceptionContext: raises the store's error (may mark it a disconnect)

_TABLES: weakref.WeakKeyDictionary[sa.Engine, dict[str, Said]] = weakref.WeakKeyDictionary()


def on(engine: sa.Engine, sqlstate: str, said: Said) -> None:
    """Have ``said(context)`` raise for PostgreSQL's errors of ``sqlstate`` on ``engine`` (the engine's one hook
    made at its first entry)."""
    table = _TABLES.get(engine)
    if table is None:
        table = _TABLES[engine] = {}
        states = table  # the hook keeps the table, not the engine

        def handle_error(context: Any) -> None:
            raising = states.get(getattr(context.original_exception, "sqlstate", None) or "")
            if raising is not None:
                raising(context)

        event.listen(engine, "handle_error", handle_error)
    table[sqlstate] = said
