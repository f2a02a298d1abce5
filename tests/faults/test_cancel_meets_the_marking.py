"""A cancel and the marking of a silent resolution dead meeting on PostgreSQL: the marking reads the resolution
``running`` (no lock: a plain SELECT), the cancel's update to ``canceling`` commits, then the marking's update,
which waited for the row, applies. The person who cancelled was told ``canceling``: the record must end
``canceled`` ("...; canceled as asked"), never ``failed`` as if nobody had asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from sematic_k8s import settings
from sematic_k8s.store import liveness
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow
from sematic_k8s.store.sql import SqlStore
from waiting import wait_for

HERE = Path(__file__).parent
TIMEOUT = "2"  # seconds of silence after which the marking process takes the resolution for dead


def _running(store: SqlStore) -> str:
    """A running resolution recorded by hand, as a resolver that stopped beating just now left it; its id."""
    res_id, now = uuid.uuid4().hex, utcnow()
    batch = Batch()
    batch.add_resolution(ResolutionRecord(id=res_id, root_func_path="gone:f", state="running", created_at=now,
                                          heartbeat_at=now, settings={"kind": "local"}))
    batch.add_run(RunRecord(id=res_id, root_id=res_id, parent_id=None, func_path="gone:f", func_name="f",
                            state="running", created_at=now))
    store.write(batch)
    return res_id


def _process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
    environ.update(env)
    return subprocess.Popen([sys.executable, *args], env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_cancel_committing_while_the_marking_dead_waits_for_the_row_ends_canceled(tmp_path, postgres_url):
    """Another session holds the resolution's row (``SELECT ... FOR UPDATE`` left open: a writer's transaction in
    flight). ``sematic-k8s cancel`` (a process whose heartbeat timeout is the default: the resolution is not silent
    to it) queues for the row first; once the resolution's beat is older than 2 s, a reader in a process of its own
    (timeout 2 s) finds it silent, reads it ``running`` and queues its marking behind the cancel. The row let go, the
    cancel commits ``canceling`` and says so; the marking then applies to the canceling row: the resolution is
    recorded canceled as asked, its run canceled. Was: ``failed``, "the resolver stopped responding at ...", the
    accepted cancel not in the record (the marking's state and words were those it had read before it waited)."""
    store = SqlStore(postgres_url, stale_after=10 ** 6)  # reads without marking anything
    res = store._res
    res_id = _running(store)
    cancel = reader = None
    try:
        def waiting_for_locks() -> int:  # sessions of this database waiting for a lock
            with store.engine.connect() as c:
                return c.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND wait_event_type = 'Lock'"))
        with store.engine.connect() as holder:
            holder.execute(sa.select(res.c.id).where(res.c.id == res_id).with_for_update()).all()
            cancel = _process(["-m", "sematic_k8s.cli", "--home", str(tmp_path), "cancel", res_id, "-o", "json"],
                              {settings.DB_URL_ENV: postgres_url})
            wait_for(lambda: waiting_for_locks() >= 1 or cancel.poll() is not None, 60,
                     what="the cancel to wait for the row")
            assert cancel.poll() is None, cancel.communicate()
            with store.engine.connect() as c:
                wait_for(lambda: c.scalar(sa.select(liveness.silent(res, "postgresql", float(TIMEOUT)))
                                          .where(res.c.id == res_id)), 60, what="the resolution to be silent")
            code = ("import sys; from sematic_k8s.store.sql import SqlStore; "
                    "print(SqlStore(sys.argv[1], stale_after=float(sys.argv[2])).get_resolution(sys.argv[3]).state)")
            reader = _process(["-c", code, postgres_url, TIMEOUT, res_id], {})
            wait_for(lambda: waiting_for_locks() >= 2 or reader.poll() is not None, 60,
                     what="the reader's marking to wait for the row")
            assert reader.poll() is None, reader.communicate()
            holder.rollback()
        out, err = cancel.communicate(timeout=60)
        assert cancel.returncode == 0, err[-3000:]
        assert json.loads(out)["state"] in ("canceling", "canceled"), out  # asked: its mark, or the marking's after
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err[-3000:]
        assert out.strip() == "canceled"
        ended = store.get_resolution(res_id)
        assert ended is not None and ended.state == "canceled", ended
        assert ended.error is not None and ended.error.startswith("the resolver stopped responding at "), ended.error
        assert ended.error.endswith("; canceled as asked"), ended.error
        assert [r.state for r in store.runs_of_root(res_id)] == ["canceled"]
    finally:
        for p in (cancel, reader):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
        store.close()
