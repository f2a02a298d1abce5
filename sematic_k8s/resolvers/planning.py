"""Planning a resolution: the graph's starting nodes and their Run records, for a new root, a rerun of a
recorded Resolution, or the resume of one whose driver restarted; and the nodes of the Futures a
composition returns. :class:`~sematic_k8s.resolvers.loop.ResolutionLoop` then drives them.

The rerun planner itself (which runs are reused, awaited or executed again) is pure and lives in
:func:`sematic_k8s.graph.plan_rerun`; this module turns its plan into nodes and records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sematic_k8s import graph, limits
from sematic_k8s.errors import FuncError, RerunUnplanned, ReusedOutputGone, StorageError
from sematic_k8s.func import Func, load_func
from sematic_k8s.future import Future, new_id, new_ids
from sematic_k8s.graph import AWAIT, CANCELED, CREATED, EXECUTE, RESOLVED, REUSE, RUNNING, Graph, Node, PlannedRun
from sematic_k8s.resolvers import collector
from sematic_k8s.resolvers.recorder import Recorder
from sematic_k8s.serialization import Value
from sematic_k8s.specs import ResolutionSettings
from sematic_k8s.storage.base import Storage, artifact_key, location, unmatched
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import Formats, ResolutionRecord, RunRecord, RunShape, utcnow

log = logging.getLogger("sematic_k8s")
# planned Run records held at once: a fan-out of more is written as it is planned, this many at a time, so its
# records (about 1.7 KB each in memory until written) do not all wait for the end of its planning
PLANNED_RUNS_PER_WRITE = 20_000


@dataclass
class Plan:
    """Where a resolution starts."""

    root_id: str
    nodes: list[Node]
    recorded: dict[str, Any] = field(default_factory=dict)  # how it started (rerun_of, ...), for its record
    forced: set[str] = field(default_factory=set)  # runs that execute even when cached (a rerun's target)
    attempts: dict[str, int] = field(default_factory=dict)  # attempts already made (a resume)
    resumed: set[str] = field(default_factory=set)  # runs a restarted driver found running
    recorded_root: Callable[[], Future] | None = None  # a rerun: the root as recorded, for a callable namespace


class Planner:
    """Builds nodes and their Run records (into the recorder's batch) for the ``graph`` being resolved."""

    def __init__(self, store: Store, recorder: Recorder, graph: Graph, settings: ResolutionSettings) -> None:
        self.store, self.recorder, self.graph, self.settings = store, recorder, graph, settings
        self.root_id = ""
        self.settings_by_func: dict[Func, dict[str, Any]] = {}

    def plan(self, root: Future, resume: ResolutionRecord | None = None) -> Plan:
        """The starting nodes: those of ``resume`` (a restarted driver's unfinished Resolution), of a rerun
        (``settings.rerun_from``), or of a new root. Sets ``root.id`` to the Resolution's id."""
        if resume is not None:
            self.root_id = root.id = resume.id
            return self._resume()
        if self.settings.rerun_from is not None:
            return self._rerun(root)
        return self._new_root(root)

    def _normalize(self, template: Any, has_refs: bool) -> Any:
        """Turn every literal leaf of a template into a Value (serialized once)."""
        if not has_refs:
            return self.recorder.value(template)
        return graph.map_leaves(template, self.recorder.value)

    def nodes_for(self, futures: list[Future], parent_id: str | None) -> list[Node]:
        """Nodes and Run records for Futures and every Future nested in their arguments,
        dependencies first (so creation order is a topological order). The records go into the recorder's
        batch, written every :data:`PLANNED_RUNS_PER_WRITE` of them (a cache hit among the runs written so
        is recorded as an update of its planned record)."""
        nodes: list[Node] = []
        seen: set[str] = set()
        stack: list[tuple[Future, dict[str, Any] | None]] = [(f, None) for f in reversed(futures)]
        while stack:
            f, inputs = stack.pop()
            if inputs is not None:  # its dependencies are done: emit it
                nodes.append(self._node(f, inputs, parent_id))
                if len(self.recorder.batch.new_runs) >= PLANNED_RUNS_PER_WRITE:
                    self.recorder.write()  # dependencies first: what is written never references what is not
                continue
            if f.id in seen or f.id in self.graph.nodes:
                continue
            seen.add(f.id)
            deps: list[Future] = []
            inputs = {}
            for name, arg in f.kwargs.items():
                tmpl, has_refs = graph.template_of(arg, deps.append)
                try:
                    inputs[name] = self._normalize(tmpl, has_refs)
                except (TypeError, ValueError) as e:
                    raise FuncError(f"{f.func.name}(): argument '{name}': {e}") from e
            stack.append((f, inputs))
            stack.extend((d, None) for d in reversed(deps))
        return nodes

    def _node(self, f: Future, inputs: dict[str, Any], parent_id: str | None) -> Node:
        func = f.func
        # the record as Batch.add_run gives it (fields at their defaults left out), built directly: planning a
        # fan-out's runs is much of the time of resolving it again from the cache
        fields = {"id": f.id, "root_id": self.root_id, "func_path": func.path, "func_name": func.name,
                  "state": CREATED, "created_at": utcnow()}
        for name, value in (("parent_id", parent_id), ("source_file", func.source_file),
                            ("source_text", func.source_text), ("source_hash", func.source_hash)):
            if value is not None:
                fields[name] = value
        if inputs:
            fields["input_refs"] = {k: graph.to_json(t, value_id) for k, t in inputs.items()}
        if settings := self._settings_of(func):
            fields["settings"] = settings
        self.recorder.batch.new_runs[f.id] = fields
        return Node(run_id=f.id, parent_id=parent_id, func=func, inputs=inputs)

    def _settings_of(self, func: Func) -> dict[str, Any]:
        """``func.settings()``, once per func per resolution (its runs' records share the dict)."""
        found = self.settings_by_func.get(func)
        if found is None:
            found = self.settings_by_func[func] = func.settings()
        return found

    def _new_root(self, root: Future) -> Plan:
        for name, arg in root.kwargs.items():
            if graph.template_of(arg, lambda _: None)[1]:
                raise FuncError(f"{root.func.name}(): argument '{name}' is a Future; the pipeline's root "
                                "takes concrete values (call both funcs inside another func instead)")
        if self.settings.root_id:
            root.id = self.settings.root_id
        elif self.store.get_run(root.id) is not None:
            root.id = new_id()  # the same root Future resolved again: a new Resolution
        self.root_id = root.id
        return Plan(root.id, self.nodes_for([root], None))

    def _rerun(self, root: Future) -> Plan:
        with collector.paused(), self._storage_said():  # collector: tens of thousands of objects made, no cycle
            return self._plan_rerun(root)

    def _storage_said(self) -> AbstractContextManager[None]:
        return rerun_storage(self.settings.rerun_from or self.root_id, self.recorder.storage)

    def _plan_rerun(self, root: Future) -> Plan:
        rerun_from, mode = self.settings.rerun_from, self.settings.rerun_mode
        target = self.store.get_run(rerun_from) if rerun_from else None
        if target is None:
            raise LookupError(f"rerun_from: no run with id {rerun_from!r}")
        old_root = target if target.parent_id is None else self.store.get_run(target.root_id)
        if old_root is None:
            raise LookupError(f"rerun_from {rerun_from}: its resolution's root run {target.root_id} is not recorded")
        if root.func.path != old_root.func_path:
            raise ValueError(f"rerun_from {rerun_from} belongs to a {old_root.func_path} pipeline, not "
                             f"{root.func.path}: resolve a {old_root.func_name}(...) future with it, or give a run of "
                             f"a {root.func.path} resolution (`sematic-k8s resolutions list`)")
        bulk = getattr(self.store, "bulk_clones", False)  # reused runs copied in the database, not replayed
        old_runs: list[Any] = (self.store.run_shapes(target.root_id) if bulk  # type: ignore[attr-defined]
                               else self.store.runs_of_root(target.root_id))
        preset = iter([self.settings.root_id] if self.settings.root_id else [])
        fresh = iter(sorted(new_ids(len(old_runs))))  # in order: the copies go into the id index one after another
        plan = graph.plan_rerun(old_runs, target.id, mode, lambda: next(preset, None) or next(fresh))
        self.root_id = root.id = plan[0].new_id  # parents first: the root's id is the first one drawn
        if bulk:  # the runs that are not reused, whole (their refs that reference no run, left out of the shapes)
            again = {p.old_id for p in plan if p.action != REUSE}
            shapes = {r.id: r for r in old_runs if r.id in again}
            known = {i for i, r in shapes.items() if any(_refs_runs(t) for t in r.input_refs.values())}
            whole = {r.id: r for r in self.store.runs_by_id(again, refs_known=known)}  # type: ignore[attr-defined]
            plan = [p if p.action == REUSE else p._replace(
                input_refs=p.input_refs if p.old_id in known else whole[p.old_id].input_refs,  # nothing to remap
                output_ref=None if p.action == EXECUTE else p.output_ref if _refs_runs(shapes[p.old_id].output_ref)
                else whole[p.old_id].output_ref)
                for p in plan]
            old_runs = [whole.get(r.id, r) for r in old_runs]
        nodes = self._nodes_from_plan(plan, old_runs, record=True, clone=bulk)

        def root_as_recorded() -> Future:  # read by the loop before it records the rerun: part of its planning
            with self._storage_said():
                return recorded_root(root.func, old_root, self.recorder.stored_value, self.root_id)

        return Plan(self.root_id, nodes, recorded={"rerun_of": target.root_id, "rerun_from": target.id,
                                                   "rerun_mode": mode},
                    forced={p.new_id for p in plan if p.old_id == target.id and p.action == EXECUTE},
                    recorded_root=root_as_recorded)

    def _resume(self) -> Plan:
        """A restarted driver: continue its recorded, unfinished Resolution with the same run ids, so
        what resolved is kept and executors re-attach to the workers still running (and stop them, when someone
        asked to cancel it)."""
        runs = self.store.runs_of_root(self.root_id)
        plan = graph.plan_rerun(runs, self.root_id, "continue", new_id, keep_ids=True)
        kept = {p.old_id for p in plan}
        now = utcnow()
        for r in runs:
            if r.id not in kept and r.state not in graph.TERMINAL:
                self.recorder.batch.update_run(r.id, state=CANCELED, ended_at=now)
        by_id = {r.id: r for r in runs}
        attempts: dict[str, int] = {}
        resumed: set[str] = set()
        for p in plan:
            old = by_id[p.old_id]
            if p.action == EXECUTE:  # same attempt if it was running: a worker of it may still be there
                attempts[p.old_id] = max(0, old.attempts - (old.state == RUNNING))
                if old.state == RUNNING:
                    resumed.add(p.old_id)
                self.recorder.batch.update_run(p.old_id, state=CREATED, ended_at=None)
        # its state is left as it is: running, or canceling (asked while no driver ran, or since: not undone)
        log.warning("resolution %s: resuming after a restart (%d runs kept, %d to run)", self.root_id,
                    sum(p.action != EXECUTE for p in plan), sum(p.action == EXECUTE for p in plan))
        nodes = self._nodes_from_plan(plan, runs, record=False)
        return Plan(self.root_id, nodes, attempts=attempts, resumed=resumed)

    def _nodes_from_plan(self, plan: list[PlannedRun], old_runs: list[RunRecord] | list[Any], *,
                         record: bool, clone: bool = False) -> list[Node]:
        """Graph nodes for the runs of a rerun or resume plan that are not reused; with ``record``, the new Run
        records too (``clone``: the reused ones copied from their originals inside the store, in bulk).

        A reused run gets no node: the runs that take its output (or return it) get that output in their
        templates in place of a reference to it, and an input made only of values so becomes one value now (a
        list of 10,000 reused outputs is one leaf, serialized once, not 10,000 references to wire and follow)."""
        by_old = {r.id: r for r in old_runs}
        reused_outputs: dict[str, str] = {}  # new id of a reused run -> its output artifact
        for p in plan:
            if p.action == REUSE:
                output_id = by_old[p.old_id].output_id
                if output_id is None:
                    raise ValueError(f"run {p.old_id} is recorded as {by_old[p.old_id].state} but has no output "
                                     "to reuse")
                reused_outputs[p.new_id] = output_id
        again = [p for p in plan if p.action != REUSE]
        if plan and plan[0].action == REUSE:  # everything reused (continue after a success): the root's node
            wanted_root = {plan[0].new_id}
        else:
            wanted_root = set()
        referenced = {x for p in again for t in [*p.input_refs.values(), p.output_ref] if t is not None
                      for x in graph.json_refs(t) if x in reused_outputs}
        wanted = {reused_outputs[x] for x in referenced | wanted_root}
        wanted |= {x for p in again for r in [by_old[p.old_id]] for x in [r.output_id, *r.inputs.values()] if x}
        formats: dict[str, Formats] = {  # light shapes bring their outputs' formats
            r.output_id: r.output for r in old_runs
            if isinstance(r, RunShape) and r.output is not None and r.output_id in wanted and r.output_id}
        outputs = getattr(self.store, "output_formats", None)  # else all the outputs in one query, where it can
        if not formats and outputs is not None and wanted and old_runs:
            formats = {x: f for x, f in outputs(old_runs[0].root_id).items() if x in wanted}
        formats.update(self.recorder.formats(wanted - formats.keys()))
        if record:  # a rerun (not a resume): refused before anything is recorded if what it reuses is gone
            self._check_reused({reused_outputs[x]: x for x in referenced | wanted_root}, formats, plan)
        values = self.recorder.stored_values(formats)

        def leaf(artifact_id: str) -> Value:
            found = values.get(artifact_id)
            return found if found is not None else self.recorder.stored_value(artifact_id)

        def output_of(run_id: str) -> Any:
            output_id = reused_outputs.get(run_id)
            if output_id is None:
                return graph.RunRef(run_id)
            value = leaf(output_id)
            value.origin = value.origin or run_id  # named if it does not load
            return value

        now = utcnow()
        batch = self.recorder.batch
        nodes = []
        for p in plan:
            old = by_old[p.old_id]
            if p.action == REUSE:
                if clone:  # refs unchanged by the remap: None, the original's (copied in SQL)
                    batch.clone_run(p.new_id, old.id, root_id=self.root_id, parent_id=p.new_parent_id, created_at=now,
                                    input_refs=None if p.input_refs == old.input_refs else p.input_refs,
                                    output_ref=None if p.output_ref == old.output_ref else p.output_ref)
                elif record:
                    batch.add_run(RunRecord(
                        id=p.new_id, root_id=self.root_id, parent_id=p.new_parent_id, func_path=old.func_path,
                        func_name=old.func_name, state=RESOLVED, input_refs=p.input_refs, inputs=old.inputs,
                        output_ref=p.output_ref, output_id=old.output_id, cached_from=old.cached_from,
                        source_file=old.source_file, source_hash=old.source_hash,
                        source_text=limits.source_excerpt(old.source_text),  # recorded whole by an older version
                        settings=old.settings, original_run_id=old.id, attempts=old.attempts,
                        notes={**old.notes, "reused_from": old.id}, created_at=utcnow(), started_at=old.started_at,
                        ended_at=old.ended_at))
                if p.new_id in wanted_root:
                    nodes.append(Node(p.new_id, None, state=RESOLVED, output=leaf(reused_outputs[p.new_id])))
                continue
            rec = RunRecord(
                id=p.new_id, root_id=self.root_id, parent_id=p.new_parent_id, func_path=old.func_path,
                func_name=old.func_name, state=CREATED, input_refs=p.input_refs, source_file=old.source_file,
                source_hash=old.source_hash, settings=old.settings, original_run_id=old.id, created_at=utcnow(),
                source_text=limits.source_excerpt(old.source_text),
            )
            if p.action == AWAIT:
                rec.state, rec.inputs, rec.output_ref, rec.started_at = RUNNING, old.inputs, p.output_ref, utcnow()
                node = Node(p.new_id, p.new_parent_id, func=_func_or_none(old), mode=AWAIT, state=RUNNING,
                            output_template=graph.from_json(p.output_ref, leaf, output_of))
            else:
                func = load_func(old.func_path, old.source_file)
                rec.source_hash, rec.settings, rec.source_text = func.source_hash, func.settings(), func.source_text
                inputs = {k: self._input(t, leaf, output_of) for k, t in p.input_refs.items()}
                node = Node(p.new_id, p.new_parent_id, func=func, inputs=inputs)
            if record:
                batch.add_run(rec)
            nodes.append(node)
        return nodes

    def _check_reused(self, reused: dict[str, str], formats: dict[str, Formats], plan: list[PlannedRun]) -> None:
        """Raise :class:`ReusedOutputGone` when the bytes of reused outputs the rerun reads (``reused``: artifact ->
        the new id of the run reused for it) are gone from storage, or are not those recorded (another number of bytes
        than their record's size), asked as a cache hit's are (their records hold none: S3 a HEAD each, a local file
        a stat; bytes of another size that hash to the id are reused: their record's size is wrong), named in
        ``plan``'s order: the first is upstream of the others (was: by storage key, maybe a downstream one)."""
        keys = {artifact_key(a): a for a in reused if (f := formats.get(a)) is None or f[2] is None}
        storage = self.recorder.storage
        bad = unmatched(storage, {k: None if (f := formats.get(a)) is None else f[3] for k, a in keys.items()},
                        {k: f[0] for k, a in keys.items() if (f := formats.get(a)) is not None})
        if bad:
            old_of = {p.new_id: p.old_id for p in plan}
            order = {p.new_id: i for i, p in enumerate(plan)}  # upstream first: rerunning from it redoes the others
            first = sorted(bad, key=lambda k: (order.get(reused[keys[k]], len(order)), k))
            raise ReusedOutputGone(self.settings.rerun_from or self.root_id, {
                old_of[reused[keys[k]]]: f"gone from storage ({location(storage, k)})" if bad[k] is None else
                f"changed in storage: its stored bytes ({location(storage, k)}) are {bad[k]} bytes, recorded as "
                f"{formats[keys[k]][3]}" for k in first})

    def _input(self, doc: Any, leaf: Callable[[str], Value], output_of: Callable[[str], Any]) -> Any:
        """A planned run's input template; one that references only reused runs (and values) is that one value,
        serialized now, unless reading it fails (then the run fails on it when it starts, as it would)."""
        seen = {"reused": False, "ref": False}

        def run(run_id: str) -> Any:
            found = output_of(run_id)
            seen["ref" if type(found) is graph.RunRef else "reused"] = True
            return found

        template = graph.from_json(doc, leaf, run)
        if seen["ref"] or not seen["reused"] or isinstance(template, Value):
            return template
        try:
            return self.recorder.value(graph.map_leaves(template, lambda v: v.value))
        except Exception:
            return template


@contextmanager
def rerun_storage(rerun_from: str, storage: Storage) -> Iterator[None]:
    """A rerun's planning (the check of the outputs it reuses, the read of its root's recorded inputs for a callable
    cache namespace: a driver's, a CloudResolver's) meeting its storage failing: :class:`RerunUnplanned`, in one line
    naming the storage and what to do (was: the storage's bare error, "S3 head of s3://... failed: 503 ...", saying
    nothing of the rerun). Nothing of it is recorded yet: as any refusal of a rerun's planning (``ReusedOutputGone``,
    a run not found), it leaves no record."""
    try:
        yield
    except RerunUnplanned:
        raise
    except StorageError as e:
        raise RerunUnplanned(rerun_from, location(storage, "").rstrip("/"), e) from e


def recorded_root(func: Func, root: RunRecord, stored_value: Callable[[str], Value], new_id: str) -> Future:
    """The root Future of a recorded Resolution: its func on the inputs it was recorded with (what a rerun
    uses), with the rerun's id. What a callable ``cache_namespace`` receives during a rerun."""
    future = Future(func, {name: stored_value(artifact_id).value for name, artifact_id in root.inputs.items()})
    future.id = new_id
    return future


def _refs_runs(template: Any) -> bool:
    """Whether a JSON template references a run."""
    return template is not None and next(graph.json_refs(template), None) is not None


def _func_or_none(run: RunRecord) -> Func | None:
    """The Func a recorded run ran, if its code can be found here (used for output type checks)."""
    try:
        return load_func(run.func_path, run.source_file)
    except Exception:
        return None


def value_id(leaf: Any) -> str:
    if not isinstance(leaf, Value):
        raise TypeError(f"template leaf {leaf!r} was not serialized")
    return leaf.id
