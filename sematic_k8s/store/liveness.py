"""When a Resolution is dead: its resolving process heartbeats (``heartbeat_at``) while the Resolution is live
(running, or canceling); one silent for longer than the timeout (a store's ``stale_after``, by default
$SEMATIC_K8S_HEARTBEAT_TIMEOUT) is marked dead, with its unfinished runs, so that ``continue`` can pick it up. The
server's sweeper marks them (:mod:`sematic_k8s_server.liveness`), and so does every read of them
(:meth:`~sematic_k8s.store.sql.SqlStore.get_resolution`, ``list_resolutions``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable

import sqlalchemy as sa

from sematic_k8s import settings
from sematic_k8s.errors import StopsForAFix
from sematic_k8s.store.records import ResolutionRecord, utcnow
from sematic_k8s.store.tables import CANCELED, CANCELING, FAILED, LIVE, UNFINISHED_RUNS

log = logging.getLogger("sematic_k8s")


def cutoff(stale_after: float | None) -> dt.datetime:
    """The time a live Resolution's last heartbeat must be after (``stale_after`` seconds ago; None: the timeout
    of the settings, read now)."""
    timeout = stale_after if stale_after is not None else settings.heartbeat_timeout()
    return utcnow() - dt.timedelta(seconds=timeout)


def silent(resolutions: list[ResolutionRecord], cutoff: dt.datetime) -> list[str]:
    """The ids of live-looking Resolutions whose last heartbeat is too old."""
    return [r.id for r in resolutions
            if r.state in LIVE and r.heartbeat_at is not None and r.heartbeat_at < cutoff]


def expire_for_read(expire: Callable[[list[str]], object], ids: list[str]) -> bool:
    """``expire(ids)`` (``SqlStore.expire_silent``: these resolutions marked dead if silent), as a read of them does;
    whether to read them again. On a full disk, or a database another process keeps locked, the read goes on without
    it (they are read as they are, and marked once the disk has room, or the lock is let go)."""
    try:
        expire(ids)
    except StopsForAFix as e:
        log.warning("resolution(s) %s stopped heartbeating but cannot be marked dead yet: %s", ", ".join(ids), e)
        return False
    return True


def expire_silent(conn: sa.Connection, resolutions: sa.Table, runs: sa.Table, cutoff: dt.datetime,
                  ids: Iterable[str] | None = None) -> list[str]:
    """Mark dead every running (or canceling) Resolution, of ``ids`` or all, whose resolving process has
    not heartbeated since ``cutoff``: "failed" ("canceled" when a cancel was asked), with the plain reason
    "the resolver stopped responding at <time>", and its unfinished runs "canceled". Then ``continue``
    can pick it up. Returns the ids marked. (Resolutions recorded without heartbeats are left alone.)"""
    t = resolutions
    silent = [t.c.state.in_(LIVE), t.c.heartbeat_at.is_not(None), t.c.heartbeat_at < cutoff]
    if ids is not None:
        silent.append(t.c.id.in_(list(ids)))
    marked = []
    found = conn.execute(sa.select(t.c.id, t.c.state, t.c.heartbeat_at).where(*silent)).all()
    for res_id, state, beat in found:
        now = utcnow()
        reason = f"the resolver stopped responding at {beat:%Y-%m-%d %H:%M:%S} UTC"
        done = conn.execute(sa.update(t).where(t.c.id == res_id, *silent).values(  # unless it beat meanwhile
            state=CANCELED if state == CANCELING else FAILED, ended_at=now,
            error=reason + ("; canceled as asked" if state == CANCELING else "")))
        if done.rowcount:
            conn.execute(sa.update(runs).where(runs.c.root_id == res_id, runs.c.state.in_(UNFINISHED_RUNS))
                         .values(state=CANCELED, ended_at=now))
            marked.append(res_id)
    return marked
