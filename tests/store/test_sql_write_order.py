"""Ordered writes on the SQL store (SQLite and PostgreSQL): a driver's batch numbered within its epoch
(``Batch.sequence``) that is not newer than the last one applied changes nothing and raises nothing; a heartbeat
never goes back. The network side (a request held up and delivered late) is tests/faults/test_write_order.py."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sematic_k8s.errors import DriverReplaced
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore

NOW = utcnow()


@pytest.fixture
def store(running_store):
    return running_store({"a1": "created", "a2": "created"})


def _seq(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return conn.scalar(sa.text("SELECT driver_seq FROM resolutions WHERE id = 'r0'"))


def _step(store: SqlStore) -> tuple:
    run, res = store.get_run("a1"), store.get_resolution("r0")
    return run.state, run.notes, res.settings


def _batch(epoch: int, number: int, state: str, step: int) -> Batch:
    return Batch(run_updates={"a1": {"state": state, "notes": {"step": step}}},
                 resolution_updates={"r0": {"settings": {"step": step}}}, fence={"r0": epoch}, sequence={"r0": number})


def test_a_batch_not_newer_than_the_last_applied_changes_nothing(store) -> None:
    epoch = store.take_over("r0")
    store.write(_batch(epoch, 2, "failed", 2))
    assert (_step(store), _seq(store)) == (("failed", {"step": 2}, {"step": 2}), 2)
    for late in (_batch(epoch, 1, "running", 1), _batch(epoch, 2, "running", 1)):  # older; sent again
        replays: set[str] = set()
        store.write(late, replays=replays)  # answered as written
        assert replays == {"r0"}
        assert (_step(store), _seq(store)) == (("failed", {"step": 2}, {"step": 2}), 2)
    store.write(_batch(epoch, 7, "running", 3))  # newer (a gap: a refused write's number)
    assert (_step(store), _seq(store)) == (("running", {"step": 3}, {"step": 3}), 7)
    only_runs = Batch(run_updates={"a2": {"state": "running"}}, fence={"r0": epoch}, sequence={"r0": 8})
    store.write(only_runs)  # no update of the resolution of its own: its number is recorded all the same
    assert _seq(store) == 8


def test_a_takeover_starts_the_sequence_again(store) -> None:
    older = store.take_over("r0")
    store.write(_batch(older, 5, "running", 1))
    newer = store.take_over("r0")
    assert _seq(store) == 0
    store.write(_batch(newer, 1, "failed", 2))  # the new driver's first write: newer than anything of its epoch
    assert _step(store) == ("failed", {"step": 2}, {"step": 2})
    with pytest.raises(DriverReplaced):  # the older driver's writes are refused, whatever their number
        store.write(_batch(older, 6, "running", 3))
    assert (_step(store), _seq(store)) == (("failed", {"step": 2}, {"step": 2}), 1)


def test_a_sequence_needs_its_fence(store) -> None:
    with pytest.raises(ValueError, match="give the epoch in the batch's fence too"):
        store.write(Batch(run_updates={"a1": {"state": "running"}}, sequence={"r0": 1}))
    assert store.get_run("a1").state == "created"


@pytest.mark.parametrize("fields", [{"driver_epoch": 0}, {"labels_version": 7},
                                    {"labels_version": 7, "driver_epoch": 0}])
def test_a_batch_never_sets_what_the_store_alone_keeps(store, fields) -> None:
    """A batch setting a resolution's driver epoch (which would undo a takeover: the replaced driver's writes let in
    again) or its labels' version (a person's change of them then refused, or an older one let through) is refused
    whole, as the server's schema refuses it (was: written by the embedded store)."""
    epoch = store.take_over("r0")
    named = " and ".join(f for f in ("labels_version", "driver_epoch") if f in fields)
    with pytest.raises(ValueError, match=rf"^the batch sets the {named} of resolution r0: the store alone sets .*; "
                       rf"leave {'them' if len(fields) > 1 else 'it'} out of the batch$"):
        store.write(Batch(resolution_updates={"r0": {"settings": {"step": 1}, **fields}}))
    res = store.get_resolution("r0")
    assert (res.driver_epoch, res.labels_version, res.settings) == (epoch, 0, {})


def test_a_heartbeat_is_the_databases_time_and_never_goes_back(store) -> None:
    """A beat, and a new resolution's first one, is stamped with the database's clock, whatever time the writer sent
    (a resolving process whose clock is a day ahead, or behind); one recorded later than the database's time (by an
    older version that took the writer's clock, or before the database's clock was set back) stays: beats land in
    any order (a heartbeat thread's write crossing the loop's, a retried one's first attempt landing late)."""
    for sent in (NOW + dt.timedelta(days=1), NOW - dt.timedelta(days=1)):
        before = utcnow().replace(microsecond=0)  # SQLite's clock has milliseconds
        new_id = f"r{sent:%d}"
        store.write(Batch(resolution_updates={"r0": {"heartbeat_at": sent}},
                          new_resolutions=[{"id": new_id, "root_func_path": "m:p", "state": "running",
                                            "created_at": NOW, "heartbeat_at": sent}]))
        for res_id in ("r0", new_id):  # the database runs on this machine: its clock is this test's
            assert before <= store.get_resolution(res_id).heartbeat_at <= utcnow()
    ahead = NOW + dt.timedelta(days=1)
    with store.engine.begin() as conn:
        conn.execute(sa.update(store._res).where(store._res.c.id == "r0").values(heartbeat_at=ahead))
    store.write(Batch(resolution_updates={"r0": {"heartbeat_at": utcnow(), "settings": {"x": 1}}}))
    res = store.get_resolution("r0")
    assert (res.heartbeat_at, res.settings) == (ahead, {"x": 1})  # the other fields of the batch land


def test_a_failed_end_recorded_canceled_says_so_when_sent_again(store) -> None:
    """A driver's numbered write of a failed end lands on a resolution a cancel was accepted for: recorded canceled,
    ``canceled`` gets its id. Its retry (the same number: the first attempt's answer lost on the way) is applied
    already and changes nothing, and says the same: its writer learns what was recorded from either answer. Was:
    the retry said nothing (``replays`` only), so a resolver whose first answer was lost raised its failure as if
    nobody had asked (``tests/faults/test_cancel_at_the_end.py``)."""
    epoch = store.take_over("r0")
    assert store.request_cancel("r0") == "canceling"
    end = Batch(resolution_updates={"r0": {"state": "failed", "ended_at": NOW, "error": "f raised ValueError"}},
                run_updates={"a1": {"state": "failed"}}, fence={"r0": epoch}, sequence={"r0": 3})
    canceled: set[str] = set()
    store.write(end, canceled=canceled)
    assert canceled == {"r0"} and store.get_resolution("r0").error == "f raised ValueError; canceled as asked"
    replays: set[str] = set()
    again: set[str] = set()
    store.write(end, replays=replays, canceled=again)
    assert (replays, again, _seq(store)) == ({"r0"}, {"r0"}, 3)
    other: set[str] = set()  # a replayed write that holds no failed end: nothing said
    store.write(Batch(run_updates={"a2": {"state": "running"}}, fence={"r0": epoch}, sequence={"r0": 2}),
                canceled=other)
    assert other == set() and store.get_run("a2").state == "created"
