"""An ended resolution's record on the SQL store (SQLite and PostgreSQL): its end, once recorded, is not replaced;
the same end sent again (a retried write) is answered as written."""

from __future__ import annotations

import pytest

from sematic_k8s.errors import ResolutionEnded
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore

NOW = utcnow()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'db'}"
    s = SqlStore(url, stale_after=10 ** 6)  # NOW is when the module was collected: never stale here
    s.write(Batch(new_resolutions=[{"id": "r0", "root_func_path": "m:p", "state": "running", "created_at": NOW,
                                    "heartbeat_at": NOW}],
                  new_runs={"a1": {"id": "a1", "root_id": "r0", "parent_id": None, "func_path": "m:f",
                                   "func_name": "f", "state": "running", "created_at": NOW}}))
    yield s
    s.close()


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
