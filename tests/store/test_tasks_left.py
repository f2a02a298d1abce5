"""The mark of a resolution whose end no driver recorded (``tasks_left``): the copies of its workers' tasks may be
left in storage, for the server's sweeper to delete (sematic_k8s_server.copies). Set by the one code path that marks a
resolution dead, whoever calls it (a read here), on SQLite and PostgreSQL; migration 0013 sets it on the resolutions
marked dead before it."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import command

from revisions import at_revision, table_as_left
from sematic_k8s.store import schema
from sematic_k8s.store.records import CLAIMED, Batch, utcnow
from sematic_k8s.store.sql import SqlStore

T0 = dt.datetime(2026, 12, 1, 12)


def test_a_resolution_marked_dead_by_a_read_has_its_task_copies_left_until_the_sweeper_says_they_are_gone(
        db_url: str) -> None:
    """Three resolutions whose processes went silent an hour ago: a running one and a canceling one are marked dead by
    the read that finds them, their copies left (``tasks_left``, oldest end first); a rerun the server claimed that
    no driver recorded is marked dead too, with no copies to delete (no driver ran it). A live, beating one is not
    listed. Once the sweeper says a resolution's copies are gone, it is no longer listed."""
    store = SqlStore(db_url, stale_after=60)
    now = utcnow()
    try:
        store.write(Batch(new_resolutions=[
            {"id": i, "root_func_path": "m:p", "state": state, "created_at": now, "heartbeat_at": now}
            for i, state in [("a1", "running"), ("a2", "running"), ("a3", CLAIMED), ("a4", "running")]]))
        store.request_cancel("a2")
        with store.engine.begin() as conn:
            conn.execute(sa.update(store._res).where(store._res.c.id != "a4")
                         .values(heartbeat_at=now - dt.timedelta(days=1)))
        assert store.tasks_left() == []  # nobody marked them yet
        assert store.get_resolution("a1").state == "failed"  # a read marks it
        assert [r.state for r in store.list_resolutions(id_prefix="a2")] == ["canceled"]
        assert store.get_resolution("a3").state == "failed"
        assert store.get_resolution("a4").state == "running"
        assert store.tasks_left() == ["a1", "a2"]
        store.tasks_gone("a1")
        assert store.tasks_left() == ["a2"]
    finally:
        store.close()


def test_upgrading_a_database_marks_the_resolutions_marked_dead_before_with_their_copies_left(db_url: str) -> None:
    with at_revision(db_url, "0012_owners") as conn:
        res = table_as_left(conn, "resolutions")  # no tasks_left column
        assert "tasks_left" not in res.c
        dead = "the resolver stopped responding at 2026-12-01 11:00:00 UTC"
        conn.execute(sa.insert(res), [
            {"id": i, "root_func_path": "m:p", "state": state, "settings": {}, "error": error, "created_at": T0,
             "ended_at": T0 + dt.timedelta(seconds=n)}
            for n, (i, state, error) in enumerate([
                ("d1", "failed", dead), ("d2", "canceled", dead + "; canceled as asked"), ("f1", "failed", "boom"),
                ("r1", "resolved", None), ("c1", "failed", "its driver never recorded it (claimed at ...)")])])
    store = SqlStore(db_url)  # brings it to head
    try:
        with store.engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == schema.HEAD
        assert store.tasks_left() == ["d1", "d2"]
        assert {r.id: r.state for r in store.list_resolutions()} == {
            "d1": "failed", "d2": "canceled", "f1": "failed", "r1": "resolved", "c1": "failed"}  # else as it was
        with store.engine.begin() as conn:
            command.downgrade(schema.alembic_config(conn), "0012_owners")
            assert "tasks_left" not in sa.Table("resolutions", sa.MetaData(), autoload_with=conn).c
    finally:
        store.close()
