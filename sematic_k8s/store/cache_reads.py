"""The SQL store's cache look-ups: the most recent resolved run of a cache key that is not itself a hit, as a whole
record (:func:`find_cached`), as the fields a hit uses (:func:`find_cached_many`), or as what the resolution loop
takes of a hit, with its output artifact, in one statement per 500 keys (:func:`find_hits`); through the server,
only among the runs of the owners the asker trusts (:func:`find_trusted`). All of them read the partial, covering
index ``ix_runs_cache_hits`` (:mod:`~sematic_k8s.store.tables`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sematic_k8s.store import reads, records
from sematic_k8s.store.records import RunRecord

_HIT_FIELDS = ["id", "root_id", "parent_id", "func_path", "func_name", "state", "output_id", "cache_key",
               "source_hash"]
# find_hits: the most recent run of each key (ranked from the covering index, so a key of many runs reads one), joined
# with its output's record
HITS_SQL = ("SELECT hits.id, hits.output_id, hits.source_hash, hits.cache_key, artifacts.format, artifacts.type_name, "
            "artifacts.inline, artifacts.size FROM (SELECT runs.id, runs.output_id, runs.source_hash, runs.cache_key, "
            "row_number() "
            "OVER (PARTITION BY runs.cache_key ORDER BY runs.ended_at DESC) AS hit_rank FROM runs "
            "WHERE runs.cache_key IN ({}) AND runs.state = 'resolved' AND runs.cached_from IS NULL) AS hits "
            "LEFT OUTER JOIN artifacts ON artifacts.id = hits.output_id WHERE hits.hit_rank = 1")
Hit = tuple[records.CacheHit, records.Formats | None]  # a hit, and its output artifact's formats (None: not recorded)


@dataclass(frozen=True)
class Trust:
    """Whose runs a cache look-up may hit: those recorded by one of ``owners`` (API key ids), and with ``unowned``
    those recorded with no owner (before owners were, migration 0012)."""

    owners: frozenset[str]
    unowned: bool = False

    def trusts(self, owner: str | None) -> bool:
        return self.unowned if owner is None else owner in self.owners


def find_cached(conn: sa.Connection, runs: sa.Table, cache_key: str) -> RunRecord | None:
    """The most recent resolved run with this key, whole."""
    t = runs
    stmt = (sa.select(t).where(t.c.cache_key == cache_key, t.c.state == "resolved", t.c.cached_from.is_(None))
            .order_by(t.c.ended_at.desc()))
    return reads.first_record(conn, stmt, RunRecord, reads.RUN_FIELDS)


def find_cached_many(conn: sa.Connection, runs: sa.Table, cache_keys: Iterable[str]) -> dict[str, RunRecord]:
    """The most recent resolved run of each key (one query per 500 keys), with the fields a cache hit uses
    (ids, func, state, output, source hash; not the JSON and time columns, whose decoding would dominate)."""
    return {run.cache_key: run for run, _ in _resolved(conn, runs, cache_keys)}  # type: ignore[misc]


def find_trusted(conn: sa.Connection, runs: sa.Table, cache_keys: Iterable[str],
                 trust: Trust) -> tuple[dict[str, RunRecord], set[str]]:
    """:func:`find_cached_many` among the runs ``trust`` trusts: the most recent such run of each key, and the keys
    that have none but have a run it does not trust: a miss that the asker is told of, by its key alone (the run is
    another key's: its id is none of the asker's business)."""
    out: dict[str, RunRecord] = {}
    skipped: set[str] = set()
    for run, owner in _resolved(conn, runs, cache_keys, trust):
        if trust.trusts(owner):
            out[run.cache_key] = run  # type: ignore[index]
        else:
            skipped.add(run.cache_key)  # type: ignore[arg-type]
    return out, skipped - out.keys()


def _resolved(conn: sa.Connection, runs: sa.Table, cache_keys: Iterable[str],
              trust: Trust | None = None) -> Iterator[tuple[RunRecord, str | None]]:
    """The most recent resolved run (not a hit itself) of each of these keys, with its owner; with ``trust``, the most
    recent it trusts and the most recent it does not, each (at most two a key). Ranked by the database (one query per
    500 keys, the hit's fields only), so a key under which a client recorded many runs (a hundred thousand, to make
    every look-up of it slow) reads one or two of them. Was: every run of the keys, in Python."""
    keys = list(dict.fromkeys(cache_keys))
    t = runs
    partition: list[sa.ColumnElement[Any]] = [t.c.cache_key]
    if trust is not None:  # the same rule as Trust.trusts, in SQL
        trusted: sa.ColumnElement[bool] = t.c.owner.in_(sorted(trust.owners)) if trust.owners else sa.false()
        if trust.unowned:
            trusted = sa.or_(trusted, t.c.owner.is_(None))
        partition.append(sa.case((trusted, 1), else_=0))
    rank = sa.func.row_number().over(partition_by=partition, order_by=t.c.ended_at.desc()).label("rank")
    for i in range(0, len(keys), 500):
        ranked = (sa.select(t.c.id, rank)  # from the covering index alone
                  .where(t.c.cache_key.in_(keys[i:i + 500]), t.c.state == "resolved", t.c.cached_from.is_(None))
                  .subquery())
        stmt = (sa.select(*[t.c[f] for f in _HIT_FIELDS], t.c.owner)
                .select_from(ranked.join(t, t.c.id == ranked.c.id)).where(ranked.c.rank == 1))
        for row in conn.execute(stmt).all():
            yield RunRecord(**dict(zip(_HIT_FIELDS, row[:-1], strict=True))), row[-1]


def find_hits(conn: sa.Connection, cache_keys: Iterable[str]) -> dict[str, Hit]:
    """:func:`find_cached_many` as what the resolution loop uses of a hit (its id, output and source hash, not a
    whole record) with its output artifact as :func:`~sematic_k8s.store.reads.artifact_formats` gives it (None when
    not recorded), in the same query: one statement per 500 keys, its text made here (a Core statement's compilation
    and row processing would take longer than the database). Was: every run of the keys read, each with its output's
    record (its inline bytes), the most recent kept in Python."""
    keys = list(dict.fromkeys(cache_keys))
    hit = records.CacheHit
    out: dict[str, Hit] = {}
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    cursor = conn.connection.cursor()  # the driver's rows as they come: no Row objects
    try:
        for i in range(0, len(keys), 500):
            chunk = tuple(keys[i:i + 500])
            cursor.execute(HITS_SQL.format(", ".join([mark] * len(chunk))), chunk)
            for row in cursor.fetchall():  # the most recent of each key
                art = (row[4], row[5], bytes(row[6]) if row[6] is not None else None, row[7]) if row[4] else None
                out[row[3]] = (hit(row[0], row[1], row[2]), art)
    finally:
        cursor.close()
    return out
