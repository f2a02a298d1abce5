"""The pure resolution state machine and the rerun planner.

Nothing here touches a database, the network or the clock: resolvers feed it events
("this run resolved", "this composition returned these futures") and ask it what to do next.

Templates describe where a value comes from: a :class:`RunRef` leaf is another Run's output,
any other leaf is an already-known value (opaque to the graph), and ``list``/``tuple``/``dict``
containers may hold both. Persisted templates are JSON: ``{"run": id}``, ``{"artifact": id}``,
``{"list": [...]}``, ``{"tuple": [...]}``, ``{"dict": [[key, template], ...]}``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sematic_k8s.future import Future

CREATED, SCHEDULED, RUNNING = "created", "scheduled", "running"
RESOLVED, FAILED, CANCELED = "resolved", "failed", "canceled"
TERMINAL = frozenset({RESOLVED, FAILED, CANCELED})
# The allowed state changes of a Run (DESIGN.md "Run states"), checked on every change the graph makes.
# created -> resolved is a cache hit; running -> scheduled a retry. Staying in a state is no change (a
# composition that returned Futures stays running; a late duplicate outcome leaves a resolved run resolved).
# Runs cloned by a rerun or a resume start in any state.
TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({SCHEDULED, RUNNING, RESOLVED, FAILED, CANCELED}),
    SCHEDULED: frozenset({RUNNING, FAILED, CANCELED}),
    RUNNING: frozenset({SCHEDULED, RESOLVED, FAILED, CANCELED}),
    RESOLVED: frozenset(),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}
EXECUTE, AWAIT = "execute", "await"
REUSE = "reuse"


class RunRef(NamedTuple):
    """A template leaf: the output of Run ``run_id``."""

    run_id: str


# ---------------------------------------------------------------------------------------------
# templates


def template_of(value: Any, on_future: Callable[[Future], None]) -> tuple[Any, bool]:
    """Replace Futures inside lists, tuples and dicts by RunRefs (calling ``on_future`` on each).

    Returns ``(template, has_refs)``; a subtree without Futures is returned as the original object.
    """
    if isinstance(value, Future):
        on_future(value)
        return RunRef(value.id), True
    t = type(value)
    if t is list or t is tuple:
        parts = [template_of(x, on_future) for x in value]
        if any(has for _, has in parts):
            return t(p for p, _ in parts), True
        return value, False
    if t is dict:
        parts_d = {k: template_of(x, on_future) for k, x in value.items()}
        if any(has for _, has in parts_d.values()):
            return {k: p for k, (p, _) in parts_d.items()}, True
        return value, False
    return value, False


def refs_in(template: Any) -> Iterator[str]:
    """Run ids referenced by an in-memory template."""
    if type(template) is RunRef:
        yield template.run_id
    elif type(template) is list or type(template) is tuple:
        for x in template:
            yield from refs_in(x)
    elif type(template) is dict:
        for x in template.values():
            yield from refs_in(x)


def substitute(template: Any, lookup: Callable[[str], Any]) -> Any:
    """Replace RunRef leaves by ``lookup(run_id)``."""
    if type(template) is RunRef:
        return lookup(template.run_id)
    if type(template) is list or type(template) is tuple:
        return type(template)(substitute(x, lookup) for x in template)
    if type(template) is dict:
        return {k: substitute(x, lookup) for k, x in template.items()}
    return template


def map_leaves(template: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every non-RunRef leaf of an in-memory template."""
    if type(template) is RunRef:
        return template
    if type(template) is list or type(template) is tuple:
        return type(template)(map_leaves(x, fn) for x in template)
    if type(template) is dict:
        return {k: map_leaves(x, fn) for k, x in template.items()}
    return fn(template)


