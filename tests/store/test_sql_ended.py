"""An ended resolution's record on the SQL store (SQLite and PostgreSQL): its end, once recorded, is not replaced;
the same end sent again (a retried write) is answered as written; a batch fenced with it, refused whole."""

from __future__ import annotations

import pytest

from sematic_k8s.errors import ResolutionEnded
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore
from waiting import wait_for


@pytest.fixture
def store(running_store):
    return running_store({"a1": "running"})


def test_an_end_in_other_words_does_not_replace_the_recorded_one(store) -> None:
    """The CloudResolver records the resolution failed (its driver's Job deleted); the driver's loop, its worker
    stopped meanwhile, then records it failed in its own words: refused with its whole batch, the follower's words
    stay. Was: the same state passed as "the same write sent again", and the loop's error replaced them."""
    first = {"state": "failed", "ended_at": utcnow(), "error": "the driver Job was deleted"}
    store.write(Batch(resolution_updates={"r0": first}, run_updates={"a1": {"state": "canceled"}}, in_order=False))
    store.write(Batch(resolution_updates={"r0": dict(first)}, in_order=False))  # sent again: answered as written
    late = Batch(resolution_updates={"r0": {"state": "failed", "ended_at": utcnow(), "error": "a1 raised PodDeleted"}},
                 run_updates={"a1": {"state": "failed"}})
    with pytest.raises(ResolutionEnded):
        store.write(late)
    res, run = store.get_resolution("r0"), store.get_run("a1")
    assert (res.state, res.error, run.state) == ("failed", "the driver Job was deleted", "canceled")


def test_a_batch_fenced_with_a_resolution_marked_dead_is_refused_whole_without_a_beat(store) -> None:
    """The reaper (here a reader's ``expire_silent``) takes a silent resolution over without a new driver epoch: it
    records it failed and its unfinished runs canceled. A batch its resolver made before it froze, fenced with its
    epoch but carrying no beat nor change of state (made in the half interval after a beat), and written once it
    resumed, is refused whole, saying when the resolution was ended: the marks stay, nothing of it is inserted. Was:
    only a beat or a change of state was checked, and the run went from canceled to resolved
    (``tests/faults/test_driver_fence.py`` causes it with a real driver, SIGSTOP and SIGCONT)."""
    epoch = store.take_over("r0")
    reaper = SqlStore(store.engine.url.render_as_string(hide_password=False), stale_after=0.05)
    try:
        wait_for(lambda: reaper.expire_silent(["r0"]), 30, what="r0 to be marked dead")
    finally:
        reaper.close()
    marked = store.get_resolution("r0")
    late = Batch(run_updates={"a1": {"state": "resolved", "ended_at": utcnow()}}, fence={"r0": epoch},
                 new_runs={"a2": {"id": "a2", "root_id": "r0", "parent_id": None, "func_path": "m:f", "func_name": "f",
                                  "state": "running", "created_at": utcnow()}})
    with pytest.raises(ResolutionEnded, match=rf"resolution r0 has already ended as failed at "
                                              rf"{marked.ended_at:%Y-%m-%d %H:%M:%S} UTC \(the resolver stopped "
                                              rf"responding at .*\): this process stops"):
        store.write(late)
    assert (store.get_run("a1").state, store.get_run("a2")) == ("canceled", None)
    assert store.get_resolution("r0") == marked


def test_a_failed_end_of_a_canceling_resolution_is_recorded_canceled_its_words_kept(store) -> None:
    """A cancel was accepted (``request_cancel``: canceling, its caller told so) before a write recording the
    resolution failed: the write lands, recording it canceled in the failure's words and the cancel's
    (``canceled`` gets its id); the same write sent again (a retry of an unnumbered write, as the CloudResolver's)
    is answered as written and changes nothing; an end in other words is refused. Was: recorded failed, the accepted
    cancel nowhere in the record (``tests/faults/test_cancel_at_the_end.py`` causes it with real processes)."""
    assert store.request_cancel("r0") == "canceling"
    end = {"state": "failed", "ended_at": utcnow(), "error": "resolution r0 failed: f raised ValueError: no"}
    canceled: set[str] = set()
    store.write(Batch(resolution_updates={"r0": end}, run_updates={"a1": {"state": "canceled"}}, in_order=False),
                canceled=canceled)
    res = store.get_resolution("r0")
    assert (res.state, res.error, canceled) == ("canceled", end["error"] + "; canceled as asked", {"r0"})
    again: set[str] = set()
    store.write(Batch(resolution_updates={"r0": dict(end)}, in_order=False), canceled=again)
    assert store.get_resolution("r0") == res and again == {"r0"}
    with pytest.raises(ResolutionEnded):
        store.write(Batch(resolution_updates={"r0": {**end, "error": "other words"}}, in_order=False))
    assert store.get_resolution("r0") == res and store.get_run("a1").state == "canceled"
