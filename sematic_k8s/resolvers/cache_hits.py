"""A resolution's cache look-ups (DESIGN.md "Caching"). The cached runs of a planning wave (the runs that became
ready together) are looked up in one batched query, with the hits' output artifacts, and the hits are resolved
together, each recorded whole (:class:`~sematic_k8s.store.records.CachedRun`) in place of its record as planned.
A run of the wave that starts later takes the wave's answer, unless a run of this resolution with its key resolved
since: then its key is looked up again, as that run may be the most recent hit now.

The wave's loop over its hits (:meth:`CacheHits._resolve_wave`) is the hot path of an all-hit re-resolution of a
large fan-out (``bench/embedded.py``'s cache floor): it makes no per-hit call it can do without.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sematic_k8s import caching, serialization
from sematic_k8s.func import Func
from sematic_k8s.graph import CREATED, Graph, Node
from sematic_k8s.resolvers import collector
from sematic_k8s.resolvers.recorder import Recorder
from sematic_k8s.serialization import Value
from sematic_k8s.storage.base import artifact_key, location, unmatched
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import CachedRun, CacheHit, Formats, RunRecord, utcnow

log = logging.getLogger("sematic_k8s")

# the fields of a run as planned that a cache hit's record (CachedRun) carries over
_PLANNED = frozenset({"id", "root_id", "parent_id", "func_path", "func_name", "state", "source_file", "source_text",
                      "input_refs", "source_hash", "settings", "created_at", "original_run_id"})

Prepared = tuple[dict[str, Value], str]  # a run's inputs (materialized) and cache key
# the loop's state change for a run resolved by its hit (node, hit, its output id, the fields of its record's update)
ResolveHit = Callable[[Node, RunRecord, str, dict[str, Any]], None]


def source_changed(func: Func, hit: RunRecord | CacheHit) -> bool:
    """Whether a cache hit's run was made by other source than ``func``'s now (said in the log when so)."""
    changed = hit.source_hash != func.source_hash
    if changed:
        log.warning("%s: cache hit on run %s, whose func source differs from the current code", func.name, hit.id)
    return changed


class CacheHits:
    """What one resolution's cache look-ups found, kept for the runs that start later."""

    def __init__(self, store: Store, recorder: Recorder, graph: Graph) -> None:
        self.store, self.recorder, self.graph = store, recorder, graph
        self.namespace: str | None = None  # the resolution's, once it started (None: caching is off)
        self.forced: set[str] = set()  # runs that execute even when cached (a rerun's target)
        self.warned_no_namespace = False
        self.warned_skipped = False  # said that the server skipped another API key's run (once per resolution)
        # run id -> (inputs, cache key: None when not cacheable) of a run its wave's look-up left to start
        self.prepared: dict[str, tuple[dict[str, Value], str | None]] = {}
        self.looked_up: dict[str, RunRecord | None] = {}  # a wave's cache look-up: key -> hit (None: miss)
        self.run_keys: dict[str, str] = {}  # run id -> cache key, of cached runs executing
        self.artifacts: dict[str, Formats] = {}  # a wave's hits' outputs (formats)
        self.present: set[str] = set()  # hits' outputs found in storage as recorded (asked once per resolution)
        # cache key -> (hit, why) of a hit taken for a miss: its output gone, or its stored bytes not those recorded
        self.gone: dict[str, tuple[str, str]] = {}

    def look_up(self, nodes: list[Node], resolve_hit: ResolveHit) -> None:
        """One batched cache look-up for a planning wave: the keys of the cached funcs among ``nodes`` (their
        inputs materialized once), with the hits' output artifacts (those stored, not inline, asked of the storage:
        :meth:`_present`). The hits are resolved at once (:meth:`_resolve_wave`); the other runs keep their
        inputs and keys in :attr:`prepared` for their start (:meth:`find`). Not made once the resolution failed
        (the loop's): no run starts then, so no answer of it (nor of the storage) would be used."""
        if self.namespace is None:
            return
        materialize = self.recorder.materialize
        keys: dict[str, Prepared] = {}
        for node in nodes:
            if node.func is None or not node.func.cache or node.run_id in self.forced or node.state != CREATED:
                continue
            try:
                inputs = {k: materialize(s) for k, s in self.graph.inputs(node).items()}
            except Exception:
                continue  # its start tries again, and fails the run (or the resolution) as it should
            if caching.uncacheable_reason([(k, v.type_name) for k, v in inputs.items()
                                           if v.format != serialization.JSON]):
                self.prepared[node.run_id] = (inputs, None)
                continue
            key = caching.cache_key(self.namespace, node.func.path, {k: v.id for k, v in inputs.items()})
            keys[node.run_id] = (inputs, key)
        if not keys:
            return
        nodes_by_id = self.graph.nodes
        find_hits = getattr(self.store, "find_hits", None)  # with the hits' outputs, in one query
        if find_hits is not None:
            found = find_hits(key for _, key in keys.values())
            hits: dict[str, Any] = {k: run for k, (run, _) in found.items()}
            self.artifacts = {run.output_id: art for run, art in found.values() if art and run.output_id}
        else:
            hits = self._find({key: nodes_by_id[run_id].func.name for run_id, (_, key) in keys.items()})
            self.artifacts = self.recorder.formats({h.output_id for h in hits.values() if h.output_id})
        hits = self._present(hits, lambda: {key: nodes_by_id[run_id].func.name for run_id, (_, key) in keys.items()})
        keys = self._resolve_wave(keys, hits, resolve_hit)
        self.prepared.update(keys)
        self.looked_up.update((key, hits.get(key)) for _, key in keys.values())

    @collector.paused()
    def _resolve_wave(self, keys: dict[str, Prepared], hits: dict[str, Any],
                      resolve_hit: ResolveHit) -> dict[str, Prepared]:
        """Resolve the runs of a wave that hit the cache, together, as their look-up answered (the rest of ``keys``
        is returned). Each hit is recorded whole (:class:`CachedRun`) in place of its record as planned; their
        inputs' artifacts are not recorded again (the runs they reuse were recorded with them). A hit whose planned
        record was written already, or holds more, or whose run has notes, is resolved by ``resolve_hit`` instead
        (the loop's state change, which updates its record)."""
        batch, nodes, notes = self.recorder.batch, self.graph.nodes, self.recorder.notes
        planned, artifacts = batch.new_runs, batch.artifacts
        rest: dict[str, Prepared] = {}
        now = utcnow()
        outputs = self.recorder.stored_values({  # the small ones decoded together, now
            hit.output_id: art for _, key in keys.values() if (hit := hits.get(key)) is not None
            and (art := self.artifacts.get(hit.output_id)) is not None})
        for run_id, (inputs, key) in keys.items():
            hit = hits.get(key)
            if hit is None or hit.output_id is None:
                rest[run_id] = (inputs, key)
                continue
            node = nodes[run_id]
            func: Func = node.func
            input_ids = {k: v.id for k, v in inputs.items()}
            record = planned.get(run_id)
            if record is None or not record.keys() <= _PLANNED or run_id in notes:
                resolve_hit(node, hit, hit.output_id, {"inputs": input_ids, "cache_key": key})
                continue
            changed = source_changed(func, hit)
            output = outputs.get(hit.output_id)
            output = self.output(hit.output_id) if output is None else output
            output.origin = output.origin or hit.id  # named if it does not load
            self.graph.resolve(run_id, output)
            batch.add_hit(CachedRun(
                run_id, record["root_id"], record.get("parent_id"), record["func_path"], record["func_name"],
                record.get("source_file"), record.get("source_text"), record.get("source_hash"),
                record.get("settings", {}), record.get("input_refs", {}), input_ids, hit.output_id, key, hit.id,
                changed, record.get("original_run_id"),
                record.get("created_at"), now))
            for artifact_id in input_ids.values():
                artifacts.pop(artifact_id, None)
        return rest

    def output(self, output_id: str) -> Value:
        """The Value of a hit's output (its format as the wave's look-up gave it, if it did)."""
        art = self.artifacts.get(output_id)
        return self.recorder.stored_value(output_id, *art[:3]) if art else self.recorder.stored_value(output_id)

    def find(self, node: Node, inputs: dict[str, Value], key: str | None,
             fields: dict[str, Any]) -> tuple[RunRecord, str] | None:
        """The hit (with its output id) of a cached func's run about to start, or None: the run executes. The
        update of its record (``fields``) gets its cache key, or the note saying why it has none. ``key``: the
        run's from its wave's look-up, if any. The hit is the wave's unless a run of this resolution with that key
        resolved since (then the key is looked up alone, as that run may be the most recent hit now)."""
        func: Func = node.func
        if self.namespace is None:
            if not self.warned_no_namespace:
                log.warning("%s has cache=True but the resolver has no cache_namespace: caching is off "
                            "for this resolution; give the resolver one (e.g. cache_namespace=\"dev\") to reuse "
                            "cached outputs", func.name)
                self.warned_no_namespace = True
            return None
        if reason := caching.uncacheable_reason([(k, v.type_name) for k, v in inputs.items()
                                                 if v.format != serialization.JSON]):
            log.warning("%s (run %s): %s", func.name, node.run_id, reason)
            fields["notes"] = self.recorder.note(node.run_id, cache={"skipped": reason})
            return None
        key = key or caching.cache_key(self.namespace, func.path, fields["inputs"])
        fields["cache_key"] = key
        hit: RunRecord | None
        if node.run_id in self.forced:
            hit = None
        elif key in self.looked_up:
            hit = self.looked_up.pop(key)
        else:
            found = self._find({key: func.name})
            if (solo := found.get(key)) is not None and solo.output_id:
                self.artifacts.update(self.recorder.formats({solo.output_id}))
            hit = self._present(found, lambda: {key: func.name}).get(key)
        if hit is not None and hit.output_id is not None:
            return hit, hit.output_id
        if (gone := self.gone.get(key)) is not None:
            fields["notes"] = self.recorder.note(node.run_id, cache={"skipped": gone[1]})
        self.run_keys[node.run_id] = key
        return None

    def _present(self, hits: dict[str, Any], names: Callable[[], dict[str, str]]) -> dict[str, Any]:
        """``hits`` (cache key -> run; ``names()``: cache key -> its func's name, made only to say a miss) less those
        whose output's bytes are gone from storage (deleted by hand or by a lifecycle rule) or are not those recorded
        (replaced: another number of bytes than its record's size): each is a miss, its run executes and its output is
        stored (a new artifact, or the recorded one's bytes rewritten; nothing recorded is changed), said once per hit
        and noted on the run. An output whose record holds its bytes (inline) is there; the others are asked of the
        storage together (S3: a HEAD each, a local file a stat: the size is in that answer), once per resolution. Bytes
        of another size that hash to the output's id are its bytes, its record's size wrong (a client's, written ahead
        by another key): a hit (:func:`~sematic_k8s.storage.base.unmatched` reads them once, only then)."""
        asked = {artifact_key(out): (key, art[3]) for key, hit in hits.items() if (out := hit.output_id) is not None
                 and out not in self.present and (art := self.artifacts.get(out)) is not None and art[2] is None}
        storage = self.recorder.storage
        bad = unmatched(storage, {storage_key: size for storage_key, (_, size) in asked.items()},
                        {k: self.artifacts[k.rsplit("/", 1)[1]][0] for k in asked})
        self.present.update(key.rsplit("/", 1)[1] for key in asked.keys() - bad.keys())
        said = names() if bad else {}
        for storage_key, size in bad.items():
            key, recorded = asked[storage_key]
            where = location(storage, storage_key)
            why = (f"cached output of run {hits[key].id} is gone from storage ({where}): running it again"
                   if size is None else
                   f"cached output of run {hits[key].id} no longer matches its record: its stored bytes ({where}) are "
                   f"{size} bytes, recorded as {recorded}: running it again")
            if self.gone.get(key, ("", ""))[0] != hits[key].id:
                log.warning("%s: %s", said.get(key, "cached func"), why)
            self.gone[key] = (hits[key].id, why)
        return {key: hit for key, hit in hits.items() if self.gone.get(key, ("", ""))[0] != hit.id}

    def _find(self, asked: dict[str, str]) -> dict[str, RunRecord]:
        """The store's hits of ``asked`` (cache key -> its func's name). A store that tells which runs the server
        skipped as another API key's (``HttpStore.find_reusable``: their keys, never the runs) gets the first such
        miss said, once."""
        find_reusable = getattr(self.store, "find_reusable", None)
        if find_reusable is None:
            return self.store.find_cached_many(asked)
        hits, skipped = find_reusable(asked)
        said = next((asked[key] for key in asked if key in skipped), None)
        if said is not None and not self.warned_skipped:
            log.warning("%s: not reusing a cached run with the same cache key: another API key recorded it (or it was "
                        "recorded before the server recorded owners), and the server reuses only your key's outputs "
                        "and those of the keys it trusts (--cache-trusted-key); running it (said once per resolution)",
                        said)
            self.warned_skipped = True
        return hits

    def resolved(self, run_id: str) -> None:
        """A run resolved: if it executed with a cache key, a later run with that key looks the key up again."""
        if (key := self.run_keys.pop(run_id, None)) is not None:
            self.looked_up.pop(key, None)
