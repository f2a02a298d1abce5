"""Reruns clone their reused runs in bulk inside the SQL store (INSERT ... SELECT), on SQLite and PostgreSQL:
the records are the ones replaying each run gave, field by field."""

from __future__ import annotations

from typing import Any

import sematic_k8s as sk
from sematic_k8s import graph
from sematic_k8s.store.records import Batch, utcnow
from sematic_k8s.store.sql import SqlStore

CALLS: list[int] = []


@sk.func
def leaf(i: int) -> int:
    CALLS.append(i)
    return i * 2


@sk.func
def group(k: int) -> list[int]:
    return [leaf(k * 10 + j) for j in range(3)]


@sk.func
def summed(xs: list[list[int]]) -> int:
    return sum(sum(x) for x in xs)


@sk.func
def top(n: int) -> int:
    return summed([group(k) for k in range(n)])


EXPECTED = sum(2 * (k * 10 + j) for k in range(4) for j in range(3))
SAME = ["func_path", "func_name", "state", "inputs", "output_id", "cached_from", "cache_key", "source_hash",
        "source_file", "source_text", "settings", "error", "attempts", "notes", "started_at", "ended_at"]


def _as_originals(store: SqlStore, root_id: str) -> dict[str, dict[str, Any]]:
    """A rerun's runs by the run each was cloned from, their refs and parent in those terms too."""
    runs = store.runs_of_root(root_id)
    orig = {r.id: r.original_run_id for r in runs}
    out = {}
    for r in runs:
        doc = {f: getattr(r, f) for f in SAME}
        doc["parent"] = orig.get(r.parent_id) if r.parent_id else None
        doc["input_refs"] = {k: graph.remap_json(t, orig) for k, t in r.input_refs.items()}
        doc["output_ref"] = graph.remap_json(r.output_ref, orig) if r.output_ref is not None else None
        key = r.original_run_id or f"new {r.func_name} {sorted(r.inputs.items())}"  # made by a run executed again
        out[key] = {k: v for k, v in doc.items() if not (key.startswith("new") and k in ("started_at", "ended_at"))}
    return out


def test_a_bulk_rerun_records_what_a_replayed_one_does(home, monkeypatch):
    first = top(4)
    assert first.resolve(sk.LocalResolver(home=home)) == EXPECTED
    store = sk.LocalResolver(home=home).store
    assert isinstance(store, SqlStore) and store.bulk_clones
    target = next(r for r in store.runs_of_root(first.id) if r.func_name == "leaf")

    CALLS.clear()
    bulk = top(4)
    assert bulk.resolve(sk.LocalResolver(home=home, rerun_from=target.id)) == EXPECTED
    assert CALLS == [int(store.get_artifact(target.inputs["i"]).summary)]  # only the target ran again
    monkeypatch.setattr(SqlStore, "bulk_clones", False)
    replayed = top(4)
    assert replayed.resolve(sk.LocalResolver(home=home, rerun_from=target.id)) == EXPECTED

    got, want = _as_originals(store, bulk.id), _as_originals(store, replayed.id)
    assert got.keys() == want.keys() and len(got) == 1 + 1 + 4 + 12  # top, summed, groups, leaves
    reused = [r for r in store.runs_of_root(bulk.id) if r.notes.get("reused_from")]
    assert len(reused) == 3 * 4 + 2  # the other groups with their leaves, and the target's two siblings
    for orig_id, doc in got.items():
        if doc["state"] == "resolved" and orig_id not in {r.original_run_id for r in reused}:
            doc, want[orig_id] = ({k: v for k, v in d.items() if k not in ("started_at", "ended_at", "attempts")}
                                  for d in (doc, want[orig_id]))  # executed again: its own times
        assert doc == want[orig_id], orig_id

    # a batch sent again (a write retried after an outage) adds nothing, changes nothing
    again = Batch()
    again.clone_run("f" * 32, reused[0].original_run_id, root_id=bulk.id, parent_id=reused[0].parent_id,
                    input_refs=reused[0].input_refs, output_ref=reused[0].output_ref, created_at=utcnow())
    store.write(again)
    store.write(again)
    assert len(store.runs_of_root(bulk.id)) == len(got) + 1
    assert store.get_run("f" * 32).notes == reused[0].notes
