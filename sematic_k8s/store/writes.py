"""The statements a batch's transaction runs for its records (:meth:`~sematic_k8s.store.sql.SqlStore.write`):
inserts if absent (an artifact's record repaired by one written with its bytes) and updates, rows locked in id
order, a heartbeat stamped with the database's clock and set only forward. The bulk writers of cache hits and rerun
clones are in :mod:`~sematic_k8s.store.bulk`."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from sematic_k8s.store import dbclock, guards
from sematic_k8s.store.records import CLAIMED

# fields an update sets only to a later value than the recorded one: a heartbeat that lands after a newer one (the
# loop's and its heartbeat thread's writes cross; a retried request's first attempt lands late) sets nothing back
FORWARD_ONLY = frozenset({"heartbeat_at"})
# fields the database's clock sets (:mod:`~sematic_k8s.store.dbclock`), whatever time the writer sent: a heartbeat is
# "now" on the one clock every reader judges silence with, not on the resolving process's own
DB_TIME = frozenset({"heartbeat_at"})


def replace_claims(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Delete the claims (resolutions recorded ``CLAIMED`` by the server's rerun action) that ``rows`` record, so
    that :func:`insert_absent` writes its driver's record in their place, in the same transaction."""
    ids = [r["id"] for r in rows if r.get("state") != CLAIMED]
    for chunk in guards.chunks(ids):
        conn.execute(sa.delete(table).where(table.c.id.in_(chunk), table.c.state == CLAIMED))


def insert_absent(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose id is not there yet (``ON CONFLICT DO NOTHING``): race-free between writers
    of the same artifact, and harmless when a batch is sent again. A time given in a :data:`DB_TIME` field is
    the database's."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        stamped = frozenset(k for k in DB_TIME if row.get(k) is not None)
        groups.setdefault(stamped, []).append({k: v for k, v in row.items() if k not in stamped})
    for stamped, group in groups.items():
        _insert_absent(conn, table, group, {k: dbclock.now(conn.dialect.name) for k in stamped})


def _insert_absent(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]],
                   values: dict[str, Any]) -> None:
    if conn.dialect.name in ("sqlite", "postgresql"):
        ins = sqlite.insert(table) if conn.dialect.name == "sqlite" else postgresql.insert(table)
        conn.execute((ins.values(values) if values else ins).on_conflict_do_nothing(index_elements=["id"]), rows)
        return
    present = set(conn.scalars(sa.select(table.c.id).where(table.c.id.in_([r["id"] for r in rows]))))
    rows = [r for r in rows if r["id"] not in present]
    if rows:
        conn.execute(sa.insert(table).values(values) if values else sa.insert(table), rows)


def insert_artifacts(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert absent artifacts. A recorded artifact takes the record written with inline bytes (verified against the
    id by every writer) when its bytes, format or size differ, which the id decides (a record that differs is corrupt,
    or was written ahead under an id easy to compute, by a client that does not decide what the value is): computing
    a value again repairs it. One recorded without its bytes in its record otherwise true gets the bytes alone. Its
    type and summary, which no id decides, stay the first writer's: a key that could read the bytes of another's
    value (any key may) rewrote them for every resolution showing it."""
    if not rows:
        return
    rows = [r if "inline" in r else {**r, "inline": None} for r in rows]
    t = table
    if conn.dialect.name not in ("sqlite", "postgresql"):
        insert_absent(conn, t, rows)
        return
    ins = (sqlite.insert(t) if conn.dialect.name == "sqlite" else postgresql.insert(t))
    new = ins.excluded
    lies = sa.or_(t.c.format != new.format, t.c.size != new.size,
                  sa.and_(t.c.inline.is_not(None), t.c.inline != new.inline))
    conn.execute(ins.on_conflict_do_update(
        index_elements=["id"],
        set_={"inline": new.inline, "format": new.format, "size": new.size,
              **{c: sa.case((lies, new[c]), else_=t.c[c]) for c in ("type_name", "summary")}},
        where=sa.and_(new.inline.is_not(None), sa.or_(t.c.inline.is_(None), lies))), rows)


def update(conn: sa.Connection, table: sa.Table, updates: dict[str, dict[str, Any]]) -> None:
    """Set the fields of ``updates`` (row id -> fields) on their rows: one statement per set of fields. A
    :data:`DB_TIME` field given a time is set to the database's (None: left as it is)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row_id in sorted(updates):  # every writer locks rows in the same order: no deadlocks between them
        fields = {k: v for k, v in updates[row_id].items() if k not in DB_TIME or v is not None}
        if fields:
            groups.setdefault(tuple(sorted(fields)), []).append(
                {"_id": row_id, **{k: v for k, v in fields.items() if k not in DB_TIME}})
    if len(groups) > 1 and conn.dialect.name == "postgresql":  # one statement per group: lock all first
        conn.execute(_lock_statement(table), {"ids": sorted(updates)})
    for keys, rows in groups.items():
        stmt = _update_statement(table, keys, conn.dialect.name)
        for chunk in guards.chunks(rows):
            conn.execute(stmt, chunk)


@functools.lru_cache(maxsize=256)
def _update_statement(table: sa.Table, keys: tuple[str, ...], dialect: str) -> sa.Update:
    """``UPDATE table SET key = :key ... WHERE id = :_id``, built once per table, set of fields and dialect; a
    heartbeat is the database's time (:data:`DB_TIME`) and only moves forward (:data:`FORWARD_ONLY`)."""
    values: dict[str, Any] = {k: dbclock.now(dialect) if k in DB_TIME else sa.bindparam(k) for k in keys}
    for k in FORWARD_ONLY.intersection(keys):
        column = table.c[k]
        new = values[k] if k in DB_TIME else sa.bindparam(k, type_=column.type)
        values[k] = sa.case((sa.or_(column.is_(None), column < new), new), else_=column)
    return sa.update(table).where(table.c.id == sa.bindparam("_id")).values(values)


@functools.lru_cache(maxsize=8)
def _lock_statement(table: sa.Table) -> sa.Select:
    """PostgreSQL: ``SELECT id FROM table WHERE id = ANY(:ids) ORDER BY id FOR UPDATE`` (one array parameter,
    however many ids), which locks the rows in id order."""
    ids = sa.bindparam("ids", type_=postgresql.ARRAY(table.c.id.type))
    return sa.select(table.c.id).where(table.c.id == sa.any_(ids)).order_by(table.c.id).with_for_update()
