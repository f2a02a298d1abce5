"""A fan-out whose funcs are cached, and what a cache hit's Run record must hold (shared by the store tests:
SQLite and PostgreSQL, embedded and through the server)."""

from __future__ import annotations

import sematic_k8s as sk


@sk.func(cache=True)
def hit_inc(i: int) -> int:
    return i + 1


@sk.func(cache=True, retries=1)
def hit_total(xs: list[int]) -> int:
    return sum(xs)


@sk.func
def hit_fan(n: int) -> int:
    return hit_total([hit_inc(i) for i in range(n)])


def check_hit_records(store, first_id: str, second_id: str, n: int, *, source_changed: bool = False) -> None:
    """Every cached run of resolution ``second_id`` is a hit on its run in ``first_id``, recorded whole: its own
    func, source, settings, inputs and refs, the reused output, a pointer to the reused run (with the note saying
    whether its source differs), resolved at once, in its place in the new resolution."""
    old = {r.id: r for r in store.runs_of_root(first_id)}
    new = store.runs_of_root(second_id)
    hits = [r for r in new if r.cache_key is not None]
    assert len(new) == n + 2 and len(hits) == n + 1
    assert all(r.cached_from is None for r in new if r.cache_key is None)  # the fan itself executed
    for hit in hits:
        orig = old[hit.cached_from]
        assert orig.cached_from is None and orig.state == "resolved"
        assert (hit.state, hit.cache_key, hit.output_id, hit.inputs) == ("resolved", orig.cache_key, orig.output_id,
                                                                        orig.inputs)
        assert (hit.func_path, hit.func_name, hit.source_file, hit.source_text, hit.settings) == (
            orig.func_path, orig.func_name, orig.source_file, orig.source_text, orig.settings)
        func = hit_inc if hit.func_name == "hit_inc" else hit_total
        assert hit.source_hash == func.source_hash and (hit.source_hash != orig.source_hash) == source_changed
        assert hit.notes == {"cache": {"hit": orig.id, "source_changed": source_changed}}
        assert (hit.root_id, hit.parent_id) == (second_id, second_id)
        assert (hit.attempts, hit.error, hit.output_ref, hit.original_run_id) == (0, None, None, None)
        assert hit.created_at is not None and hit.started_at == hit.ended_at and hit.ended_at >= hit.created_at
        assert store.get_artifact(hit.output_id) is not None
        assert all(store.get_artifact(a) is not None for a in hit.inputs.values())
    incs = [h for h in hits if h.func_name == "hit_inc"]
    total = next(h for h in hits if h.func_name == "hit_total")
    assert all(h.input_refs == old[h.cached_from].input_refs == {"i": {"artifact": h.inputs["i"]}} for h in incs)
    reused = {h.id: h.cached_from for h in incs}  # the total's list: this resolution's incs, in their places
    assert [reused[ref["run"]] for ref in total.input_refs["xs"]["list"]] == [
        ref["run"] for ref in old[total.cached_from].input_refs["xs"]["list"]]
    assert total.settings["retries"] == 1
