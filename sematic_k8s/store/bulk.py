"""The bulk writers of the embedded resolver's fast paths, inside a batch's transaction
(:meth:`~sematic_k8s.store.sql.SqlStore.write`): cache hits inserted as plain tuples (``Batch.hits``) and a rerun's
reused runs copied from their originals in the database (``Batch.clones``). Both are written for speed (a hit or
a clone costs little more than its row in the database): keep per-row work out of them. (Their figures: the all-hit
and rerun rows of ``bench/embedded.py``.)"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sematic_k8s.store import records, writes
from sematic_k8s.store.json_columns import json_text
from sematic_k8s.store.records import RUN_DEFAULTS

_HIT_COLUMNS = ["id", "root_id", "parent_id", "func_path", "func_name", "input_refs", "inputs", "output_id",
                "cache_key", "cached_from", "original_run_id", "source_hash", "source_file", "source_text", "settings",
                "notes", "created_at", "started_at", "ended_at"]
_JSON_COLUMNS = frozenset({"input_refs", "inputs", "settings", "notes"})


def _hit_insert(dialect: str, paramstyle: str) -> str:
    """The statement :func:`insert_hits` runs: a cache hit's run, resolved, unless its id is there."""
    mark = "?" if paramstyle == "qmark" else "%s"
    values = [f"CAST({mark} AS JSON)" if dialect == "postgresql" and c in _JSON_COLUMNS else mark
              for c in _HIT_COLUMNS]
    return (f"INSERT INTO runs ({', '.join(_HIT_COLUMNS)}, state, attempts) VALUES ({', '.join(values)}, "
            "'resolved', 0) ON CONFLICT (id) DO NOTHING")


def insert_hits(conn: sa.Connection, runs: sa.Table, hits: list[records.CachedRun]) -> None:
    """New runs that are cache hits, inserted if absent in one ``executemany`` of plain tuples: none of the
    per-row, per-field processing of a Core insert (JSON encoding aside), which would cost a hit more than
    everything else it takes."""
    if not hits:
        return
    dialect = conn.dialect
    if dialect.name not in ("sqlite", "postgresql"):
        writes.insert_absent(conn, runs, [RUN_DEFAULTS | h.fields() for h in hits])
        return
    # SQLite: a timestamp's text as the sqlite3 module's adapter writes it (``isoformat(" ")``), without a call
    # into the adapter for each; PostgreSQL's driver takes datetimes as they are
    text = dialect.name == "sqlite"
    ended_text: tuple[Any, Any] = (None, None)  # the hits of a wave share their end time: its text made once
    dumps, q = json.dumps, encode_basestring_ascii  # json.dumps' text of the usual shapes, written out
    shared: dict[int, tuple[Any, str]] = {}  # a func's settings, encoded once for its runs
    rows = []
    for h in hits:
        created: Any = h.created_at
        ended: Any = h.ended_at
        if text:
            if created is not None:
                created = created.isoformat(" ")
            if ended is not ended_text[0]:
                ended_text = (ended, None if ended is None else ended.isoformat(" "))
            ended = ended_text[1]
        settings = shared.get(id(h.settings))
        if settings is None or settings[0] is not h.settings:
            settings = shared[id(h.settings)] = (h.settings, json_text(h.settings))
        refs = h.input_refs
        refs_text = ("{" + ", ".join(f'{q(k)}: {{"artifact": {q(t["artifact"])}}}' for k, t in refs.items()) + "}"
                     if all(len(t) == 1 and "artifact" in t for t in refs.values()) else dumps(refs))
        changed = "true" if h.source_changed else "false"
        notes = f'{{"cache": {{"hit": {q(h.cached_from)}, "source_changed": {changed}}}}}'
        rows.append((h.id, h.root_id, h.parent_id, h.func_path, h.func_name, refs_text,
                     "{" + ", ".join(f"{q(k)}: {q(v)}" for k, v in h.inputs.items()) + "}",
                     h.output_id, h.cache_key, h.cached_from, h.original_run_id, h.source_hash, h.source_file,
                     h.source_text, settings[1], notes, created, ended, ended))
    conn.exec_driver_sql(_hit_insert(dialect.name, dialect.paramstyle), rows)


