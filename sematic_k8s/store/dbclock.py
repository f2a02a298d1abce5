"""The database's clock: the one clock every process sharing a database reads, whatever its own says. A resolving
process's heartbeat is stamped with it (:mod:`~sematic_k8s.store.writes`) and silence is judged against it
(:mod:`~sematic_k8s.store.liveness`), so machines whose clocks disagree (an embedded store on each, one PostgreSQL;
server replicas) neither mark a live resolution dead nor miss a dead one. Times are UTC without a zone, as the
store keeps every time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from sematic_k8s.store.records import utcnow

# SQLite keeps a DateTime as the text SQLAlchemy writes, "2024-05-01 12:00:00.123456": its own clock gives
# milliseconds ('%f': "00.123"), padded to microseconds, so that the two compare as text and read back alike
SQLITE_TIME = "%Y-%m-%d %H:%M:%f"
SQLITE_PAD = "000"


def now(dialect: str, ago: float = 0.0) -> sa.ColumnElement[Any]:
    """The database's time ``ago`` seconds ago, as a SQL expression for ``dialect``: PostgreSQL's
    ``statement_timestamp()`` in UTC (one time for the whole statement); SQLite's 'now' (its file is on one
    machine: that machine's clock). Another database: this process's clock, read when the statement runs."""
    if dialect == "postgresql":
        clock = sa.func.timezone("UTC", sa.func.statement_timestamp(), type_=sa.DateTime)
        return clock - sa.literal(dt.timedelta(seconds=ago), sa.Interval) if ago else clock
    if dialect == "sqlite":
        shifted = ("now", f"-{ago:f} seconds") if ago else ("now",)
        return sa.func.strftime(SQLITE_TIME, *shifted, type_=sa.String).concat(SQLITE_PAD)
    return sa.bindparam(None, callable_=lambda: utcnow() - dt.timedelta(seconds=ago), type_=sa.DateTime)