def to_json(template: Any, leaf_id: Callable[[Any], str]) -> Any:
    """In-memory template -> JSON; ``leaf_id`` gives the artifact id of a value leaf."""
    if type(template) is RunRef:
        return {"run": template.run_id}
    if type(template) is list:
        return {"list": [to_json(x, leaf_id) for x in template]}
    if type(template) is tuple:
        return {"tuple": [to_json(x, leaf_id) for x in template]}
    if type(template) is dict:
        for k in template:
            if not (k is None or isinstance(k, (str, int, float, bool))):
                raise TypeError(f"dict keys next to Futures must be str, int, float, bool or None, got {k!r}")
        return {"dict": [[k, to_json(x, leaf_id)] for k, x in template.items()]}
    return {"artifact": leaf_id(template)}


def from_json(doc: Any, leaf: Callable[[str], Any], run: Callable[[str], Any] = RunRef) -> Any:
    """JSON template -> in-memory template; ``leaf(artifact_id)`` builds value leaves, ``run(run_id)`` the leaves
    that reference runs (a :class:`RunRef` unless told otherwise, e.g. a known output in its place)."""
    if "run" in doc:
        return run(doc["run"])
    if "artifact" in doc:
        return leaf(doc["artifact"])
    if "list" in doc:
        return [from_json(x, leaf, run) for x in doc["list"]]
    if "tuple" in doc:
        return tuple(from_json(x, leaf, run) for x in doc["tuple"])
    if "dict" in doc:
        return {k: from_json(x, leaf, run) for k, x in doc["dict"]}
    raise ValueError(f"not a template: {doc!r}")


def json_refs(doc: Any) -> Iterator[str]:
    """Run ids referenced by a JSON template."""
    if not doc:
        return
    if "run" in doc:
        yield doc["run"]
    for key in ("list", "tuple"):
        for x in doc.get(key, ()):
            if "run" in x:  # the common leaf, without a generator of its own (fan-ins of thousands)
                yield x["run"]
            elif "artifact" not in x:
                yield from json_refs(x)
    for _, x in doc.get("dict", ()):
        yield from json_refs(x)


def remap_json(doc: Any, ids: Mapping[str, str]) -> Any:
    """A JSON template with every referenced run id replaced through ``ids``."""
    if doc is None:
        return None
    if "run" in doc:
        return {"run": ids[doc["run"]]}
    if "artifact" in doc:
        return doc
    if "dict" in doc:
        return {"dict": [[k, remap_json(x, ids)] for k, x in doc["dict"]]}
    key = "list" if "list" in doc else "tuple"
    return {key: [{"run": ids[x["run"]]} if "run" in x else x if "artifact" in x else remap_json(x, ids)
                  for x in doc[key]]}


# ---------------------------------------------------------------------------------------------
# the state machine


@dataclass(slots=True, eq=False)
class Node:
    """One Run in the graph.

    ``mode`` is EXECUTE (run ``func`` on ``inputs`` once they resolve) or AWAIT (a composition
    whose nested Runs are known: it resolves when ``output_template`` does).
    """

    run_id: str
    parent_id: str | None
    func: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)
    mode: str = EXECUTE
    state: str = CREATED
    output_template: Any = None
    output: Any = None
    waiting: int = 0
    dependents: list[str] = field(default_factory=list)


