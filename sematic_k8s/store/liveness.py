"""When a Resolution is dead: its resolving process heartbeats (``heartbeat_at``) while the Resolution is live
(running, or canceling); one silent for longer than the timeout (a store's ``stale_after``, by default
$SEMATIC_K8S_HEARTBEAT_TIMEOUT) is marked dead, with its unfinished runs, so that ``continue`` can pick it up. The
server's sweeper marks them (:mod:`sematic_k8s_server.liveness`), and so does every read of them
(:meth:`~sematic_k8s.store.sql.SqlStore.get_resolution`, ``list_resolutions``). Silence is judged on the database's
clock alone (:mod:`~sematic_k8s.store.dbclock`), the one the heartbeats are stamped with: never on the reader's."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import sqlalchemy as sa

from sematic_k8s import settings
from sematic_k8s.errors import StopsForAFix
from sematic_k8s.store import dbclock
from sematic_k8s.store.records import ResolutionRecord
from sematic_k8s.store.tables import CANCELED, CANCELING, FAILED, LIVE, UNFINISHED_RUNS

log = logging.getLogger("sematic_k8s")


def timeout(stale_after: float | None) -> float:
    """Seconds of silence after which a live Resolution is dead: ``stale_after``, else the settings' (read now)."""
    return stale_after if stale_after is not None else settings.heartbeat_timeout()


def beating(resolutions: list[ResolutionRecord]) -> list[str]:
    """The ids of the live Resolutions that heartbeat: those a read asks :func:`expire_silent` about (whether one is
    silent is for the database's clock to say, not this process's)."""
    return [r.id for r in resolutions if r.state in LIVE and r.heartbeat_at is not None]


def expire_for_read(expire: Callable[[list[str]], list[str]], ids: list[str]) -> bool:
    """``expire(ids)`` (``SqlStore.expire_silent``: these resolutions marked dead if silent), as a read of them does;
    whether to read them again (some were marked). On a full disk, or a database another process keeps locked, the
    read goes on without it (they are read as they are, and marked once the disk has room, or the lock is let go)."""
    try:
        return bool(expire(ids))
    except StopsForAFix as e:
        log.warning("resolution(s) %s stopped heartbeating but cannot be marked dead yet: %s", ", ".join(ids), e)
        return False


def expire_silent(conn: sa.Connection, resolutions: sa.Table, runs: sa.Table, stale_after: float,
                  ids: Iterable[str] | None = None) -> list[str]:
    """Mark dead every running (or canceling) Resolution, of ``ids`` or all, whose resolving process has
    not heartbeated for ``stale_after`` seconds of the database's clock: "failed" ("canceled" when a cancel was
    asked), with the plain reason "the resolver stopped responding at <time>", and its unfinished runs "canceled".
    Then ``continue`` can pick it up. Returns the ids marked. (Resolutions recorded without heartbeats are left
    alone.)"""
    t, dialect = resolutions, conn.dialect.name
    silent = [t.c.state.in_(LIVE), t.c.heartbeat_at.is_not(None), t.c.heartbeat_at < dbclock.now(dialect, stale_after)]
    if ids is not None:
        silent.append(t.c.id.in_(list(ids)))
    marked = []
    found = conn.execute(sa.select(t.c.id, t.c.state, t.c.heartbeat_at).where(*silent)).all()
    for res_id, state, beat in found:
        reason = f"the resolver stopped responding at {beat:%Y-%m-%d %H:%M:%S} UTC"
        done = conn.execute(sa.update(t).where(t.c.id == res_id, *silent).values(  # unless it beat meanwhile
            state=CANCELED if state == CANCELING else FAILED, ended_at=dbclock.now(dialect),
            error=reason + ("; canceled as asked" if state == CANCELING else "")))
        if done.rowcount:
            conn.execute(sa.update(runs).where(runs.c.root_id == res_id, runs.c.state.in_(UNFINISHED_RUNS))
                         .values(state=CANCELED, ended_at=dbclock.now(dialect)))
            marked.append(res_id)
    return marked
