"""An ended resolution's record on the SQL store (SQLite and PostgreSQL): its end, once recorded, is not replaced;
the same end sent again (a retried write) is answered as written."""

from __future__ import annotations

import pytest

from sematic_k8s.errors import ResolutionEnded
from sematic_k8s.store.records import Batch, utcnow


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
