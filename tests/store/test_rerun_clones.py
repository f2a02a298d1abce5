"""What a rerun keeps of each reused run, checked against the recorded original (not against another way of
rerunning), on SQLite and PostgreSQL: a fan-in of reused outputs, a nested composition reused whole, the target
and its ancestors reset, and a reused output whose bytes are corrupt."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import sematic_k8s as sk
from sematic_k8s import graph
from sematic_k8s.store.sql import RunRow, SqlStore

CALLS: list[str] = []


@sk.func
def inc(i: int) -> int:
    CALLS.append(f"inc {i}")
    return i + 1


@sk.func
def pair(k: int) -> list[int]:
    return [inc(100 + k), inc(200 + k)]


@sk.func
def total(xs: list[int], pairs: list[list[int]]) -> int:
    CALLS.append("total")
    return sum(xs) + sum(sum(p) for p in pairs)


@sk.func
def fan(n: int) -> int:
    return total([inc(i) for i in range(n)], [pair(k) for k in range(2)])


N = 30
EXPECTED = sum(i + 1 for i in range(N)) + sum(101 + k + 201 + k for k in range(2))
KEPT = ["func_path", "func_name", "inputs", "output_id", "cached_from", "source_hash", "source_file", "source_text",
        "settings", "attempts", "started_at", "ended_at"]


def _rerun(home, root_id: str, pick) -> tuple[SqlStore, str, str]:
    """Rerun the resolution ``root_id`` from its first run that ``pick`` picks; the store, that run, the rerun."""
    store = sk.LocalResolver(home=home).store
    assert isinstance(store, SqlStore)
    target = next(r for r in store.runs_of_root(root_id) if pick(r))
    again = fan(N)
    CALLS.clear()
    assert again.resolve(sk.LocalResolver(home=home, rerun_from=target.id)) == EXPECTED
    return store, target.id, again.id


def test_every_reused_run_keeps_its_record_artifacts_parent_and_refs(home):
    first = fan(N)
    assert first.resolve(sk.LocalResolver(home=home)) == EXPECTED
    store, target_id, rerun_id = _rerun(home, first.id, lambda r: r.func_name == "inc" and "201" in str(
        sk.LocalResolver(home=home).store.get_artifact(r.inputs["i"]).summary))
    assert CALLS == ["inc 201", "total"]  # the target and what takes its output, nothing else

    originals = {r.id: r for r in store.runs_of_root(first.id)}
    runs = store.runs_of_root(rerun_id)
    assert len(runs) == len(originals) and all(r.root_id == rerun_id for r in runs)
    by_id = {r.id: r for r in runs}
    orig_of = {r.id: r.original_run_id for r in runs}
    assert set(orig_of.values()) == set(originals)  # each original cloned exactly once
    target = originals[target_id]
    reset = {target_id, target.parent_id, first.id}  # the target and its ancestors: pair(1) and the root
    reset |= {r.id for r in originals.values() if r.func_name == "total"}  # downstream of them
    for run in runs:
        old = originals[run.original_run_id]
        assert run.state == "resolved", run.func_name
        assert (orig_of[run.parent_id] if run.parent_id else None) == old.parent_id  # the clone of its parent
        assert {k: graph.remap_json(t, orig_of) for k, t in run.input_refs.items()} == old.input_refs
        if run.output_ref is not None or old.output_ref is not None:
            assert graph.remap_json(run.output_ref, orig_of) == old.output_ref
        assert all(ref in by_id for t in run.input_refs.values() for ref in graph.json_refs(t))
        if old.id in reset:
            assert "reused_from" not in run.notes, run.func_name
            assert run.output_id == old.output_id  # computed again, the same value
            continue
        assert run.notes == {**old.notes, "reused_from": old.id}
        assert {f: getattr(run, f) for f in KEPT} == {f: getattr(old, f) for f in KEPT}
        art = store.get_artifact(run.output_id)
        assert art is not None and (art.inline is not None or art.size > 0)
    reused = [r for r in runs if r.notes.get("reused_from")]
    assert len(reused) == len(originals) - len(reset)
    new_total = next(r for r in runs if r.func_name == "total")
    old_total = originals[new_total.original_run_id]
    assert new_total.inputs == old_total.inputs  # the fan-in of reused outputs: the same list, the same artifact
    assert len(list(graph.json_refs(new_total.input_refs["xs"]))) == N
    resolution = store.get_resolution(rerun_id)
    assert resolution.state == "resolved" and resolution.rerun_of == first.id


def test_a_rerun_of_a_rerun_reuses_the_clones(home):
    first = fan(N)
    assert first.resolve(sk.LocalResolver(home=home)) == EXPECTED
    store, _, rerun_id = _rerun(home, first.id, lambda r: r.func_name == "inc" and r.parent_id == first.id)
    store, _, again_id = _rerun(home, rerun_id, lambda r: r.func_name == "total")
    assert CALLS == ["total"]
    runs = store.runs_of_root(again_id)
    assert sum(1 for r in runs if r.notes.get("reused_from")) == len(runs) - 2  # all but total and the root
    for run in runs:
        if run.notes.get("reused_from"):
            assert store.get_run(run.original_run_id).root_id == rerun_id


def test_a_corrupt_reused_output_fails_the_run_that_takes_it_naming_it(home):
    first = fan(N)
    assert first.resolve(sk.LocalResolver(home=home)) == EXPECTED
    store = sk.LocalResolver(home=home).store
    assert isinstance(store, SqlStore)
    leaves = [r for r in store.runs_of_root(first.id) if r.func_name == "inc" and r.parent_id == first.id]
    victim = leaves[-1]
    assert store.get_artifact(victim.output_id).inline is not None
    arts = store._arts
    with store.engine.begin() as conn:
        conn.execute(sa.update(arts).where(arts.c.id == victim.output_id).values(inline=b"12345"))
    with pytest.raises(sk.ResolutionFailed, match=f"{victim.output_id} is corrupt"):
        fan(N).resolve(sk.LocalResolver(home=home, rerun_from=leaves[0].id))


def test_continue_after_a_success_reuses_every_run_and_runs_nothing(home):
    first = fan(N)
    assert first.resolve(sk.LocalResolver(home=home)) == EXPECTED
    store = sk.LocalResolver(home=home).store
    again = fan(N)
    CALLS.clear()
    assert again.resolve(sk.LocalResolver(home=home, rerun_from=first.id, rerun_mode="continue")) == EXPECTED
    assert CALLS == []
    runs = store.runs_of_root(again.id)
    assert len(runs) == len(store.runs_of_root(first.id))
    assert all(r.state == "resolved" and r.notes.get("reused_from") == r.original_run_id for r in runs)
    root = next(r for r in runs if r.parent_id is None)
    assert root.id == again.id and root.original_run_id == first.id
    assert store.get_resolution(again.id).state == "resolved"


@sk.func
def one(i: int) -> int:
    return i


def test_running_runs_that_wait_are_found_by_their_note(home) -> None:
    """What a following CloudResolver shows of runs not started (``SqlStore.waiting_runs``), on both databases."""
    from sematic_k8s.store import open_store
    from sematic_k8s.store.records import Batch

    f = fan(2)
    f.resolve(sk.LocalResolver(home=home))
    store = open_store(home)
    runs = [r for r in store.runs_of_root(f.id) if r.func_name == "inc"]
    t = RunRow.__table__
    with store.engine.begin() as conn:  # two of them set back to running by hand: no write un-resolves a run
        conn.execute(sa.update(t).where(t.c.id.in_([runs[0].id, runs[1].id])).values(state="running"))
    batch = Batch()
    batch.update_run(runs[0].id, notes={"waiting": "waiting for quota: exceeded quota: pods"})
    batch.update_run(runs[1].id, notes={"executor": {"job": "sk-x"}})
    batch.update_run(runs[2].id, notes={"waiting": "waiting for capacity: 0/1 nodes"})  # resolved: not waiting
    store.write(batch)
    assert store.waiting_runs(f.id) == {runs[0].id: "waiting for quota: exceeded quota: pods"}
    assert store.waiting_runs(runs[1].id) == {}
