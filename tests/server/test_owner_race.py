"""Two server processes over one SQLite file, two API keys recording a resolution of one new id at the same instant
(both owner checks read before either insert, as docs/FAULTS.md "Not covered" says): the first insert owns it, and
so does every later check of either process, whose memory of owners (``scopes.Known``) holds what landed, not what
its own request asked for. Held apart by a third process keeping SQLite's write lock while both wait for it."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from sematic_k8s.store.records import utcnow
from serving import create_api_key, record_resolution, server_process, wait_for


def _waiting(beats: Path, resolution_id: str) -> bool:
    """Whether a write carrying a beat of the resolution waits for the lock (its file held: store/inflight.py)."""
    try:
        fd = os.open(beats / resolution_id, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_resolution_recorded_by_two_keys_at_once_is_the_first_inserts_in_both_processes(tmp_path: Path) -> None:
    """Keys A and B, each through a server process of its own, record resolution R (and its root run) at once: both
    answered 200, one insert lands. The key whose insert did not land may not then change R's root run through its
    own process (403), whose checks read the owner the database holds (was: that process kept its own request's key
    as R's owner, so the losing key rewrote the other key's run, an output its cache then hits)."""
    db = tmp_path / "db.sqlite3"
    url = f"sqlite:///{db}"
    keys = {name: create_api_key(url, tmp_path, name) for name in ("alice", "bob")}
    with server_process(tmp_path) as (_, url_a), server_process(tmp_path) as (_, url_b):
        urls = {"alice": url_a, "bob": url_b}
        own = {name: record_resolution(urls[name], keys[name], kind="local", state="running") for name in keys}
        root = uuid.uuid4().hex
        now = utcnow().isoformat()
        answers: dict[str, int] = {}

        def record(name: str) -> None:  # R, its root run, and a beat of the key's own resolution (seen waiting)
            body = {"new_resolutions": [{"id": root, "root_func_path": "m:p", "state": "running", "created_at": now}],
                    "new_runs": {root: {"id": root, "root_id": root, "func_path": "m:p", "func_name": "p",
                                        "state": "running", "created_at": now}},
                    "resolution_updates": {own[name]: {"heartbeat_at": now}}}
            r = httpx.post(urls[name] + "/api/v1/store/write", json=body, headers={"X-API-Key": keys[name]},
                           timeout=60)
            answers[name] = r.status_code

        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        threads = [threading.Thread(target=record, args=(name,), daemon=True) for name in keys]
        try:
            for thread in threads:
                thread.start()
            wait_for(lambda: all(_waiting(tmp_path / "db.sqlite3-beats", own[n]) for n in keys), 30,
                     what="both writes, checked, to wait for the lock")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for thread in threads:
            thread.join(60)
        assert answers == {"alice": 200, "bob": 200}
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                owner = conn.scalar(sa.text("SELECT owner FROM resolutions WHERE id = :id"), {"id": root})
                names = dict(conn.execute(sa.text("SELECT id, name FROM api_keys")).all())
        finally:
            engine.dispose()
        loser = "bob" if names[owner] == "alice" else "alice"
        r = httpx.post(urls[loser] + "/api/v1/store/write", json={"run_updates": {root: {"state": "failed"}}},
                       headers={"X-API-Key": keys[loser]}, timeout=30)
        assert r.status_code == 403 and "another API key recorded its resolution" in r.json()["detail"], r.text
