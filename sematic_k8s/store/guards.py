"""What a write checks in its own transaction before it lands, and refuses the whole batch over: a driver another one
took over (fencing), a batch applied already (ordered writes: skipped, not refused), a resolution that ended, a
resolved run changed, a second ``continue`` of one resolution at once, an artifact record that contradicts the
recorded one (reported, for the server to settle by the bytes); and the write lock those reads need on SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa

from sematic_k8s.errors import CancelRequested, ContinuedAlready, DriverReplaced, ResolutionEnded, RunResolved
from sematic_k8s.store.records import check_sequence
from sematic_k8s.store.tables import AS_ASKED, CANCELED, CANCELING, ENDED, FAILED, RESOLVED

R = TypeVar("R")
TRUTH_FIELDS = ("format", "type_name", "size")  # an artifact's fields that differ when one of two records lies


def chunks(rows: list[R], size: int = 1000) -> Iterator[list[R]]:
    """Rows a statement at a time (executemany, ``IN``): the driver's copy of a huge batch never exists whole."""
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def hold_write_lock(conn: sa.Connection) -> None:
    """SQLite: begin the transaction holding the database's write lock (``BEGIN IMMEDIATE``, waiting up to
    busy_timeout), so that what it reads stays true until it commits, as ``FOR UPDATE`` does on PostgreSQL.
    (pysqlite alone begins only at the first write: a read before it sees what another writer may change.)"""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Replayed(Exception):  # not an error: the batch is answered as written
    """A batch applied already (:func:`refuse_stale`): its sequence for ``resolution_id`` is not above the recorded
    one. The store writes nothing of it and answers it as written: ``canceled`` when its failed end of the
    resolution was recorded canceled (:func:`kept_cancels`; the record holds its words, canceled as asked), as the
    first attempt's answer, lost, would have said."""

    def __init__(self, resolution_id: str, canceled: bool = False) -> None:
        super().__init__(resolution_id)
        self.resolution_id = resolution_id
        self.canceled = canceled


