"""Migration 0012 (owners) of a database holding records, on SQLite and PostgreSQL: every row is kept as it was, with
no owner; the embedded store still hits its cached runs, and a look-up through the server's trust hits them only when
the operator trusts the runs recorded before owners were."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from revisions import at_revision, table_as_left
from sematic_k8s.store import schema
from sematic_k8s.store.cache_reads import Trust
from sematic_k8s.store.sql import SqlStore

KEY = "c" * 64
T0 = dt.datetime(2026, 12, 1, 12)


def test_upgrading_a_database_keeps_its_rows_unowned_and_its_cache_hits_for_the_embedded_store(db_url: str) -> None:
    with at_revision(db_url, "0011_api_key_names") as conn:  # no owner column
        res, runs = table_as_left(conn, "resolutions"), table_as_left(conn, "runs")
        assert "owner" not in runs.c and "owner" not in res.c
        conn.execute(sa.insert(res), [{"id": "r1", "root_func_path": "m:p", "state": "resolved", "settings": {},
                                       "created_at": T0, "ended_at": T0}])
        conn.execute(sa.insert(runs), [
            {"id": f"u{i}", "root_id": "r1", "parent_id": None, "func_path": "m:f", "func_name": "f",
             "state": "resolved", "input_refs": {}, "inputs": {}, "settings": {}, "notes": {}, "attempts": 1,
             "cache_key": KEY if i else None, "output_id": "d" * 64, "source_hash": "s", "created_at": T0,
             "ended_at": T0 + dt.timedelta(seconds=i)} for i in range(3)])
    store = SqlStore(db_url)  # brings it to head
    try:
        with store.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == schema.HEAD
            rows = conn.execute(sa.text("SELECT id, root_id, state, cache_key, owner FROM runs ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [("u0", "r1", "resolved", None, None),
                                                ("u1", "r1", "resolved", KEY, None),
                                                ("u2", "r1", "resolved", KEY, None)]
            assert conn.execute(sa.text("SELECT id, state, owner FROM resolutions")).all() == [("r1", "resolved", None)]
            index = next(i for i in sa.inspect(conn).get_indexes("runs") if i["name"] == "ix_runs_cache_hits")
            assert index["column_names"][-1] == "owner"
        assert store.find_cached_many([KEY])[KEY].id == "u2"  # the embedded store: no owners, hits as before
        assert store.find_trusted([KEY], Trust(frozenset({"a" * 32}))) == ({}, {KEY})  # through the server
        hits, skipped = store.find_trusted([KEY], Trust(frozenset(), unowned=True))
        assert hits[KEY].id == "u2" and skipped == set()
    finally:
        store.close()
