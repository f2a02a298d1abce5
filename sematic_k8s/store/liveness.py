"""When a Resolution is dead: its resolving process heartbeats (``heartbeat_at``) while the Resolution is live
(running, or canceling); one silent for longer than the timeout (a store's ``stale_after``, by default
$SEMATIC_K8S_HEARTBEAT_TIMEOUT) is marked dead, with its unfinished runs, so that ``continue`` can pick it up. The
server's sweeper marks them (:mod:`sematic_k8s_server.liveness`), and so does every read of them
(:meth:`~sematic_k8s.store.sql.SqlStore.get_resolution`, ``list_resolutions``), which asks in its own SELECT whether
each is :func:`silent` and opens the transaction that marks them only when one is. Silence is judged on the
database's clock alone (:mod:`~sematic_k8s.store.dbclock`), the one the heartbeats are stamped with: never on the
reader's.

A server judges no silence until it has been up for the timeout itself (:func:`judging`, from
:meth:`~sematic_k8s.store.sql.SqlStore.judge_from_now`): the beats of drivers that record through it cannot land
while it is down, so a silence that began before it started may be its own outage, which those drivers ride out
(their retry window, 120 s by default, is longer than the timeout, 60 s by default).

A rerun's claim (``CLAIMED``: recorded by the server's rerun action before its driver's launch) is beaten by the
server process launching it, its holder (``held_by``: :mod:`sematic_k8s_server.claim_beats`), until the launch
ends: silent for :func:`holder_silence`, the holder is gone (killed, stopped mid-launch), and the claim is marked
failed, "the server that was launching this rerun stopped ..."; once the launch ended (``held_by`` cleared), its
driver has :data:`CLAIM_GRACE` more than the timeout to record it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from sematic_k8s import settings
from sematic_k8s.errors import StopsForAFix
from sematic_k8s.store import dbclock, notify
from sematic_k8s.store.records import CLAIMED
from sematic_k8s.store.tables import AS_ASKED, CANCELED, CANCELING, ENDED, FAILED, LIVE, UNFINISHED_RUNS

log = logging.getLogger("sematic_k8s")
# seconds beyond the heartbeat timeout a claimed Resolution's driver may take to record it (a pod scheduled, its
# image pulled) once its launch ended before the claim counts as silent (no process can tell a lost pod from a slow one)
CLAIM_GRACE = 600.0
# beats (of $SEMATIC_K8S_HEARTBEAT_INTERVAL) a claim's holder, the server process launching its driver, may miss
# before the claim counts as silent (a holder killed, or stopped, mid-launch): seconds, not the grace's minutes
HOLDER_BEATS = 4
# seconds between a claim holder's beats at the least, whatever it is given (a store's ``stale_after`` of 0, a tiny
# one): its thread never spins; the settings refuse 0 at start (settings.seconds)
MIN_HOLDER_BEAT = 0.05


def timeout(stale_after: float | None) -> float:
    """Seconds of silence after which a live Resolution is dead: ``stale_after``, else the settings' (read now)."""
    return stale_after if stale_after is not None else settings.heartbeat_timeout()


def holder_beat(stale_after: float) -> float:
    """Seconds between a claim holder's beats: $SEMATIC_K8S_HEARTBEAT_INTERVAL, at most a :data:`HOLDER_BEATS`th of
    the heartbeat timeout ``stale_after``, never under :data:`MIN_HOLDER_BEAT` (nor nan)."""
    return max(MIN_HOLDER_BEAT, min(settings.heartbeat_interval(), stale_after / HOLDER_BEATS))


def holder_silence(stale_after: float) -> float:
    """Seconds of silence after which a claim's holder is gone: :data:`HOLDER_BEATS` of its beats (at most the
    heartbeat timeout ``stale_after``)."""
    return HOLDER_BEATS * holder_beat(stale_after)


def judging(awake_since: float | None, stale_after: float) -> bool:
    """Whether silence may be judged: always, unless the store's process judges from ``awake_since`` (its
    ``time.monotonic()`` when it started taking beats: a server), and has not been up for ``stale_after`` seconds
    since. Before then a Resolution is not marked, nor its silence read, whatever its last beat."""
    return awake_since is None or time.monotonic() - awake_since >= stale_after


def silent(resolutions: sa.Table, dialect: str, stale_after: float) -> sa.ColumnElement[bool]:
    """Whether a Resolution is silent: live (running, or canceling), heartbeating, and its last beat older than
    ``stale_after`` seconds of the database's clock (:func:`dbclock.now` for ``dialect``; never this process's); a
    claim whose launch a server process holds (``held_by``, beaten by it): :func:`holder_silence`; a claim its driver
    never recorded (the launch over, or a claim recorded before holders): :data:`CLAIM_GRACE` more.
    :func:`expire_silent` marks by it, and a read selects it with each record (:mod:`~sematic_k8s.store.reads`), so
    that only a read that finds one silent opens the transaction that marks it."""
    t = resolutions
    claimed, beat = t.c.state == CLAIMED, t.c.heartbeat_at
    return sa.and_(beat.is_not(None), sa.or_(
        sa.and_(t.c.state.in_(LIVE), beat < dbclock.now(dialect, stale_after)),
        sa.and_(claimed, t.c.held_by.is_not(None), beat < dbclock.now(dialect, holder_silence(stale_after))),
        sa.and_(claimed, t.c.held_by.is_(None), beat < dbclock.now(dialect, stale_after + CLAIM_GRACE))))