def refuse_stale(conn: sa.Connection, table: sa.Table, updates: dict[str, dict[str, Any]],
                 fence: dict[str, int], sequence: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Refuse the whole batch (nothing of it is recorded) when its writer is stale, else return ``updates`` with
    an accepted cancel kept (:func:`kept_cancels`). Refused:

    - :class:`DriverReplaced` when it carries a driver epoch (``fence``: resolution id -> the epoch its driver
      took over with, :meth:`SqlStore.take_over`) older than the resolution's: another driver took it over since;
    - :class:`Replayed` when it carries a ``sequence`` (``Batch.sequence``) not above the resolution's
      ``driver_seq``: it was applied already, and later writes of its driver since (a retried request whose first
      attempt lands late): answered as written (its failed end recorded canceled, if it was), it sets nothing back;
    - :class:`ResolutionEnded` for a heartbeat or a change of state of a resolution that has ended, and for any
      batch fenced with it (a resolving process's: whatever it records, runs too, it records as the resolution's
      holder), unless it ends it the same way again (the same write sent again: its state and its error): the
      writes of a resolver marked dead meanwhile (:meth:`SqlStore.expire_silent`, which takes the resolution over
      from it without a new epoch) must land neither on the marks (its runs canceled) nor beside the ``continue``
      of it, whether or not they carry a beat (one frozen after it made a batch in the half interval after a beat,
      resumed past the timeout), and an end recorded in another's words (a driver's loop failing the resolution its
      follower failed first) must not replace them. (Other fields, such as settings, are not a resolver's: they
      pass.)
    - :class:`CancelRequested` for a write recording a resolution resolved that is ``canceling``: a cancel accepted
      after its loop last looked (between that look and this write) wins; the loop records it canceled. (A write
      recording such a resolution failed is not refused: it is recorded canceled, :func:`kept_cancels`.)

    Called before the batch writes anything. On PostgreSQL the rows are read ``FOR UPDATE``, every resolution the
    batch updates or fences in id order (the order :func:`writes.update` takes them in): a sweeper's or a
    takeover's commit, or another write's sequence, cannot fall between this check and the write, and a sweeper's
    update of a row read here waits for the write, then finds the fresh heartbeat. (SQLite: the transaction holds
    the database's write lock from its start, :func:`hold_write_lock`.)"""
    check_sequence(fence, sequence)
    writer = {r for r, fields in updates.items() if "heartbeat_at" in fields or "state" in fields} | set(fence)
    if not writer:
        return updates
    t = table
    stmt = sa.select(t.c.id, t.c.state, t.c.error, t.c.ended_at, t.c.driver_epoch, t.c.driver_epoch_at,
                     t.c.driver_seq)
    if conn.dialect.name == "postgresql":
        stmt = stmt.where(t.c.id.in_(sorted({*updates, *fence}))).order_by(t.c.id).with_for_update()
    else:
        stmt = stmt.where(sa.or_(sa.and_(t.c.id.in_(list(writer)), t.c.state.in_((*ENDED, CANCELING))),
                                 t.c.id.in_(list(fence))))
    canceling: set[str] = set()  # ended failed while canceling: recorded canceled
    for res_id, state, error, ended_at, epoch, epoch_at, last in conn.execute(stmt):
        if res_id in fence and (epoch or 0) > fence[res_id]:
            raise DriverReplaced(res_id, epoch_at)
        if res_id in sequence and sequence[res_id] <= (last or 0):
            raise Replayed(res_id, _kept(updates.get(res_id, {}), state, error))
        if res_id in writer and state in ENDED and not _same_end(updates.get(res_id, {}), state, error):
            raise ResolutionEnded(res_id, state, error, ended_at)
        if res_id in writer and state == CANCELING and updates.get(res_id, {}).get("state") == RESOLVED:
            raise CancelRequested(res_id)
        if res_id in writer and (state == CANCELING and updates.get(res_id, {}).get("state") == FAILED
                                 or _kept(updates.get(res_id, {}), state, error)):
            canceling.add(res_id)
    return kept_cancels(updates, canceling)


def kept_cancels(updates: dict[str, dict[str, Any]], canceling: set[str]) -> dict[str, dict[str, Any]]:
    """``updates`` with each of the ``canceling`` resolutions' failed end recorded ``canceled``, its words kept and
    the cancel's after them ("<error>; canceled as asked", as a marking-dead keeps one:
    :func:`~sematic_k8s.store.liveness.expire_silent`): a cancel accepted (its caller told "canceling") after the
    resolution's loop last looked for one wins over its failing end, as over any end, and nothing of the failure is
    lost."""
    if not canceling:
        return updates
    return {res_id: {**fields, "state": CANCELED, "error": _as_asked(fields.get("error"))} if res_id in canceling
            else fields for res_id, fields in updates.items()}


def _as_asked(error: str | None) -> str:
    return (error or "failed") + AS_ASKED


def _kept(fields: dict[str, Any], state: str, error: str | None) -> bool:
    """Whether a resolution's update is a failed end that was recorded canceled as asked (:func:`kept_cancels`),
    sent again (a request retried after it landed): recorded the same way again."""
    return state == CANCELED and fields.get("state") == FAILED and error == _as_asked(fields.get("error"))


def _same_end(fields: dict[str, Any], state: str, error: str | None) -> bool:
    """Whether a resolution's update ends it as it was ended: the same state, and its error (when it sets one)
    the recorded one; or the failed end recorded canceled as asked, sent again (:func:`_kept`)."""
    return fields.get("state") == state and fields.get("error", error) == error or _kept(fields, state, error)


def sequenced(updates: dict[str, dict[str, Any]], sequence: dict[str, int]) -> dict[str, dict[str, Any]]:
    """``updates`` with each sequenced resolution's ``driver_seq`` set to the batch's number (one more column in
    the update the batch makes of it anyway, if it makes one)."""
    if not sequence:
        return updates
    out = dict(updates)
    for res_id, number in sequence.items():
        out[res_id] = {**out.get(res_id, {}), "driver_seq": number}
    return out


def continued(row: dict[str, Any]) -> str | None:
    """The resolution a new resolution's record continues (``rerun_mode="continue"``), or None."""
    settings = row.get("settings")
    if isinstance(settings, dict) and settings.get("rerun_mode") == "continue" and row.get("rerun_of"):
        return str(row["rerun_of"])
    return None


def refuse_second_continue(conn: sa.Connection, table: sa.Table, new_resolutions: list[dict[str, Any]],
                           expire: Callable[[list[str]], list[str]]) -> None:
    """Raise :class:`ContinuedAlready` (the whole batch is not recorded) for a new resolution that continues a
    resolution which another resolution, not ended, continues already: two ``continue`` s of one resolution at once
    would both run what did not succeed. A continuation that went silent does not count: ``expire`` (this
    transaction's :func:`~sematic_k8s.store.liveness.expire_silent` of the ids given) marks it dead first; nor does
    one recorded without heartbeats (by an older version: whether it still runs cannot be told). The same
    record sent again (its own id) is no other. On PostgreSQL the continued resolutions' rows are read ``FOR
    UPDATE``, in id order, so two such writes take turns and the later one sees the earlier one's record (SQLite:
    the write lock, :func:`hold_write_lock`)."""
    wanted: dict[str, str] = {}  # continued resolution -> the new one continuing it
    for row in new_resolutions:
        if (of := continued(row)) is not None:
            if of in wanted and wanted[of] != row["id"]:  # two in one batch (merged requests): the second refused
                raise ContinuedAlready(of, wanted[of], str(row.get("state") or "running"))
            wanted[of] = row["id"]
    if not wanted:
        return
    t = table
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(t.c.id).where(t.c.id.in_(sorted(wanted))).order_by(t.c.id).with_for_update()).all()
    stmt = sa.select(t.c.id, t.c.rerun_of, t.c.state, t.c.settings).where(  # (no heartbeat: an older version's)
        t.c.rerun_of.in_(list(wanted)), t.c.state.not_in(ENDED), t.c.id.not_in(list(wanted.values())),
        t.c.heartbeat_at.is_not(None))
    others = {res_id: (of, state) for res_id, of, state, settings in conn.execute(stmt)
              if continued({"id": res_id, "rerun_of": of, "settings": settings}) is not None}
    if others:
        for res_id in expire(sorted(others)):  # silent: marked dead, and no longer in the way
            del others[res_id]
    if others:
        res_id, (of, state) = min(others.items())
        raise ContinuedAlready(of, res_id, state)


