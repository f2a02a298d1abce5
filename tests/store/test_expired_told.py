"""What marks a resolution dead tells the store's listeners (``SqlStore.on_expired``: a server publishes them) the ids
it marked, once, after its transaction committed: a read, a sweep, and a write recording a ``continue`` that found the
earlier continuation silent; never a mark rolled back with the write that made it (a ``continue`` refused all the
same). On SQLite and PostgreSQL. The server's side, over HTTP: tests/server/test_marked_dead_live.py."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sematic_k8s.errors import ContinuedAlready
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore


def _resolution(res_id: str, state: str = "running", **fields: object) -> dict:
    now = utcnow()
    return {"id": res_id, "root_func_path": "m:p", "state": state, "created_at": now, "heartbeat_at": now, **fields}


def _continuing(res_id: str, of: str) -> dict:
    return _resolution(res_id, rerun_of=of, settings={"rerun_of": of, "rerun_mode": "continue"})


def test_each_mark_is_told_once_after_it_committed_and_a_rolled_back_one_never(db_url: str) -> None:
    """Two continuations of one resolution (``c1`` silent, ``c2`` live), then a third continue: its write marks ``c1``
    dead, then is refused (``c2`` continues it), and that mark is rolled back with it: nothing told, ``c1`` still
    running. Once ``c2`` ended, the same write lands: ``c1`` marked and told. A read, and a sweep, tell theirs; a
    listener stopped is told nothing more."""
    store = SqlStore(db_url, stale_after=60)
    told: list[list[str]] = []
    stop = store.on_expired(told.append)
    try:
        store.write(Batch(new_resolutions=[_resolution("orig", "failed"), _resolution("c1"), _resolution("c2"),
                                           _resolution("r1"), _resolution("r2"), _resolution("r3")]))
        t = store._res
        with store.engine.begin() as conn:  # c1, c2 continue orig (recorded so at once: no write would take both)
            for res_id in ("c1", "c2"):
                conn.execute(sa.update(t).where(t.c.id == res_id).values(
                    rerun_of="orig", settings={"rerun_of": "orig", "rerun_mode": "continue"}))
            conn.execute(sa.update(t).where(t.c.id != "c2").values(heartbeat_at=utcnow() - dt.timedelta(days=1)))
        with pytest.raises(ContinuedAlready):
            store.write(Batch(new_resolutions=[_continuing("c3", "orig")]))
        assert told == []  # c1's mark rolled back with the refused write
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(t.c.state).where(t.c.id == "c1")) == "running"
        store.write(Batch(resolution_updates={"c2": {"state": "failed", "ended_at": utcnow()}}))
        store.write(Batch(new_resolutions=[_continuing("c3", "orig")]))
        assert told == [["c1"]]
        assert store.get_resolution("r1").state == "failed"  # a read
        assert told == [["c1"], ["r1"]]
        assert sorted(store.expire_silent()) == ["r2", "r3"]  # a sweep
        assert len(told) == 3 and sorted(told[-1]) == ["r2", "r3"]
        assert store.get_resolution("c1").state == "failed" and len(told) == 3  # marked once: told once
        stop()
        with store.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.id == "c3").values(heartbeat_at=utcnow() - dt.timedelta(days=1)))
        assert store.get_resolution("c3").state == "failed"
        assert len(told) == 3
    finally:
        store.close()