class Graph:
    """Which Runs are ready, which compositions can finish, what a failure cancels. O(runs + edges)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._ready: deque[Node] = deque()
        self._finishable: deque[Node] = deque()

    def add(self, nodes: Iterable[Node]) -> None:
        """Register nodes (in any order among themselves) and wire their dependencies."""
        nodes = list(nodes)
        ids = {n.run_id for n in nodes}
        deps_of: dict[str, set[str]] = {}
        for n in nodes:  # validate everything before changing anything
            if n.run_id in self.nodes or len(ids) != len(nodes):
                raise ValueError(f"run {n.run_id} is already in the graph")
            if n.state != RESOLVED:
                templates = n.inputs.values() if n.mode == EXECUTE else [n.output_template]
                deps = deps_of[n.run_id] = {r for t in templates for r in refs_in(t)}
                for dep in deps:
                    if dep not in self.nodes and dep not in ids:
                        raise ValueError(f"run {n.run_id} depends on unknown run {dep}")
        for n in nodes:
            self.nodes[n.run_id] = n
        for n in nodes:
            if n.state == RESOLVED:
                continue
            self._wire_deps(n, deps_of[n.run_id])

    def _wire(self, node: Node, templates: Iterable[Any]) -> None:
        self._wire_deps(node, {r for t in templates for r in refs_in(t)})

    def _wire_deps(self, node: Node, deps: set[str]) -> None:
        waiting = 0
        for dep_id in deps:
            dep = self.nodes.get(dep_id)
            if dep is None:
                raise ValueError(f"run {node.run_id} depends on unknown run {dep_id}")
            if dep.state != RESOLVED:
                dep.dependents.append(node.run_id)
                waiting += 1
        node.waiting = waiting
        if waiting == 0:
            self._enqueue(node)

    def _enqueue(self, node: Node) -> None:
        if node.mode == EXECUTE and node.state == CREATED:
            self._ready.append(node)
        elif node.mode == AWAIT and node.state == RUNNING:
            self._finishable.append(node)

    def pop_ready(self) -> list[Node]:
        """Runs whose inputs are all resolved, in the order they became ready."""
        out = list(self._ready)
        self._ready.clear()
        return out

    def pop_finishable(self) -> list[Node]:
        """Compositions whose returned futures are all resolved."""
        out = list(self._finishable)
        self._finishable.clear()
        return out

    def inputs(self, node: Node) -> dict[str, Any]:
        """The node's inputs with every RunRef replaced by that run's output."""
        nodes = self.nodes
        return {k: substitute(t, lambda r: nodes[r].output) for k, t in node.inputs.items()}

    def output_structure(self, node: Node) -> Any:
        """A composition's returned structure with every RunRef replaced by that run's output."""
        return substitute(node.output_template, lambda r: self.nodes[r].output)

    @staticmethod
    def _move(node: Node, state: str) -> None:
        """The one place a node's state changes: only along :data:`TRANSITIONS` (staying put is no change)."""
        if state != node.state and state not in TRANSITIONS[node.state]:
            raise ValueError(f"run {node.run_id} cannot go from {node.state} to {state}")
        node.state = state

    def set_state(self, run_id: str, state: str) -> None:
        """Scheduled, running: states that release nothing (see :meth:`resolve`, :meth:`fail`)."""
        self._move(self.nodes[run_id], state)

    def resolve(self, run_id: str, output: Any) -> None:
        """Record a run's output and release what waited on it."""
        node = self.nodes[run_id]
        self._move(node, RESOLVED)
        node.output = output
        for dep_id in node.dependents:
            dep = self.nodes[dep_id]
            dep.waiting -= 1
            if dep.waiting == 0:
                self._enqueue(dep)
        node.dependents = []

    def expand(self, run_id: str, output_template: Any, children: list[Node]) -> None:
        """A composition returned futures: add them and wait for the returned structure."""
        node = self.nodes[run_id]
        self.add(children)
        self._move(node, RUNNING)
        node.mode, node.output_template = AWAIT, output_template
        self._wire(node, [output_template])

    def fail(self, run_id: str) -> list[str]:
        """Fail a run and every composition above it; returns their ids, innermost first."""
        failed = []
        node: Node | None = self.nodes[run_id]
        while node is not None and node.state not in TERMINAL:
            self._move(node, FAILED)
            failed.append(node.run_id)
            node = self.nodes.get(node.parent_id) if node.parent_id else None
        return failed

    def cancel_unfinished(self) -> list[str]:
        """Cancel every run that has not reached a final state; returns their ids."""
        canceled = [n.run_id for n in self.nodes.values() if n.state not in TERMINAL]
        for run_id in canceled:
            self._move(self.nodes[run_id], CANCELED)
        self._ready.clear()
        self._finishable.clear()
        return canceled


# ---------------------------------------------------------------------------------------------
# rerun planning


class PlannedRun(NamedTuple):
    """What a rerun does with one Run of the original Resolution (a tuple: thousands are made per rerun)."""

    old_id: str
    new_id: str
    new_parent_id: str | None
    action: str  # REUSE (keep output), AWAIT (keep nested runs, wait for them), EXECUTE (run again)
    input_refs: dict[str, Any]
    output_ref: Any