def refuse_unresolving(conn: sa.Connection, table: sa.Table, updates: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`RunResolved` (the whole batch is not recorded) for an update that changes the state or the
    output of a run recorded as resolved (sending the same update again changes neither). Only updates that
    set another state or an output are looked up; on PostgreSQL their rows are read ``FOR UPDATE``, in id order
    (as :func:`writes.update` locks them), so a run resolved meanwhile by another writer is seen."""
    changing = sorted(r for r, fields in updates.items()
                      if fields.get("state", RESOLVED) != RESOLVED or "output_id" in fields)
    t = table
    for chunk in chunks(changing):
        stmt = sa.select(t.c.id, t.c.state, t.c.output_id).where(t.c.id.in_(chunk))
        stmt = (stmt.order_by(t.c.id).with_for_update() if conn.dialect.name == "postgresql"
                else stmt.where(t.c.state == RESOLVED))
        for run_id, state, output_id in conn.execute(stmt):
            fields = updates[run_id]
            if state == RESOLVED and (fields.get("state", RESOLVED) != RESOLVED
                                      or fields.get("output_id", output_id) != output_id):
                raise RunResolved(run_id, output_id)



def conflicting_artifacts(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> set[str]:
    """The ids of ``rows`` written without bytes whose recorded artifact (also without bytes in its record)
    has another format, type or size: which one is true, only the stored bytes tell."""
    written = {r["id"]: r for r in rows if r.get("inline") is None}
    if not written:
        return set()
    t = table
    stmt = sa.select(t.c.id, t.c.format, t.c.type_name, t.c.size).where(t.c.id.in_(list(written)),
                                                                       t.c.inline.is_(None))
    return {art_id for art_id, *recorded in conn.execute(stmt)
            if recorded != [written[art_id].get(k) for k in TRUTH_FIELDS]}
