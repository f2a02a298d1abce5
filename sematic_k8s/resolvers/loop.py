"""The resolution loop: one code path that drives a Future graph to values, for every resolver.

It wires the pure :mod:`sematic_k8s.graph` to a Store (metadata), a Storage (artifact bytes) and
an Executor (where func bodies run). Writes are batched: one store transaction per loop turn.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from typing import Any

from sematic_k8s import caching, graph, serialization
from sematic_k8s.executors.base import Executor, Outcome, Task
from sematic_k8s.executors.inline import error_info
from sematic_k8s.func import Func, FuncError, load_func
from sematic_k8s.future import Future, new_id
from sematic_k8s.graph import AWAIT, CANCELED, CREATED, EXECUTE, FAILED, RESOLVED, REUSE, RUNNING, SCHEDULED
from sematic_k8s.serialization import Value
from sematic_k8s.storage.base import Storage, artifact_loader, log_key, put_artifact
from sematic_k8s.store.base import Store
from sematic_k8s.store.records import Batch, ResolutionRecord, RunRecord, utcnow

log = logging.getLogger("sematic_k8s")
SETTLE = 0.002  # seconds to wait for quick runs before writing what happened so far (batches writes)
FLUSH_INTERVAL = 0.5  # seconds: the longest recorded state may lag while runs keep completing
CANCEL_POLL = 1.0  # seconds: how often a flush asks the store whether the resolution was asked to cancel


class ResolutionFailed(Exception):
    """A Resolution failed; ``run_id`` names the Run whose error caused it."""

    def __init__(self, message: str, *, resolution_id: str, run_id: str | None, error: dict | None) -> None:
        super().__init__(message)
        self.resolution_id = resolution_id
        self.run_id = run_id
        self.error = error


class ResolutionCanceled(ResolutionFailed):
    """A Resolution was canceled on request (``sematic-k8s cancel``, the server's cancel action)."""


class ResolutionLoop:
    """Resolves one pipeline (a fresh one, or a rerun of a recorded one)."""

    def __init__(self, store: Store, storage: Storage, executor: Executor, *, kind: str,
                 cache_namespace: caching.CacheNamespace = None, max_parallelism: int = 1,
                 rerun_from: str | None = None, rerun_mode: str = "from", image: str | None = None,
                 build_hash: str | None = None, root_id: str | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.store, self.storage, self.executor = store, storage, executor
        self.kind = kind
        self.cache_namespace_setting = cache_namespace
        self.max_parallelism = max(1, max_parallelism)
        self.rerun_from, self.rerun_mode = rerun_from, rerun_mode
        self.image, self.build_hash = image, build_hash
        self.extra_settings = settings or {}  # recorded on the Resolution (e.g. how a cloud rerun reaches it)
        self.graph = graph.Graph()
        self.batch = Batch()
        self.attempts: dict[str, int] = {}
        self.known_artifacts: set[str] = set()
        self.pending: deque[graph.Node] = deque()
        self.timers: list[tuple[float, int, graph.Node]] = []
        self.in_flight = 0
        self.failure: tuple[str, dict] | None = None
        self.forced: set[str] = set()
        self.resumed: set[str] = set()  # runs a restarted driver found running
        self.warned_no_namespace = False
        self.namespace: str | None = None
        self.root_id = ""
        self.preset_root_id = root_id  # the new Resolution's id when the caller chose it (the server)
        self.cancel_checked = time.monotonic()
        self.cancel_asked = False
        self.task_inputs: dict[str, dict[str, Value]] = {}
        self.failed_exc: BaseException | None = None
        self.last_flush = time.monotonic()
        self.load = artifact_loader(storage)

    # -- entry ------------------------------------------------------------------------------------

    def run(self, root: Future) -> Any:
        """Resolve ``root`` and return its value; on a rerun ``root`` names the pipeline to rerun."""
        existing = self.store.get_resolution(self.preset_root_id) if self.preset_root_id else None
        if existing is not None and existing.state in graph.TERMINAL:
            raise ValueError(f"resolution {existing.id} already ended ({existing.state}): nothing to resume")
        if existing is not None:  # this driver was restarted: pick up where it stopped
            self.root_id = root.id = existing.id
            nodes, settings_extra = self._resume(root), {}
        elif self.rerun_from is not None:
            nodes, settings_extra = self._plan_rerun(root)
        else:
            nodes, settings_extra = self._new_root(root), {}
        self.namespace = caching.resolve_namespace(self.cache_namespace_setting, root)
        if existing is None:
            self._record_resolution(root, settings_extra)
        self.graph.add(nodes)
        self._flush()  # record the resolution before running anything: watchers (the server's API) see it at once
        try:
            self._loop()
            if self.cancel_asked or self.store.cancel_requested(self.root_id):  # an accepted cancel wins
                raise self._canceled()
        except BaseException as e:
            self._abort(e)
            raise
        finally:
            self.executor.close()
        return self._finish()

    def _record_resolution(self, root: Future, settings_extra: dict[str, Any]) -> None:
        self.batch.add_resolution(ResolutionRecord(
            id=self.root_id, root_func_path=root.func.path, state=RUNNING, created_at=utcnow(),
            settings={"kind": self.kind, "cache_namespace": self.namespace,
                      "max_parallelism": self.max_parallelism, **self.extra_settings, **settings_extra},
            rerun_of=settings_extra.get("rerun_of"), image=self.image, build_hash=self.build_hash,
        ))

    def _loop(self) -> None:
        root = self.graph.nodes[self.root_id]
        while True:
            self._advance()
            if self.cancel_asked:
                raise self._canceled()
            if root.state in graph.TERMINAL or (self.failure and self.in_flight == 0):
                return
            if self.in_flight == 0 and not self.timers:
                raise RuntimeError(f"resolution {self.root_id} is stuck: nothing is running or ready")
            outcomes = self.executor.wait(SETTLE)
            if not outcomes:  # about to block: record what happened so far first
                self._flush()
                timeout = max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else CANCEL_POLL
                outcomes = self.executor.wait(min(timeout, CANCEL_POLL))
            elif time.monotonic() - self.last_flush > FLUSH_INTERVAL:
                self._flush()
            for outcome in outcomes:
                self._on_outcome(outcome)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, node = heapq.heappop(self.timers)
                if self.failure:
                    continue
                self._submit(node)

    def _canceled(self) -> ResolutionCanceled:
        return ResolutionCanceled(f"resolution {self.root_id} was canceled", resolution_id=self.root_id,
                                  run_id=None, error=None)

    def _advance(self) -> None:
        """Finish compositions and dispatch ready runs until nothing changes."""
        while True:
            finishable = self.graph.pop_finishable()
            ready = self.graph.pop_ready()
            if not finishable and not ready and not (self.pending and self.in_flight < self.max_parallelism):
                return
            for node in finishable:
                if node.state == RUNNING:
                    self._finish_composition(node)
            self.pending.extend(ready)
            while self.pending and self.in_flight < self.max_parallelism and not self.failure:
                node = self.pending.popleft()
                if node.state == CREATED:
                    self._start(node)
            if self.failure:
                self.pending.clear()
                return

    # -- building nodes ---------------------------------------------------------------------------

    def _value(self, value: Any) -> Value:
        """Serialize a value once, store its bytes, and record its artifact."""
        s = serialization.serialize(value)
        if s.id not in self.known_artifacts:
            self.batch.artifacts[s.id] = {**put_artifact(self.storage, s), "created_at": utcnow()}
            self.known_artifacts.add(s.id)
        return Value(s.id, s.format, s.type_name, value)

    def _stored_value(self, artifact_id: str, fmt: str | None = None, type_name: str = "") -> Value:
        """A Value for a recorded artifact; its bytes are read and verified on first use."""
        if fmt is None:
            rec = self.store.get_artifact(artifact_id)
            if rec is None:
                raise LookupError(f"artifact {artifact_id} is not recorded")
            fmt, type_name = rec.format, rec.type_name
        self.known_artifacts.add(artifact_id)
        return Value(artifact_id, fmt, type_name, load=self.load)

    def _normalize(self, template: Any, has_refs: bool) -> Any:
        """Turn every literal leaf of a template into a Value (serialized once)."""
        if not has_refs:
            return self._value(template)
        return graph.map_leaves(template, self._value)

    def _nodes_for(self, futures: list[Future], parent_id: str | None) -> list[graph.Node]:
        """Nodes and Run records for Futures and every Future nested in their arguments,
        dependencies first (so creation order is a topological order)."""
        nodes: list[graph.Node] = []
        seen: set[str] = set()
        stack: list[tuple[Future, dict[str, Any] | None]] = [(f, None) for f in reversed(futures)]
        while stack:
            f, inputs = stack.pop()
            if inputs is not None:  # its dependencies are done: emit it
                nodes.append(self._node(f, inputs, parent_id))
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

    def _node(self, f: Future, inputs: dict[str, Any], parent_id: str | None) -> graph.Node:
        self.batch.add_run(RunRecord(
            id=f.id, root_id=self.root_id, parent_id=parent_id, func_path=f.func.path,
            func_name=f.func.name, state=CREATED, source_file=f.func.source_file, source_text=f.func.source_text,
            input_refs={k: graph.to_json(t, _value_id) for k, t in inputs.items()},
            source_hash=f.func.source_hash, settings=f.func.settings(), created_at=utcnow(),
        ))
        return graph.Node(run_id=f.id, parent_id=parent_id, func=f.func, inputs=inputs)

    def _new_root(self, root: Future) -> list[graph.Node]:
        for name, arg in root.kwargs.items():
            if graph.template_of(arg, lambda _: None)[1]:
                raise FuncError(f"{root.func.name}(): argument '{name}' is a Future; the pipeline's root "
                                "takes concrete values (call both funcs inside another func instead)")
        if self.preset_root_id:
            root.id = self.preset_root_id
        elif self.store.get_run(root.id) is not None:
            root.id = new_id()  # the same root Future resolved again: a new Resolution
        self.root_id = root.id
        return self._nodes_for([root], None)

    def _plan_rerun(self, root: Future) -> tuple[list[graph.Node], dict[str, Any]]:
        target = self.store.get_run(self.rerun_from)  # type: ignore[arg-type]
        if target is None:
            raise LookupError(f"rerun_from: no run with id {self.rerun_from!r}")
        old_runs = self.store.runs_of_root(target.root_id)
        old_root = next(r for r in old_runs if r.id == target.root_id)
        if root.func.path != old_root.func_path:
            raise ValueError(f"rerun_from {self.rerun_from} belongs to a {old_root.func_path} pipeline, "
                             f"not {root.func.path}")
        preset = iter([self.preset_root_id] if self.preset_root_id else [])
        plan = graph.plan_rerun(old_runs, target.id, self.rerun_mode, lambda: next(preset, None) or new_id())
        self.root_id = root.id = plan[0].new_id  # parents first: the root's id is the first one drawn
        nodes = self._nodes_from_plan(plan, old_runs, record=True)
        self.forced.update(p.new_id for p in plan if p.old_id == target.id and p.action == EXECUTE)
        return nodes, {"rerun_of": target.root_id, "rerun_from": target.id, "rerun_mode": self.rerun_mode}

    def _resume(self, root: Future) -> list[graph.Node]:
        """A restarted driver: continue its recorded, unfinished Resolution with the same run ids, so
        what resolved is kept and executors re-attach to the workers still running."""
        runs = self.store.runs_of_root(self.root_id)
        plan = graph.plan_rerun(runs, self.root_id, "continue", new_id, keep_ids=True)
        kept = {p.old_id for p in plan}
        now = utcnow()
        for r in runs:
            if r.id not in kept and r.state not in graph.TERMINAL:
                self.batch.update_run(r.id, state=CANCELED, ended_at=now)
        by_id = {r.id: r for r in runs}
        for p in plan:
            old = by_id[p.old_id]
            if p.action == EXECUTE:  # same attempt if it was running: a worker of it may still be there
                self.attempts[p.old_id] = max(0, old.attempts - (old.state == RUNNING))
                if old.state == RUNNING:
                    self.resumed.add(p.old_id)
                self.batch.update_run(p.old_id, state=CREATED, ended_at=None)
        self.batch.resolution_updates[self.root_id] = {"state": RUNNING, "ended_at": None, "error": None}
        log.warning("resolution %s: resuming after a restart (%d runs kept, %d to run)", self.root_id,
                    sum(p.action != EXECUTE for p in plan), sum(p.action == EXECUTE for p in plan))
        return self._nodes_from_plan(plan, runs, record=False)

    def _nodes_from_plan(self, plan: list[graph.PlannedRun], old_runs: list[RunRecord], *,
                         record: bool) -> list[graph.Node]:
        """Graph nodes for a rerun or resume plan; with ``record``, the new Run records too."""
        by_old = {r.id: r for r in old_runs}
        formats = {a.id: a for a in self.store.artifacts(
            {x for r in old_runs for x in [r.output_id, *r.inputs.values()] if x})}

        def leaf(artifact_id: str) -> Value:
            a = formats.get(artifact_id)
            return self._stored_value(artifact_id, a.format if a else None, a.type_name if a else "")

        nodes = []
        for p in plan:
            old = by_old[p.old_id]
            rec = RunRecord(
                id=p.new_id, root_id=self.root_id, parent_id=p.new_parent_id, func_path=old.func_path,
                func_name=old.func_name, state=CREATED, input_refs=p.input_refs, source_file=old.source_file,
                source_hash=old.source_hash, settings=old.settings, original_run_id=old.id, created_at=utcnow(),
                source_text=old.source_text,
            )
            if p.action == REUSE:
                rec.state, rec.inputs, rec.output_ref, rec.output_id = RESOLVED, old.inputs, p.output_ref, old.output_id
                rec.cached_from, rec.started_at, rec.ended_at = old.cached_from, old.started_at, old.ended_at
                rec.attempts, rec.notes = old.attempts, {**old.notes, "reused_from": old.id}
                node = graph.Node(p.new_id, p.new_parent_id, state=RESOLVED, output=leaf(old.output_id))
            elif p.action == AWAIT:
                rec.state, rec.inputs, rec.output_ref, rec.started_at = RUNNING, old.inputs, p.output_ref, utcnow()
                node = graph.Node(p.new_id, p.new_parent_id, func=_func_or_none(old), mode=AWAIT, state=RUNNING,
                                  output_template=graph.from_json(p.output_ref, leaf))
            else:
                func = load_func(old.func_path, old.source_file)
                rec.source_hash, rec.settings, rec.source_text = func.source_hash, func.settings(), func.source_text
                inputs = {k: graph.from_json(t, leaf) for k, t in p.input_refs.items()}
                node = graph.Node(p.new_id, p.new_parent_id, func=func, inputs=inputs)
            if record:
                self.batch.add_run(rec)
            nodes.append(node)
        return nodes

    # -- running ----------------------------------------------------------------------------------

    def _materialize(self, structure: Any) -> Value:
        """A Value for an input or output structure: reused as is, or built and serialized once."""
        if isinstance(structure, Value):
            return structure
        return self._value(graph.map_leaves(structure, lambda v: v.value))

    def _start(self, node: graph.Node) -> None:
        func: Func = node.func
        try:
            inputs = {k: self._materialize(s) for k, s in self.graph.inputs(node).items()}
        except Exception as e:
            self._fail(node, e)
            return
        input_ids = {k: v.id for k, v in inputs.items()}
        fields: dict[str, Any] = {"inputs": input_ids}
        if func.cache:
            if self.namespace is None:
                if not self.warned_no_namespace:
                    log.warning("%s has cache=True but the resolver has no cache_namespace: caching is off "
                                "for this resolution", func.name)
                    self.warned_no_namespace = True
            else:
                try:
                    caching.require_deterministic(func.name, [(k, v.type_name) for k, v in inputs.items()
                                                              if v.format != serialization.JSON])
                except FuncError as e:
                    self.batch.update_run(node.run_id, **fields)
                    self._fail(node, e)
                    return
                key = caching.cache_key(self.namespace, func.path, input_ids)
                fields["cache_key"] = key
                hit = None if node.run_id in self.forced else self.store.find_cached(key)
                if hit is not None:
                    self._cache_hit(node, hit, fields)
                    return
        self.batch.update_run(node.run_id, **fields)
        self.task_inputs[node.run_id] = inputs
        self._submit(node)

    def _cache_hit(self, node: graph.Node, hit: RunRecord, fields: dict[str, Any]) -> None:
        func: Func = node.func
        changed = hit.source_hash != func.source_hash
        if changed:
            log.warning("%s: cache hit on run %s, whose func source differs from the current code",
                        func.name, hit.id)
        now = utcnow()
        self.batch.update_run(node.run_id, **fields, state=RESOLVED, cached_from=hit.id, output_id=hit.output_id,
                              started_at=now, ended_at=now,
                              notes={"cache": {"hit": hit.id, "source_changed": changed}})
        self.graph.resolve(node.run_id, self._stored_value(hit.output_id))  # type: ignore[arg-type]
        self.task_inputs.pop(node.run_id, None)

    def _submit(self, node: graph.Node) -> None:
        attempt = self.attempts.get(node.run_id, 0) + 1
        self.attempts[node.run_id] = attempt
        inputs = self.task_inputs[node.run_id]
        self.graph.set_state(node.run_id, RUNNING)
        self.batch.update_run(node.run_id, state=RUNNING, attempts=attempt,
                              **({"started_at": utcnow()} if attempt == 1 else {}))
        self.in_flight += 1
        resumed = node.run_id in self.resumed
        self.resumed.discard(node.run_id)
        self.executor.submit(Task(node.run_id, self.root_id, node.func, inputs, attempt, resumed))

    def _on_outcome(self, o: Outcome) -> None:
        node = self.graph.nodes.get(o.run_id)
        if node is None or self.attempts.get(o.run_id) != o.attempt or node.state != RUNNING:
            return  # a late outcome (timed out, or canceled): already accounted for
        self.in_flight -= 1
        if o.logs:
            header = f"--- attempt {o.attempt} ---\n" if node.func.retries else ""
            self.storage.append(log_key(o.run_id), (header + o.logs).encode())
        if o.details:
            self.batch.update_run(o.run_id, notes={"executor": o.details})
        if o.error is not None or o.error_info is not None:
            self._on_error(node, o)
            return
        try:
            if o.output is not None:  # a remote worker stored and type-checked the output
                self._on_stored_output(node, o.output)
            elif o.expansion is not None:  # a remote composition returned (pickled) Futures
                self._on_value(node, self._stored_value(o.expansion["id"], o.expansion["format"]).value)
            else:
                self._on_value(node, o.value)
        except Exception as e:
            self._fail(node, e)

    def _on_stored_output(self, node: graph.Node, artifact: dict[str, Any]) -> None:
        if artifact["id"] not in self.known_artifacts:
            self.batch.artifacts[artifact["id"]] = {**artifact, "created_at": utcnow()}
        out = self._stored_value(artifact["id"], artifact["format"], artifact["type_name"])
        self.graph.resolve(node.run_id, out)
        self.task_inputs.pop(node.run_id, None)
        self.batch.update_run(node.run_id, state=RESOLVED, output_id=out.id, ended_at=utcnow(), error=None)

    def _on_error(self, node: graph.Node, o: Outcome) -> None:
        func: Func = node.func
        exc = o.error
        info = o.error_info or error_info(exc)  # type: ignore[arg-type]
        kinds = set(info.get("mro", ()))
        retry = (o.attempt <= func.retries and "FuncError" not in kinds
                 and any(c.__qualname__ in kinds for c in func.retry_on))
        if not retry:
            self._fail(node, exc, info)
            return
        delay = func.retry_delay(o.attempt)
        log.warning("%s (run %s) failed on attempt %d/%d: %s; retrying in %.3gs", func.name, node.run_id,
                    o.attempt, func.retries + 1, o.error_info["message"] if o.error_info else exc, delay)
        self.graph.set_state(node.run_id, SCHEDULED)
        self.batch.update_run(node.run_id, state=SCHEDULED, error=o.error_info)
        heapq.heappush(self.timers, (time.monotonic() + delay, id(node), node))

    def _on_value(self, node: graph.Node, value: Any) -> None:
        futures: list[Future] = []
        template, has_refs = graph.template_of(value, futures.append)
        if not has_refs:
            node.func.check_output(value)
            out = self._value(value)
            self.graph.resolve(node.run_id, out)
            self.task_inputs.pop(node.run_id, None)
            self.batch.update_run(node.run_id, state=RESOLVED, output_id=out.id, ended_at=utcnow(), error=None)
            return
        children = self._nodes_for(futures, node.run_id)
        out_template = graph.map_leaves(template, self._value)
        self.batch.update_run(node.run_id, output_ref=graph.to_json(out_template, _value_id))
        self.graph.expand(node.run_id, out_template, children)

    def _finish_composition(self, node: graph.Node) -> None:
        try:
            out = self._materialize(self.graph.output_structure(node))
            if node.func is not None:
                node.func.check_output(out.value)
        except Exception as e:
            self._fail(node, e)
            return
        self.graph.resolve(node.run_id, out)
        self.batch.update_run(node.run_id, state=RESOLVED, output_id=out.id, ended_at=utcnow())

    # -- failure ----------------------------------------------------------------------------------

    def _fail(self, node: graph.Node, exc: BaseException | None, info: dict | None = None) -> None:
        info = info or (error_info(exc) if exc is not None else {"type": "Error", "message": "failed",
                                                                   "traceback": ""})
        now = utcnow()
        failed = self.graph.fail(node.run_id)
        for run_id in failed:
            err = info if run_id == node.run_id else {
                "type": "NestedRunFailed", "message": f"nested run {node.run_id} failed", "traceback": ""}
            self.batch.update_run(run_id, state=FAILED, error=err, ended_at=now)
        if self.failure is None:
            self.failure = (node.run_id, info)
            self.failed_exc = exc
            self.timers.clear()

    def _abort(self, exc: BaseException) -> None:
        """Interrupted (Ctrl-C, or an internal error): cancel what is left and record it."""
        canceled = self.graph.cancel_unfinished()
        self.executor.cancel(canceled)
        now = utcnow()
        for run_id in canceled:
            self.batch.update_run(run_id, state=CANCELED, ended_at=now)
        state = CANCELED if isinstance(exc, (KeyboardInterrupt, ResolutionCanceled)) else FAILED
        self.batch.resolution_updates[self.root_id] = {"state": state, "ended_at": now,
                                                       "error": f"{type(exc).__name__}: {exc}"}
        try:
            self._flush()
        except Exception:
            log.exception("could not record the end of resolution %s", self.root_id)

    def _finish(self) -> Any:
        root = self.graph.nodes[self.root_id]
        now = utcnow()
        if root.state == RESOLVED:
            self.batch.resolution_updates[self.root_id] = {"state": RESOLVED, "ended_at": now}
            self._flush()
            return root.output.value
        canceled = self.graph.cancel_unfinished()
        for run_id in canceled:
            self.batch.update_run(run_id, state=CANCELED, ended_at=now)
        run_id, info = self.failure or (None, {"type": "Error", "message": "unknown failure", "traceback": ""})
        func_name = self.graph.nodes[run_id].func.name if run_id and self.graph.nodes[run_id].func else "?"
        message = (f"resolution {self.root_id} failed: {func_name} (run {run_id}) raised "
                   f"{info['type']}: {info['message']}")
        self.batch.resolution_updates[self.root_id] = {"state": FAILED, "ended_at": now, "error": message}
        self._flush()
        err = ResolutionFailed(f"{message}\n\n{info.get('traceback', '')}".rstrip(), resolution_id=self.root_id,
                               run_id=run_id, error=info)
        raise err from self.failed_exc

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        if self.batch:
            batch, self.batch = self.batch, Batch()
            self.store.write(batch)
        if self.last_flush - self.cancel_checked >= CANCEL_POLL and self.root_id:
            self.cancel_checked = self.last_flush
            self.cancel_asked = self.cancel_asked or self.store.cancel_requested(self.root_id)


def _func_or_none(run: RunRecord) -> Func | None:
    """The Func a recorded run ran, if its code can be found here (used for output type checks)."""
    try:
        return load_func(run.func_path, run.source_file)
    except Exception:
        return None


def _value_id(leaf: Any) -> str:
    if not isinstance(leaf, Value):
        raise TypeError(f"template leaf {leaf!r} was not serialized")
    return leaf.id