def plan_rerun(runs: Iterable[Any], from_id: str, mode: str, new_id: Callable[[], str], *,
               keep_ids: bool = False) -> list[PlannedRun]:
    """Plan a rerun of a Resolution given all its Runs (objects with ``id``, ``parent_id``,
    ``state``, ``input_refs``, ``output_ref``).

    ``mode="from"``: ``from_id``, its ancestors and everything downstream of them are reset; the
    nested Runs of reset Runs that execute again are dropped (re-created when they run).
    ``mode="continue"``: ``from_id`` must be the root; only Runs that did not resolve are reset.
    In both modes a Run that did not resolve is never reused. Returns parents before children.
    ``keep_ids`` plans a resume of the same Resolution: every kept Run keeps its id.
    """
    by_id = {r.id: r for r in runs}
    if from_id not in by_id:
        raise LookupError(f"no run {from_id} in this resolution")
    if mode not in ("from", "continue"):
        raise ValueError(f"rerun mode must be 'from' or 'continue', got {mode!r}")
    if mode == "continue" and by_id[from_id].parent_id is not None:
        root = from_id
        while (parent := by_id[root].parent_id) is not None and parent in by_id:
            root = parent
        raise ValueError(f"rerun mode 'continue' takes the root run id, and {from_id} is not a root run: give its "
                         f"resolution's, {root}, or rerun from {from_id} with mode 'from'")
    children: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {}
    for r in by_id.values():
        if r.parent_id is not None:
            children.setdefault(r.parent_id, []).append(r.id)
        if r.input_refs:
            for ref in {x for t in r.input_refs.values() for x in json_refs(t)}:
                consumers.setdefault(ref, []).append(r.id)

    def subtree(run_id: str) -> Iterator[str]:
        stack = list(children.get(run_id, ()))
        while stack:
            x = stack.pop()
            yield x
            stack.extend(children.get(x, ()))

    execute: set[str] = {from_id} if mode == "from" else set()
    dropped: set[str] = set(subtree(from_id)) if mode == "from" else set()
    reset: set[str] = set(execute)
    reset |= {r.id for r in by_id.values() if r.state != RESOLVED and r.id not in dropped}
    queue = deque(reset)
    while queue:
        x = queue.popleft()
        parent = by_id[x].parent_id
        if parent is not None and parent not in reset:
            reset.add(parent)
            queue.append(parent)
        for c in consumers.get(x, ()):
            if c in dropped:
                continue
            if c not in execute:
                execute.add(c)
                reset.add(c)
                dropped.update(subtree(c))
                queue.append(c)
    for x in list(reset):
        if x not in execute and by_id[x].output_ref is None:
            execute.add(x)  # a composition that never returned, or a plain run: run it again
            dropped.update(subtree(x))

    kept = [r for r in _parents_first(by_id, children) if r.id not in dropped]
    if mode == "from" and from_id in dropped:
        raise ValueError(f"run {from_id} cannot be re-run: its recorded parents are inconsistent")
    ids = {r.id: r.id for r in kept} if keep_ids else {r.id: new_id() for r in kept}
    plan = []
    for r in kept:
        rid, parent, refs, output = r.id, r.parent_id, r.input_refs, r.output_ref
        action = EXECUTE if rid in execute else AWAIT if rid in reset else REUSE
        plan.append(PlannedRun(
            rid, ids[rid], ids[parent] if parent else None, action,
            {k: remap_json(t, ids) for k, t in refs.items()} if refs else {},
            remap_json(output, ids) if action != EXECUTE and output is not None else None,
        ))
    return plan


def _parents_first(by_id: dict[str, Any], children: dict[str, list[str]]) -> list[Any]:
    roots = [r for r in by_id.values() if r.parent_id is None or r.parent_id not in by_id]
    out: list[Any] = []
    stack = list(reversed(roots))
    pop, append, extend = stack.pop, out.append, stack.extend
    while stack:
        r = pop()
        append(r)
        nested = children.get(r.id)
        if nested:
            extend([by_id[c] for c in reversed(nested)])
    return out