def expire_for_read(expire: Callable[[list[str]], list[str]], ids: list[str]) -> bool:
    """``expire(ids)`` (``SqlStore.expire_silent``: these resolutions, which the read found :func:`silent`, marked dead
    if they still are), as a read of them does; whether to read them again: always once it ran, whatever it marked
    (another process may have marked them first, or they beat meanwhile: what the read found is old either way). On a
    full disk, or a database another process keeps locked, the read goes on without it (they are read as they are,
    and marked once the disk has room, or the lock is let go)."""
    try:
        expire(ids)
        return True
    except StopsForAFix as e:
        log.warning("resolution(s) %s stopped heartbeating but cannot be marked dead yet: %s", ", ".join(ids), e)
        return False


def silent_ids(conn: sa.Connection, resolutions: sa.Table, stale_after: float) -> list[str]:
    """The ids of the :func:`silent` Resolutions (a read: nothing marked)."""
    t = resolutions
    return list(conn.scalars(sa.select(t.c.id).where(silent(t, conn.dialect.name, stale_after))))


def expire_silent(conn: sa.Connection, resolutions: sa.Table, runs: sa.Table, stale_after: float,
                  ids: Iterable[str] | None = None, on_its_way: Callable[[str], bool] | None = None) -> list[str]:
    """Mark dead every running (or canceling) Resolution, of ``ids`` or all, whose resolving process has
    not heartbeated for ``stale_after`` seconds of the database's clock: "failed" ("canceled" when a cancel was
    asked), with the plain reason "the resolver stopped responding at <time>", and its unfinished runs "canceled".
    Then ``continue`` can pick it up. Its end no driver records, nor the delete of the copies of its workers' tasks
    that comes with it: the mark says they may be left (``tasks_left``, unless it was a claim no driver recorded), for
    the server's sweeper to delete (:func:`tasks_left`). Returns the ids marked. (Resolutions recorded without
    heartbeats are left alone.)
    On PostgreSQL the marks are told live in this transaction (:func:`notify.notify`: each one's resolution event, in
    its state now): every server's followers hear them once it commits, never if it is rolled back, whatever process
    marks them (a server; the CLI or a LocalResolver on the database's URL, its read or its ``continue``). On SQLite
    only a server's own marks are told (``SqlStore.on_expired``): there is no channel between processes.
    ``on_its_way(id)``: whether a beat of it waits for the database's write lock, which ``conn`` holds
    (SQLite: :mod:`~sematic_k8s.store.inflight`); such a Resolution is left alone, its beat lands once this
    transaction ends."""
    t, dialect = resolutions, conn.dialect.name
    dead = [silent(t, dialect, stale_after)]
    if ids is not None:
        dead.append(t.c.id.in_(list(ids)))
    marked: list[str] = []
    events: list[dict[str, Any]] = []
    found = conn.execute(sa.select(t.c.id, t.c.state, t.c.heartbeat_at, t.c.held_by).where(*dead)).all()
    for res_id, state, beat, holder in found:
        if on_its_way is not None and on_its_way(res_id):
            log.info("resolution %s: silent, but its beat waits for the database's lock: not marked", res_id)
            continue
        reason = silence_reason(state, beat, holder)
        # the state and words are the row's as the update finds it, not as read above: on PostgreSQL a cancel that
        # committed while this update waited for the row (running -> canceling) is seen by it, and stays asked
        asked = t.c.state == CANCELING
        done = conn.execute(sa.update(t).where(t.c.id == res_id, *dead).values(  # unless it beat meanwhile
            state=sa.case((asked, CANCELED), else_=FAILED), ended_at=dbclock.now(dialect),
            error=sa.case((asked, reason + AS_ASKED), else_=reason),
            tasks_left=None if state == CLAIMED else True))  # no driver will delete its task copies: the server
        if done.rowcount:
            ended = conn.scalar(sa.select(t.c.state).where(t.c.id == res_id))
            conn.execute(sa.update(runs).where(runs.c.root_id == res_id, runs.c.state.in_(UNFINISHED_RUNS))
                         .values(state=CANCELED, ended_at=dbclock.now(dialect)))
            marked.append(res_id)
            events.append(notify.resolution_event(res_id, ended))
    if events and dialect == "postgresql":  # told to every server's followers once this commits, whoever marks
        notify.notify(conn, events)
    return marked


def silence_reason(state: str, beat: Any, holder: str | None) -> str:
    """The error a Resolution marked dead records: what went silent, and when it was last heard."""
    if state == CLAIMED and holder is not None:
        return f"the server that was launching this rerun stopped (last heard {beat:%H:%M:%S} UTC): re-run it"
    if state == CLAIMED:
        return f"its driver never recorded it (claimed at {beat:%Y-%m-%d %H:%M:%S} UTC)"
    return f"the resolver stopped responding at {beat:%Y-%m-%d %H:%M:%S} UTC"


def tasks_left(conn: sa.Connection, resolutions: sa.Table) -> list[str]:
    """The ids of the ended Resolutions marked dead whose task copies may still be in storage (``tasks_left``: no
    driver recorded their end, which deletes them), oldest end first."""
    t = resolutions
    return list(conn.scalars(sa.select(t.c.id).where(t.c.tasks_left == sa.true(), t.c.state.in_(ENDED))
                             .order_by(t.c.ended_at, t.c.id)))