# a rerun's reused runs on their way in (see clone_runs): a table private to the connection; on PostgreSQL dropped as
# its transaction ends (nothing left on a server session that a transaction pooler hands to another client next)
_CLONE_MAP = sa.Table(
    "clone_map", sa.MetaData(), sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("original_run_id", sa.String(64)), sa.Column("parent_id", sa.String(64), nullable=True),
    sa.Column("input_refs", sa.JSON(none_as_null=True)), sa.Column("output_ref", sa.JSON(none_as_null=True)),
    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
_CLONE_IDS = ["id", "original_run_id", "parent_id"]
_CLONE_REFS = [*_CLONE_IDS, "input_refs", "output_ref"]


def clone_runs(conn: sa.Connection, runs: sa.Table, clones: list[dict[str, Any]]) -> None:
    """Reused runs of a rerun, each copied from its original inside the database: their new ids, parents and
    (remapped) refs into a temporary table, then one ``INSERT ... SELECT`` joining it with the originals:
    resolved, with ``notes.reused_from``; refs given as None are the original's. A run already there (a batch
    sent again) is skipped. Clones of one root made at one time (a rerun's) share one statement."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for c in clones:
        groups.setdefault((c["root_id"], c["created_at"]), []).append(c)
    for (root_id, created_at), group in groups.items():
        _clone_group(conn, runs, group, root_id, created_at)


def _clone_group(conn: sa.Connection, runs: sa.Table, clones: list[dict[str, Any]], root_id: str,
                 created_at: Any) -> None:
    t, m = runs, _CLONE_MAP
    conn.execute(sa.schema.CreateTable(m, if_not_exists=True))
    conn.execute(sa.delete(m))
    plain = [(c["id"], c["original_run_id"], c.get("parent_id")) for c in clones
             if c.get("input_refs") is None and c.get("output_ref") is None]
    if plain and conn.dialect.name == "sqlite":  # plain strings: straight to the driver, no bind processing
        conn.exec_driver_sql("INSERT INTO clone_map (id, original_run_id, parent_id) VALUES (?, ?, ?)", plain)
    elif plain:
        conn.execute(sa.insert(m), [dict(zip(_CLONE_IDS, row, strict=True)) for row in plain])
    refs = [{k: c.get(k) for k in _CLONE_REFS} for c in clones
            if c.get("input_refs") is not None or c.get("output_ref") is not None]
    if refs:
        conn.execute(sa.insert(m), refs)
    old = t.alias("old")
    if conn.dialect.name == "postgresql":
        reused_from = sa.func.jsonb_build_object("reused_from", old.c.id)
        merged = sa.cast(old.c.notes, postgresql.JSONB).op("||")(reused_from)
        notes: Any = sa.cast(merged, sa.JSON)
    else:
        notes = sa.func.json_set(old.c.notes, "$.reused_from", old.c.id)
    values: dict[str, Any] = {
        "id": m.c.id, "root_id": sa.literal(root_id, sa.String), "parent_id": m.c.parent_id,
        "input_refs": sa.func.coalesce(m.c.input_refs, old.c.input_refs),
        "output_ref": sa.func.coalesce(m.c.output_ref, old.c.output_ref),
        "original_run_id": m.c.original_run_id, "created_at": sa.literal(created_at, sa.DateTime),
        "func_path": old.c.func_path, "func_name": old.c.func_name, "state": sa.literal("resolved"),
        "inputs": old.c.inputs, "output_id": old.c.output_id, "cached_from": old.c.cached_from,
        "source_hash": old.c.source_hash, "source_file": old.c.source_file, "source_text": old.c.source_text,
        "settings": old.c.settings, "attempts": old.c.attempts, "notes": notes, "started_at": old.c.started_at,
        "ended_at": old.c.ended_at}
    present = sa.select(t.c.id).where(t.c.id == m.c.id).exists()
    select = sa.select(*values.values()).select_from(m.join(old, old.c.id == m.c.original_run_id)).where(~present)
    conn.execute(sa.insert(t).from_select(list(values), select))
    conn.execute(sa.delete(m))
