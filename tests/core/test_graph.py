"""Tests for :mod:`sematic_k8s.graph`: the pure state machine, the template helpers, the rerun planner.

Everything here is pure and fast: no store, no storage, no executor, no clock.

Sections:
  1. helpers (template comparison, recorded-run builders, plan checks, a resolution simulator)
  2. Graph: readiness, ordering, expand, fail, cancel, errors, scale
  3. template helpers: template_of, refs_in, substitute, map_leaves, to_json/from_json, json_refs, remap_json
  4. plan_rerun: hand-written scenarios
  5. plan_rerun: property-based tests on simulated resolutions
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sematic_k8s as sk
from sematic_k8s.graph import (
    AWAIT,
    CANCELED,
    CREATED,
    EXECUTE,
    FAILED,
    RESOLVED,
    REUSE,
    RUNNING,
    SCHEDULED,
    TERMINAL,
    Graph,
    Node,
    PlannedRun,
    RunRef,
    from_json,
    json_refs,
    map_leaves,
    plan_rerun,
    refs_in,
    remap_json,
    substitute,
    template_of,
    to_json,
)

# =============================================================================================
# 1. helpers
# =============================================================================================


@sk.func
def inc(x: int) -> int:
    return x + 1


@sk.func
def add(a: int, b: int) -> int:
    return a + b


def shape(t: Any) -> Any:
    """A comparable view of a template that also tells list, tuple, dict and RunRef apart.

    (``RunRef("a") == ("a",)`` and ``True == 1``, so plain ``==`` is not strict enough.)
    """
    if type(t) is RunRef:
        return ("RunRef", t.run_id)
    if type(t) in (list, tuple):
        return (type(t).__name__, [shape(x) for x in t])
    if type(t) is dict:
        return ("dict", [(type(k).__name__, k, shape(v)) for k, v in t.items()])
    return (type(t).__name__, t)


def node(run_id: str, parent: str | None = None, **inputs: Any) -> Node:
    """A plain (EXECUTE) node; ``inputs`` are in-memory templates."""
    return Node(run_id=run_id, parent_id=parent, inputs=inputs)


def ready_ids(g: Graph) -> list[str]:
    return [n.run_id for n in g.pop_ready()]


def finishable_ids(g: Graph) -> list[str]:
    return [n.run_id for n in g.pop_finishable()]


# -- recorded runs, as plan_rerun sees them ----------------------------------------------------


@dataclass
class Rec:
    """A recorded Run: only the fields plan_rerun reads."""

    id: str
    parent_id: str | None = None
    state: str = RESOLVED
    input_refs: dict[str, Any] = field(default_factory=dict)
    output_ref: Any = None  # a composition's returned structure (JSON template); None for plain runs


def ref(run_id: str) -> dict:
    return {"run": run_id}


def art(artifact_id: str) -> dict:
    return {"artifact": artifact_id}


def jlist(*items: Any) -> dict:
    return {"list": list(items)}


def jtuple(*items: Any) -> dict:
    return {"tuple": list(items)}


def jdict(*pairs: tuple[Any, Any]) -> dict:
    return {"dict": [[k, v] for k, v in pairs]}


def rec(run_id: str, parent: str | None = None, *, state: str = RESOLVED, out: Any = None, **inputs: Any) -> Rec:
    """A recorded run. An input or ``out`` given as a str is a reference to that run's output."""

    def as_ref(t: Any) -> Any:
        return ref(t) if isinstance(t, str) else t

    return Rec(run_id, parent, state, {k: as_ref(v) for k, v in inputs.items()}, as_ref(out))


def new_ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"new{next(counter)}"


def check_well_formed(runs: Iterable[Rec], planned: list[PlannedRun]) -> None:
    """Structural guarantees every plan must give, whatever the scenario."""
    by_id = {r.id: r for r in runs}
    old_ids = [p.old_id for p in planned]
    new = {p.old_id: p.new_id for p in planned}
    assert len(set(old_ids)) == len(old_ids), "a run is planned twice"
    assert set(old_ids) <= set(by_id)
    assert len(set(new.values())) == len(new), "new ids are not unique"
    assert not set(new.values()) & set(by_id), "a kept run kept its old id"
    roots = [r.id for r in by_id.values() if r.parent_id is None]
    assert set(roots) <= set(old_ids), "the root is never dropped"
    assert planned[0].old_id in roots and planned[0].new_parent_id is None
    seen: set[str] = set()
    for p in planned:
        old = by_id[p.old_id]
        assert p.action in (EXECUTE, AWAIT, REUSE)
        if old.parent_id is None:
            assert p.new_parent_id is None
        else:
            assert old.parent_id in seen, f"{p.old_id} is planned before its parent {old.parent_id}"
            assert p.new_parent_id == new[old.parent_id]
        seen.add(p.old_id)
        assert p.input_refs == {k: remap_json(t, new) for k, t in (old.input_refs or {}).items()}
        if p.action == EXECUTE:
            assert p.output_ref is None
        else:
            assert p.output_ref == remap_json(old.output_ref, new)


def plan(runs: list[Rec], from_id: str, mode: str = "from") -> dict[str, PlannedRun]:
    """Plan a rerun, check the plan is well formed, and index it by old run id."""
    planned = plan_rerun(runs, from_id, mode, new_ids())
    check_well_formed(runs, planned)
    return {p.old_id: p for p in planned}


def actions(planned: dict[str, PlannedRun]) -> dict[str, str]:
    """old id -> action for every kept run (a dropped run is absent)."""
    return {old: p.action for old, p in planned.items()}


# -- a resolution simulator: realistic recorded runs for the property tests --------------------


@dataclass(frozen=True)
class Call:
    """One func call in a generated program.

    ``deps`` index earlier siblings whose outputs it takes; ``children`` (a composition's nested
    calls) is None for a plain func; ``returns`` indexes children a composition returns besides
    those no sibling consumes; ``cached`` makes it a cache hit (resolved without running, so a
    cached composition never creates nested runs).
    """

    deps: tuple[int, ...] = ()
    children: tuple[Call, ...] | None = None
    cached: bool = False
    returns: tuple[int, ...] = ()


def input_template(k: int, source: str) -> dict:
    """Vary how an input refers to its source: bare, in a list next to a value, or in a dict."""
    return [ref(source), jlist(ref(source), art("c")), jdict(("key", ref(source)), (3, art("c")))][k % 3]


def output_template(returned: list[str]) -> dict:
    """What a composition returns, as the loop records it."""
    if len(returned) == 1:
        return ref(returned[0])
    return jtuple(*(ref(s) for s in returned))


def program_ids(call: Call, run_id: str = "r") -> Iterable[tuple[str, Call]]:
    yield run_id, call
    for i, c in enumerate(call.children or ()):
        yield from program_ids(c, f"{run_id}.{i}")


def simulate(program: Call, rng: random.Random, failing: frozenset[str] = frozenset(),
             fail_at_finish: bool = False) -> list[Rec]:
    """Drive ``program`` through a Graph the way the resolution loop does and return its records.

    Runs complete in a random order (as if in parallel). A run in ``failing`` raises (a composition
    does so in its body, or, with ``fail_at_finish``, when its returned structure is checked). After
    the first failure nothing new starts, runs in flight still complete, and whatever has not
    finished is canceled at the end.
    """
    recs: dict[str, Rec] = {}
    calls: dict[str, Call] = {}
    g = Graph()

    def create(parent: str | None, run_id: str, call: Call, sibling_ids: list[str]) -> Node:
        inputs = {f"p{k}": input_template(k, sibling_ids[d]) for k, d in enumerate(call.deps)}
        inputs["const"] = art("k")
        recs[run_id] = Rec(run_id, parent, CREATED, inputs)
        calls[run_id] = call
        return Node(run_id, parent, inputs={k: from_json(t, str) for k, t in inputs.items()})

    g.add([create(None, "r", program, [])])
    running: list[str] = []
    failed = False

    def set_state(run_id: str, state: str) -> None:
        g.set_state(run_id, state)
        recs[run_id].state = state

    def fail(run_id: str) -> None:
        nonlocal failed
        for x in g.fail(run_id):
            recs[x].state = FAILED
        failed = True

    while True:
        progressed = True
        while progressed:
            progressed = False
            for n in g.pop_finishable():
                progressed = True
                if n.state != RUNNING:
                    continue
                if n.run_id in failing and fail_at_finish:
                    fail(n.run_id)
                else:
                    g.resolve(n.run_id, None)
                    recs[n.run_id].state = RESOLVED
            for n in g.pop_ready():
                progressed = True
                if failed or n.state != CREATED:
                    continue  # never started: canceled below
                if calls[n.run_id].cached:
                    g.resolve(n.run_id, None)
                    recs[n.run_id].state = RESOLVED
                else:
                    set_state(n.run_id, RUNNING)
                    running.append(n.run_id)
        if g.nodes["r"].state in TERMINAL or not running:
            break
        run_id = running.pop(rng.randrange(len(running)))
        call = calls[run_id]
        if run_id in failing and not (call.children and fail_at_finish):
            fail(run_id)
        elif call.children:
            ids = [f"{run_id}.{i}" for i in range(len(call.children))]
            children = [create(run_id, cid, c, ids) for cid, c in zip(ids, call.children, strict=True)]
            # every child no sibling consumes is returned (the loop only records needed futures)
            consumed = {ids[d] for c in call.children for d in c.deps}
            out = output_template([i for k, i in enumerate(ids) if i not in consumed or k in call.returns])
            recs[run_id].output_ref = out
            g.expand(run_id, from_json(out, str), children)
        else:
            g.resolve(run_id, None)
            recs[run_id].state = RESOLVED
    for x in g.cancel_unfinished():
        recs[x].state = CANCELED
    assert recs["r"].state in TERMINAL, "the simulated resolution got stuck"
    return list(recs.values())


def oracle(runs: list[Rec], from_id: str | None) -> dict[str, str]:
    """A naive, independent statement of the rerun rules (DESIGN.md, "rerun_from").

    Reset: the target, every run that did not resolve, and, to a fixpoint, the parent of a reset
    run and every consumer of a reset run. A reset run executes again if it is the target, a
    consumer of a reset run, or has no recorded nested structure to wait for; otherwise it awaits
    its (kept) nested runs. Runs nested under a run that executes again are dropped.
    """
    by_id = {r.id: r for r in runs}

    def inputs_from(r: Rec) -> set[str]:
        return {x for t in r.input_refs.values() for x in json_refs(t)}

    reset = {r.id for r in runs if r.state != RESOLVED} | ({from_id} if from_id else set())
    changed = True
    while changed:
        changed = False
        for r in runs:
            if r.id not in reset and (any(c.parent_id == r.id for c in runs if c.id in reset)
                                      or inputs_from(r) & reset):
                reset.add(r.id)
                changed = True
    execute = {r.id for r in runs if r.id in reset
               and (r.id == from_id or r.output_ref is None or inputs_from(r) & reset)}

    def ancestors(r: Rec) -> Iterable[str]:
        while r.parent_id is not None:
            yield r.parent_id
            r = by_id[r.parent_id]

    dropped = {r.id for r in runs if any(a in execute for a in ancestors(r))}
    return {r.id: EXECUTE if r.id in execute else AWAIT if r.id in reset else REUSE
            for r in runs if r.id not in dropped}


def check_invariants(runs: list[Rec], planned: list[PlannedRun], from_id: str, mode: str) -> None:
    """The invariants the rerun rules imply, each checked on its own."""
    by_id = {r.id: r for r in runs}
    act = {p.old_id: p.action for p in planned}
    reset = {x for x, a in act.items() if a != REUSE}

    def sources(r: Rec) -> set[str]:
        return {x for t in r.input_refs.values() for x in json_refs(t)}

    if mode == "from":
        assert act.get(from_id) == EXECUTE, "the target executes again"
    for r in runs:
        a = act.get(r.id)
        parent = r.parent_id
        if a is None:  # dropped: only ever under a run that executes again
            assert parent is not None and (parent not in act or act[parent] == EXECUTE)
            continue
        if parent is not None:
            assert act.get(parent) in (AWAIT, REUSE), f"{r.id} is kept but its parent {parent} is not"
            if a != REUSE:
                assert act[parent] == AWAIT, f"reset run {r.id} has a non-reset parent {parent}"
        if a == REUSE:
            assert r.state == RESOLVED, f"{r.id} did not resolve yet is reused"
            assert all(act.get(s) == REUSE for s in sources(r)), f"reused {r.id} takes a non-reused input"
            assert all(act.get(s) == REUSE for s in json_refs(r.output_ref)), f"reused {r.id} returns a reset run"
        elif a == AWAIT:
            assert r.output_ref is not None, f"{r.id} awaits nested runs it never created"
            assert all(act.get(s) == REUSE for s in sources(r)), f"awaiting {r.id} has a changed input"
            assert all(s in act for s in json_refs(r.output_ref))
        else:
            assert all(s in act for s in sources(r)), f"{r.id} executes on a dropped input"
            assert not any(c.parent_id == r.id and c.id in act for c in runs), f"{r.id} keeps nested runs"
        if sources(r) & reset:
            assert a == EXECUTE, f"{r.id} consumes a reset run but is {a}"
        if r.state != RESOLVED:
            assert a != REUSE
    root = next(r.id for r in runs if r.parent_id is None)
    assert root in act
    if mode == "continue":
        assert act[root] == (REUSE if all(r.state == RESOLVED for r in runs) else
                             EXECUTE if by_id[root].output_ref is None else AWAIT)


# -- hypothesis strategies ----------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[int]]]:
    """Up to 30 runs; each depends on some earlier ones (repeats allowed)."""
    n = draw(st.integers(1, 30))
    return [(f"n{i}", draw(st.lists(st.integers(0, i - 1), max_size=4)) if i else []) for i in range(n)]


def wrap(refs: list[RunRef], how: int) -> Any:
    return [refs, tuple(refs), {str(k): r for k, r in enumerate(refs)}, {"deep": [(refs, 1)]}][how % 4]


MAX_DEPTH = 3


def sibling_calls(depth: int) -> st.SearchStrategy[tuple[Call, ...]]:
    """1-4 sibling calls; each takes the outputs of up to 3 earlier siblings (a DAG)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Call, ...]:
        out = []
        for i in range(draw(st.integers(1, 4))):
            deps = tuple(draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True))) if i else ()
            children = draw(sibling_calls(depth + 1)) if depth < MAX_DEPTH and draw(st.booleans()) else None
            returns = tuple(draw(st.lists(st.integers(0, len(children) - 1), max_size=2))) if children else ()
            out.append(Call(deps, children, cached=draw(st.integers(0, 5)) == 0, returns=returns))
        return tuple(out)

    return build()


@st.composite
def resolutions(draw: st.DrawFn) -> list[Rec]:
    """A recorded resolution: resolved, or failed (with runs in flight resolved, the rest canceled)."""
    program = Call((), draw(sibling_calls(1)))
    candidates = sorted(run_id for run_id, call in program_ids(program) if not call.cached)
    failing = draw(st.frozensets(st.sampled_from(candidates), max_size=2))
    return simulate(program, draw(st.randoms(use_true_random=False)), failing, draw(st.booleans()))


PROPERTY_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# =============================================================================================
# 2. Graph: the state machine
# =============================================================================================


class TestReadiness:
    def test_a_node_without_refs_is_ready_at_once(self):
        g = Graph()
        g.add([node("a", x=1)])
        assert ready_ids(g) == ["a"]
        assert ready_ids(g) == [], "pop_ready empties the queue"

    def test_a_node_waits_for_all_of_its_dependencies(self):
        g = Graph()
        g.add([node("a"), node("b"), node("c", x=RunRef("a"), y=RunRef("b"))])
        assert ready_ids(g) == ["a", "b"]
        g.resolve("a", 1)
        assert ready_ids(g) == []
        g.resolve("b", 2)
        assert ready_ids(g) == ["c"]
        assert g.inputs(g.nodes["c"]) == {"x": 1, "y": 2}

    def test_duplicate_refs_to_one_run_count_once(self):
        g = Graph()
        a = RunRef("a")
        g.add([node("a"), node("b", x=a, y=[a, a], z={"k": (a,)})])
        ready_ids(g)
        assert g.nodes["b"].waiting == 1
        assert g.nodes["a"].dependents == ["b"]
        g.resolve("a", 7)
        assert ready_ids(g) == ["b"]
        assert g.nodes["b"].waiting == 0
        assert g.inputs(g.nodes["b"]) == {"x": 7, "y": [7, 7], "z": {"k": (7,)}}

    @pytest.mark.parametrize("template", [
        [RunRef("a"), 1],
        (0, RunRef("a")),
        {"k": RunRef("a"), "v": 2},
        [{"k": (1, [RunRef("a")])}],
        {"outer": [(), {"inner": (RunRef("a"),)}]},
    ], ids=["list", "tuple", "dict", "list-dict-tuple-list", "dict-list-dict-tuple"])
    def test_refs_nested_in_containers_are_dependencies(self, template):
        g = Graph()
        g.add([node("a"), node("b", x=template)])
        assert ready_ids(g) == ["a"]
        g.resolve("a", "A")
        assert ready_ids(g) == ["b"]
        assert shape(g.inputs(g.nodes["b"])["x"]) == shape(substitute(template, lambda _: "A"))

    def test_values_that_look_like_refs_are_not_refs(self):
        g = Graph()
        g.add([node("a", x=("a",), y={"run": "a"}, z="a")])
        assert ready_ids(g) == ["a"]

    def test_a_dependency_resolved_before_the_dependent_is_added(self):
        g = Graph()
        g.add([node("a")])
        g.resolve("a", 1)
        g.add([node("b", x=RunRef("a"))])
        assert ready_ids(g) == ["a", "b"]
        assert g.nodes["a"].dependents == []

    def test_nodes_of_one_add_may_come_in_any_order(self):
        g = Graph()
        g.add([node("c", x=RunRef("b")), node("b", x=RunRef("a")), node("a")])
        assert ready_ids(g) == ["a"]
        g.resolve("a", 1)
        assert ready_ids(g) == ["b"]
        g.resolve("b", 2)
        assert ready_ids(g) == ["c"]

    def test_resolved_nodes_are_never_ready_and_release_their_dependents(self):
        g = Graph()
        g.add([Node("a", None, state=RESOLVED, output=5), node("b", x=RunRef("a"))])
        assert ready_ids(g) == ["b"]
        assert g.inputs(g.nodes["b"]) == {"x": 5}

    def test_a_resolved_node_waits_on_nothing(self):
        """A reused or cached run is final: its recorded inputs are not wired."""
        g = Graph()
        g.add([node("a"), Node("b", None, inputs={"x": RunRef("a")}, state=RESOLVED, output=1)])
        assert g.nodes["b"].waiting == 0
        assert g.nodes["a"].dependents == []
        g.resolve("a", 0)
        assert ready_ids(g) == ["a"]

    @pytest.mark.parametrize("state", [SCHEDULED, RUNNING, FAILED, CANCELED])
    def test_only_created_nodes_become_ready(self, state):
        g = Graph()
        g.add([node("a"), Node("b", None, inputs={"x": RunRef("a")}, state=state)])
        assert ready_ids(g) == ["a"]
        g.resolve("a", 1)
        assert ready_ids(g) == []

    def test_a_consumer_canceled_while_waiting_is_not_released(self):
        g = Graph()
        g.add([node("a"), node("b", x=RunRef("a"))])
        ready_ids(g)
        g.set_state("b", CANCELED)
        g.resolve("a", 1)
        assert ready_ids(g) == []


class TestOrder:
    def test_pop_ready_gives_runs_in_the_order_they_became_ready(self):
        g = Graph()
        g.add([node("a1"), node("a2"), node("b", x=RunRef("a1"), y=RunRef("a2")), node("c", x=RunRef("a2")),
               node("d", x=RunRef("a1"))])
        assert ready_ids(g) == ["a1", "a2"]
        g.resolve("a2", 2)  # releases c only: b still waits on a1
        g.add([node("e")])
        g.resolve("a1", 1)  # releases b then d, in the order they were added
        assert ready_ids(g) == ["c", "e", "b", "d"]

    def test_pop_ready_accumulates_until_popped(self):
        g = Graph()
        g.add([node("a")])
        g.add([node("b")])
        assert ready_ids(g) == ["a", "b"]
        assert ready_ids(g) == []

    def test_ready_nodes_are_the_graph_nodes(self):
        g = Graph()
        n = node("a")
        g.add([n])
        assert g.pop_ready() == [n] and g.nodes["a"] is n


class TestResolve:
    def test_resolve_records_output_and_state(self):
        g = Graph()
        g.add([node("a")])
        g.resolve("a", {"v": 1})
        assert g.nodes["a"].state == RESOLVED
        assert g.nodes["a"].output == {"v": 1}

    def test_resolve_releases_each_dependent_exactly_once(self):
        g = Graph()
        g.add([node("a"), node("b", x=RunRef("a")), node("c", x=[RunRef("a"), RunRef("a")])])
        ready_ids(g)
        g.resolve("a", 1)
        assert ready_ids(g) == ["b", "c"]
        g.resolve("a", 1)  # a second resolve (e.g. a late duplicate outcome) releases nothing
        assert ready_ids(g) == []
        assert g.nodes["b"].waiting == 0 and g.nodes["c"].waiting == 0
        assert g.nodes["a"].dependents == []

    def test_a_dependent_with_two_deps_is_released_by_the_last(self):
        g = Graph()
        g.add([node("a"), node("b"), node("c", x=RunRef("a"), y=RunRef("b"))])
        ready_ids(g)
        g.resolve("b", 2)
        assert g.nodes["c"].waiting == 1
        g.resolve("b", 2)  # resolving b again must not count for a
        assert ready_ids(g) == []
        g.resolve("a", 1)
        assert ready_ids(g) == ["c"]


class TestExpand:
    def test_expand_adds_children_and_waits_for_the_returned_structure(self):
        g = Graph()
        g.add([node("p")])
        assert ready_ids(g) == ["p"]
        g.set_state("p", RUNNING)
        g.expand("p", [RunRef("b"), "literal"], [node("a", "p"), node("b", "p", x=RunRef("a"))])
        p = g.nodes["p"]
        assert (p.mode, p.state) == (AWAIT, RUNNING)
        assert g.nodes["a"].parent_id == "p" and g.nodes["b"].parent_id == "p"
        assert ready_ids(g) == ["a"]
        assert finishable_ids(g) == []
        g.resolve("a", 1)
        assert finishable_ids(g) == []
        assert ready_ids(g) == ["b"]
        g.resolve("b", 2)
        assert finishable_ids(g) == ["p"]
        assert g.output_structure(p) == [2, "literal"]

    def test_a_composition_waits_for_every_ref_of_its_template(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", {"x": RunRef("a"), "y": (RunRef("b"), RunRef("a"))},
                 [node("a", "p"), node("b", "p"), node("c", "p")])
        assert g.nodes["p"].waiting == 2
        g.resolve("c", 0)  # not referenced by the template
        g.resolve("a", 1)
        assert finishable_ids(g) == []
        g.resolve("b", 2)
        assert finishable_ids(g) == ["p"]
        assert g.output_structure(g.nodes["p"]) == {"x": 1, "y": (2, 1)}

    def test_a_template_without_refs_is_finishable_at_once(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", [1, {"k": 2}], [])
        assert finishable_ids(g) == ["p"]
        assert g.output_structure(g.nodes["p"]) == [1, {"k": 2}]

    def test_a_template_whose_refs_already_resolved_is_finishable_at_once(self):
        g = Graph()
        g.add([node("p")])
        assert ready_ids(g) == ["p"]
        g.set_state("p", RUNNING)
        g.expand("p", RunRef("hit"), [Node("hit", "p", state=RESOLVED, output=3)])
        assert ready_ids(g) == []
        assert finishable_ids(g) == ["p"]
        assert g.output_structure(g.nodes["p"]) == 3

    def test_consumers_of_a_composition_wait_for_it_to_resolve_not_to_expand(self):
        g = Graph()
        g.add([node("p"), node("y", x=RunRef("p"))])
        assert ready_ids(g) == ["p"]
        g.set_state("p", RUNNING)
        g.expand("p", RunRef("a"), [node("a", "p")])
        assert ready_ids(g) == ["a"]
        g.resolve("a", 1)
        assert finishable_ids(g) == ["p"]
        assert ready_ids(g) == []
        g.resolve("p", 1)
        assert ready_ids(g) == ["y"]

    def test_nested_compositions_finish_inside_out(self):
        g = Graph()
        g.add([node("root")])
        ready_ids(g)
        g.set_state("root", RUNNING)
        g.expand("root", RunRef("x"), [node("x", "root")])
        assert ready_ids(g) == ["x"]
        g.set_state("x", RUNNING)
        g.expand("x", RunRef("x1"), [node("x1", "x")])
        assert ready_ids(g) == ["x1"]
        g.resolve("x1", "v")
        assert finishable_ids(g) == ["x"]
        g.resolve("x", g.output_structure(g.nodes["x"]))
        assert finishable_ids(g) == ["root"]
        g.resolve("root", g.output_structure(g.nodes["root"]))
        assert g.nodes["root"].output == "v"

    def test_only_running_compositions_become_finishable(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", RunRef("a"), [node("a", "p")])
        g.set_state("p", CANCELED)
        g.resolve("a", 1)
        assert finishable_ids(g) == []

    def test_await_nodes_given_to_add_wait_for_their_template(self):
        """A rerun adds compositions whose nested runs are known (AWAIT, RUNNING) directly."""
        g = Graph()
        g.add([
            Node("p", None, mode=AWAIT, state=RUNNING, output_template=[RunRef("a"), RunRef("b")]),
            Node("a", "p", state=RESOLVED, output=1),
            node("b", "p", x=RunRef("a")),
        ])
        assert ready_ids(g) == ["b"]
        assert finishable_ids(g) == []
        g.resolve("b", 2)
        assert finishable_ids(g) == ["p"]
        assert g.output_structure(g.nodes["p"]) == [1, 2]

    def test_await_node_whose_refs_are_all_resolved_is_finishable_at_once(self):
        g = Graph()
        g.add([Node("p", None, mode=AWAIT, state=RUNNING, output_template=RunRef("a")),
               Node("a", "p", state=RESOLVED, output=1)])
        assert finishable_ids(g) == ["p"]

    def test_pop_finishable_empties_the_queue(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", 1, [])
        assert finishable_ids(g) == ["p"]
        assert finishable_ids(g) == []


class TestFail:
    def test_failing_a_root_run(self):
        g = Graph()
        g.add([node("a")])
        assert g.fail("a") == ["a"]
        assert g.nodes["a"].state == FAILED

    def test_fail_fails_the_parent_chain_innermost_first(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", RunRef("x"), [node("x", "p"), node("sibling", "p")])
        g.set_state("x", RUNNING)
        g.expand("x", RunRef("x1"), [node("x1", "x")])
        g.set_state("x1", RUNNING)
        assert g.fail("x1") == ["x1", "x", "p"]
        assert {k: n.state for k, n in g.nodes.items()} == {
            "p": FAILED, "x": FAILED, "x1": FAILED, "sibling": CREATED}

    def test_fail_stops_at_an_ancestor_that_already_ended(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", [RunRef("a"), RunRef("b")], [node("a", "p"), node("b", "p")])
        assert g.fail("a") == ["a", "p"]
        assert g.fail("b") == ["b"]  # a second failure in flight: its parent already failed

    def test_failing_a_run_that_already_ended_does_nothing(self):
        g = Graph()
        g.add([node("a"), node("b")])
        g.resolve("a", 1)
        g.set_state("b", CANCELED)
        assert g.fail("a") == []
        assert g.fail("b") == []
        assert g.nodes["a"].state == RESOLVED and g.nodes["b"].state == CANCELED

    def test_fail_does_not_touch_consumers(self):
        g = Graph()
        g.add([node("a"), node("b", x=RunRef("a"))])
        g.fail("a")
        assert g.nodes["b"].state == CREATED
        assert ready_ids(g) == ["a"]


class TestCancel:
    def test_cancel_unfinished_cancels_every_run_not_in_a_final_state(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        g.expand("p", [RunRef("a"), RunRef("b"), RunRef("c"), RunRef("d"), RunRef("e")],
                 [node("a", "p"), node("b", "p"), node("c", "p"), node("d", "p"), node("e", "p", x=RunRef("a"))])
        g.resolve("a", 1)
        g.set_state("c", RUNNING)
        g.set_state("d", SCHEDULED)
        g.fail("b")  # fails b and p
        assert sorted(g.cancel_unfinished()) == ["c", "d", "e"]
        assert {k: n.state for k, n in g.nodes.items()} == {
            "p": FAILED, "a": RESOLVED, "b": FAILED, "c": CANCELED, "d": CANCELED, "e": CANCELED}
        assert g.cancel_unfinished() == []

    def test_cancel_unfinished_empties_both_queues(self):
        g = Graph()
        g.add([node("p"), node("q")])
        g.set_state("p", RUNNING)
        g.expand("p", 1, [])
        assert sorted(g.cancel_unfinished()) == ["p", "q"]
        assert ready_ids(g) == [] and finishable_ids(g) == []


class TestErrors:
    def test_adding_a_run_twice_raises(self):
        g = Graph()
        g.add([node("a")])
        with pytest.raises(ValueError, match="already in the graph"):
            g.add([node("a")])

    def test_adding_a_run_twice_in_one_batch_raises(self):
        with pytest.raises(ValueError, match="already in the graph"):
            Graph().add([node("a"), node("a")])

    def test_expanding_with_a_known_child_raises(self):
        g = Graph()
        g.add([node("p"), node("a")])
        g.set_state("p", RUNNING)
        with pytest.raises(ValueError, match="already in the graph"):
            g.expand("p", RunRef("a"), [node("a", "p")])

    def test_depending_on_an_unknown_run_raises(self):
        with pytest.raises(ValueError, match="depends on unknown run nope"):
            Graph().add([node("a", x=[RunRef("nope")])])

    def test_a_dependency_must_be_added_before_or_with_its_dependent(self):
        g = Graph()
        with pytest.raises(ValueError, match="unknown run a"):
            g.add([node("b", x=RunRef("a"))])

    def test_a_template_ref_to_an_unknown_run_raises(self):
        g = Graph()
        g.add([node("p")])
        g.set_state("p", RUNNING)
        with pytest.raises(ValueError, match="unknown run ghost"):
            g.expand("p", RunRef("ghost"), [])


class TestGraphProperties:
    @settings(max_examples=200, deadline=None)
    @given(dag=dags(), data=st.data())
    def test_every_run_becomes_ready_once_after_all_its_dependencies(self, dag, data):
        deps = {name: {f"n{d}" for d in ds} for name, ds in dag}
        nodes = [node(name, x=wrap([RunRef(f"n{d}") for d in ds], len(ds)), y=[RunRef(f"n{d}") for d in ds[:1]])
                 for name, ds in dag]
        # add in batches, each in shuffled order, every batch after the batches it depends on
        rng = data.draw(st.randoms(use_true_random=False), label="rng")
        cut = sorted(data.draw(st.sets(st.integers(1, len(nodes)), max_size=3), label="cuts") | {len(nodes)})
        g = Graph()
        start = 0
        pending: list[str] = []
        popped: list[str] = []
        for end in cut:
            batch = nodes[start:end]
            rng.shuffle(batch)
            g.add(batch)
            start = end
            # resolve a few ready runs between batches, in a random order
            pending += ready_ids(g)
            for _ in range(rng.randrange(len(pending) + 1)):
                x = pending.pop(rng.randrange(len(pending)))
                assert all(g.nodes[d].state == RESOLVED for d in deps[x])
                popped.append(x)
                g.resolve(x, x)
        while True:
            pending += ready_ids(g)
            if not pending:
                break
            x = pending.pop(rng.randrange(len(pending)))
            assert all(g.nodes[d].state == RESOLVED for d in deps[x]), f"{x} was ready too early"
            popped.append(x)
            g.resolve(x, x)
        assert sorted(popped) == sorted(deps), "every run became ready exactly once"
        assert all(n.waiting == 0 and n.dependents == [] for n in g.nodes.values())


class TestScale:
    N = 10_000

    @pytest.mark.timeout(60)
    def test_fan_out_fan_in_of_ten_thousand_runs(self):
        n = self.N
        g = Graph()
        g.add([node("root")])
        assert ready_ids(g) == ["root"]
        g.set_state("root", RUNNING)
        mids = [f"m{i}" for i in range(n)]
        children = ([node("src", "root")] + [node(m, "root", x=RunRef("src")) for m in mids]
                    + [node("sink", "root", xs=[RunRef(m) for m in mids])])
        g.expand("root", RunRef("sink"), children)
        assert ready_ids(g) == ["src"]
        g.resolve("src", 0)
        ready = g.pop_ready()
        assert [x.run_id for x in ready] == mids
        for i, x in enumerate(ready):
            assert g.nodes["sink"].waiting == n - i
            g.resolve(x.run_id, i)
        assert ready_ids(g) == ["sink"]
        assert g.inputs(g.nodes["sink"])["xs"] == list(range(n))
        g.resolve("sink", n)
        assert finishable_ids(g) == ["root"]

    @pytest.mark.timeout(60)
    def test_a_chain_of_ten_thousand_runs(self):
        g = Graph()
        g.add([node("c0")] + [node(f"c{i}", x=RunRef(f"c{i - 1}")) for i in range(1, self.N)])
        for i in range(self.N):
            assert ready_ids(g) == [f"c{i}"]
            g.resolve(f"c{i}", i)
        assert ready_ids(g) == []

    @pytest.mark.timeout(60)
    def test_failing_ten_thousand_levels_deep(self):
        g = Graph()
        g.add([node("d0")])
        for i in range(1, self.N):
            g.set_state(f"d{i - 1}", RUNNING)
            g.expand(f"d{i - 1}", RunRef(f"d{i}"), [node(f"d{i}", f"d{i - 1}")])
        failed = g.fail(f"d{self.N - 1}")
        assert failed == [f"d{i}" for i in reversed(range(self.N))]


# =============================================================================================
# 3. template helpers
# =============================================================================================


class TestTemplateOf:
    def test_a_future_becomes_a_run_ref(self):
        fut = inc(1)
        seen = []
        assert template_of(fut, seen.append) == (RunRef(fut.id), True)
        assert seen == [fut]

    @pytest.mark.parametrize("value", [1, "s", None, [1, 2], (1, [2]), {"k": [1, (2,)]}, [], {}, ()],
                             ids=repr)
    def test_a_value_without_futures_is_returned_as_is(self, value):
        seen = []
        template, has_refs = template_of(value, seen.append)
        assert template is value
        assert has_refs is False
        assert seen == []

    def test_futures_in_a_list(self):
        fut = inc(1)
        plain = [1, 2]
        template, has_refs = template_of([plain, fut, 3], lambda _: None)
        assert has_refs is True
        assert shape(template) == shape([[1, 2], RunRef(fut.id), 3])
        assert template[0] is plain

    def test_futures_in_a_tuple_keep_the_tuple(self):
        fut = inc(1)
        template, _ = template_of((fut, "x"), lambda _: None)
        assert shape(template) == shape((RunRef(fut.id), "x"))

    def test_futures_in_a_dict_keep_keys_and_order(self):
        fut = inc(1)
        plain = {"z": [1]}
        template, _ = template_of({"b": fut, 3: plain, None: "n"}, lambda _: None)
        assert list(template) == ["b", 3, None]
        assert shape(template) == shape({"b": RunRef(fut.id), 3: {"z": [1]}, None: "n"})
        assert template[3] is plain

    def test_deeply_nested_futures_and_untouched_subtrees(self):
        a, b = inc(1), inc(2)
        c = add(a, b)
        untouched = ([1], {"k": (2, 3)})
        value = {"xs": [untouched, (a, {"deep": [b]})], "c": c, "same": untouched}
        seen = []
        template, has_refs = template_of(value, seen.append)
        assert has_refs is True
        assert seen == [a, b, c], "on_future is called once per Future, depth first, in order"
        assert shape(template) == shape(
            {"xs": [untouched, (RunRef(a.id), {"deep": [RunRef(b.id)]})], "c": RunRef(c.id), "same": untouched})
        assert template["xs"][0] is untouched
        assert template["same"] is untouched
        assert value["xs"][1][0] is a, "the input value is not modified"

    def test_nested_futures_in_a_futures_arguments_are_not_visited(self):
        a = inc(1)
        b = inc(a)
        seen = []
        assert template_of([b], seen.append) == ([RunRef(b.id)], True)
        assert seen == [b]

    def test_a_future_appearing_twice_is_reported_twice(self):
        a = inc(1)
        seen = []
        template, _ = template_of([a, {"k": a}], seen.append)
        assert template == [RunRef(a.id), {"k": RunRef(a.id)}]
        assert seen == [a, a]


class TestRefsIn:
    def test_refs_in_finds_every_ref_in_order_with_repeats(self):
        template = {"a": [RunRef("x"), (1, RunRef("y"))], "b": RunRef("x"), "c": "run"}
        assert list(refs_in(template)) == ["x", "y", "x"]

    @pytest.mark.parametrize("template", [1, None, "x", [], {}, ("x",), {"run": "x"}], ids=repr)
    def test_values_have_no_refs(self, template):
        assert list(refs_in(template)) == []


class TestSubstitute:
    def test_substitute_replaces_refs_and_keeps_containers(self):
        template = {"a": [RunRef("x"), (RunRef("y"), 3)], "b": "lit", 1: RunRef("x")}
        out = substitute(template, {"x": 10, "y": 20}.__getitem__)
        assert shape(out) == shape({"a": [10, (20, 3)], "b": "lit", 1: 10})

    def test_substitute_a_bare_ref_and_a_bare_value(self):
        assert substitute(RunRef("x"), lambda r: r.upper()) == "X"
        assert substitute(5, lambda r: 1 / 0) == 5

    def test_substituted_values_are_not_traversed(self):
        out = substitute([RunRef("x")], lambda _: [RunRef("y")])
        assert out == [[RunRef("y")]]

    def test_substitute_does_not_modify_the_template(self):
        template = [RunRef("x")]
        substitute(template, lambda _: 1)
        assert template == [RunRef("x")]


class TestMapLeaves:
    def test_map_leaves_applies_fn_to_value_leaves_only(self):
        template = {"a": [1, RunRef("x"), (2, "s")], "b": None}
        seen = []

        def fn(v):
            seen.append(v)
            return ("leaf", v)

        out = map_leaves(template, fn)
        assert shape(out) == shape({"a": [("leaf", 1), RunRef("x"), (("leaf", 2), ("leaf", "s"))], "b": ("leaf", None)})
        assert seen == [1, 2, "s", None]

    def test_map_leaves_on_a_bare_leaf_and_a_bare_ref(self):
        assert map_leaves(3, str) == "3"
        assert map_leaves(RunRef("x"), str) == RunRef("x")
        assert type(map_leaves(RunRef("x"), str)) is RunRef

    def test_empty_containers_stay_containers(self):
        assert shape(map_leaves([[], (), {}], str)) == shape([[], (), {}])


class TestJson:
    @staticmethod
    def round_trip(template: Any) -> Any:
        leaves: dict[str, Any] = {}

        def leaf_id(v: Any) -> str:
            key = f"art-{len(leaves)}"
            leaves[key] = v
            return key

        doc = json.loads(json.dumps(to_json(template, leaf_id)))  # survives real JSON
        return from_json(doc, leaves.__getitem__)

    @pytest.mark.parametrize("template", [
        RunRef("r1"),
        "value",
        [RunRef("a"), 1, [], ()],
        (RunRef("a"), (RunRef("b"),)),
        {"s": RunRef("a"), 3: [1], 2.5: (None,), True: {}, None: "n"},
        {"deep": [({"x": [RunRef("a"), RunRef("a")]},)]},
    ], ids=["ref", "leaf", "list", "tuple", "dict-scalar-keys", "deep"])
    def test_round_trip(self, template):
        assert shape(self.round_trip(template)) == shape(template)

    def test_to_json_format(self):
        template = {"k": [RunRef("a"), (1,)]}
        assert to_json(template, lambda v: f"id{v}") == jdict(("k", jlist(ref("a"), jtuple(art("id1")))))

    @pytest.mark.parametrize("key", [(1, 2), frozenset(), b"bytes"], ids=repr)
    def test_to_json_rejects_dict_keys_json_cannot_carry(self, key):
        with pytest.raises(TypeError, match="dict keys"):
            to_json({key: RunRef("a")}, str)

    def test_from_json_rejects_something_else(self):
        with pytest.raises(ValueError, match="not a template"):
            from_json({"nope": 1}, str)

    def test_json_refs(self):
        doc = jdict(("a", jlist(ref("x"), art("v"), jtuple(ref("y")))), ("b", ref("x")))
        assert list(json_refs(doc)) == ["x", "y", "x"]

    @pytest.mark.parametrize("doc", [None, {}, art("v"), jlist(), jdict(("k", art("v")))], ids=repr)
    def test_json_refs_without_refs(self, doc):
        assert list(json_refs(doc)) == []

    def test_remap_json(self):
        doc = jdict(("a", jlist(ref("x"), art("x"), jtuple(ref("y")))), (1, ref("x")))
        out = remap_json(doc, {"x": "X", "y": "Y"})
        assert out == jdict(("a", jlist(ref("X"), art("x"), jtuple(ref("Y")))), (1, ref("X")))
        assert doc == jdict(("a", jlist(ref("x"), art("x"), jtuple(ref("y")))), (1, ref("x"))), "not modified"

    def test_remap_json_of_none_and_values(self):
        assert remap_json(None, {}) is None
        assert remap_json(art("a"), {}) == art("a")

    def test_remap_json_of_an_unmapped_run_raises(self):
        with pytest.raises(KeyError):
            remap_json(jlist(ref("gone")), {})

    def test_json_helpers_agree_with_in_memory_helpers(self):
        template = {"a": [RunRef("x"), 1, (RunRef("y"),)], "b": RunRef("z")}
        doc = to_json(template, str)
        assert list(json_refs(doc)) == list(refs_in(template))
        ids = {"x": "X", "y": "Y", "z": "Z"}
        remapped = from_json(remap_json(doc, ids), int)
        assert shape(remapped) == shape(substitute(template, lambda r: RunRef(ids[r])))


# =============================================================================================
# 4. plan_rerun: scenarios
# =============================================================================================


def flat_pipeline(state_of: dict[str, str] | None = None) -> list[Rec]:
    """P: a = A(); b = B(a); c = C(b); d = D(); return [c, d]."""
    s = state_of or {}
    return [
        rec("P", out=jlist(ref("C"), ref("D")), state=s.get("P", RESOLVED)),
        rec("A", "P", x=art("a0"), state=s.get("A", RESOLVED)),
        rec("B", "P", x="A", state=s.get("B", RESOLVED)),
        rec("C", "P", x="B", state=s.get("C", RESOLVED)),
        rec("D", "P", x=art("d0"), state=s.get("D", RESOLVED)),
    ]


def nested_pipeline() -> list[Rec]:
    """P: x = X(); return Y(x).   X: return X2(X1()).   Y(v): return Y1(v)."""
    return [
        rec("P", out="Y"),
        rec("X", "P", out="X2"),
        rec("X1", "X", v=art("one")),
        rec("X2", "X", v="X1"),
        rec("Y", "P", out="Y1", v="X"),
        rec("Y1", "Y", v=art("x-value")),
    ]


def deep_pipeline() -> list[Rec]:
    """Three levels, with consumers of the target's ancestors at every level.

    P: w = W(); z = Z(w); q = Q(z); k = K(); return [q, k]
    W: v = V(); u = U(v); return (v, u)      V: return V2(V1())       U(v): return U1(v)
    Z(w): return Z1(w)
    """
    return [
        rec("P", out=jlist(ref("Q"), ref("K"))),
        rec("W", "P", out=jtuple(ref("V"), ref("U"))),
        rec("V", "W", out="V2"),
        rec("V1", "V"),
        rec("V2", "V", a="V1"),
        rec("U", "W", out="U1", v="V"),
        rec("U1", "U", v=art("v")),
        rec("Z", "P", out="Z1", w="W"),
        rec("Z1", "Z", w=art("w")),
        rec("Q", "P", z="Z"),
        rec("K", "P"),
    ]


class TestPlanFlat:
    @pytest.mark.parametrize(("target", "expected"), [
        ("B", {"P": AWAIT, "A": REUSE, "B": EXECUTE, "C": EXECUTE, "D": REUSE}),
        ("A", {"P": AWAIT, "A": EXECUTE, "B": EXECUTE, "C": EXECUTE, "D": REUSE}),
        ("C", {"P": AWAIT, "A": REUSE, "B": REUSE, "C": EXECUTE, "D": REUSE}),
        ("D", {"P": AWAIT, "A": REUSE, "B": REUSE, "C": REUSE, "D": EXECUTE}),
    ])
    def test_rerun_from_a_step_resets_it_its_parent_and_downstream(self, target, expected):
        assert actions(plan(flat_pipeline(), target)) == expected

    def test_reused_runs_keep_their_inputs_and_awaited_runs_their_output(self):
        p = plan(flat_pipeline(), "B")
        new = {old: x.new_id for old, x in p.items()}
        assert p["A"].input_refs == {"x": art("a0")}
        assert p["B"].input_refs == {"x": ref(new["A"])}
        assert p["C"].input_refs == {"x": ref(new["B"])}
        assert p["P"].output_ref == jlist(ref(new["C"]), ref(new["D"]))
        assert p["A"].output_ref is None and p["B"].output_ref is None

    def test_rerun_from_the_root_executes_only_the_root(self):
        p = plan(flat_pipeline(), "P")
        assert actions(p) == {"P": EXECUTE}
        assert p["P"].output_ref is None
        assert p["P"].new_parent_id is None


class TestPlanNested:
    def test_rerun_from_a_nested_run(self):
        p = plan(nested_pipeline(), "X1")
        assert actions(p) == {"P": AWAIT, "X": AWAIT, "X1": EXECUTE, "X2": EXECUTE, "Y": EXECUTE}
        assert "Y1" not in p, "nested runs of a reset downstream run are re-created, not kept"
        assert p["X"].output_ref == ref(p["X2"].new_id)
        assert p["Y"].input_refs == {"v": ref(p["X"].new_id)}

    def test_rerun_from_a_composition_drops_its_nested_runs(self):
        assert actions(plan(nested_pipeline(), "X")) == {"P": AWAIT, "X": EXECUTE, "Y": EXECUTE}

    def test_rerun_from_the_last_nested_run(self):
        assert actions(plan(nested_pipeline(), "X2")) == {
            "P": AWAIT, "X": AWAIT, "X1": REUSE, "X2": EXECUTE, "Y": EXECUTE}

    def test_rerun_from_a_downstream_composition_reuses_upstream_nested_runs(self):
        assert actions(plan(nested_pipeline(), "Y")) == {
            "P": AWAIT, "X": REUSE, "X1": REUSE, "X2": REUSE, "Y": EXECUTE}

    def test_rerun_from_a_run_nested_under_a_downstream_composition(self):
        assert actions(plan(nested_pipeline(), "Y1")) == {
            "P": AWAIT, "X": REUSE, "X1": REUSE, "X2": REUSE, "Y": AWAIT, "Y1": EXECUTE}

    def test_rerun_from_the_root_drops_everything_else(self):
        assert actions(plan(nested_pipeline(), "P")) == {"P": EXECUTE}

    def test_downstream_of_every_ancestor_is_reset(self):
        assert actions(plan(deep_pipeline(), "V1")) == {
            "P": AWAIT,
            "W": AWAIT,
            "V": AWAIT, "V1": EXECUTE, "V2": EXECUTE,
            "U": EXECUTE,  # consumes V (the target's parent); U1 dropped
            "Z": EXECUTE,  # consumes W (the target's grandparent); Z1 dropped
            "Q": EXECUTE,  # downstream of Z
            "K": REUSE,
        }

    def test_a_sibling_composition_that_is_not_downstream_keeps_its_nested_runs(self):
        assert actions(plan(deep_pipeline(), "U1")) == {
            "P": AWAIT, "W": AWAIT, "V": REUSE, "V1": REUSE, "V2": REUSE, "U": AWAIT, "U1": EXECUTE,
            "Z": EXECUTE, "Q": EXECUTE, "K": REUSE}

    def test_every_input_shape_carries_a_dependency(self):
        runs = [
            rec("P", out=jtuple(ref("L"), ref("T"), ref("M"), ref("N"))),
            rec("A", "P"),
            rec("L", "P", xs=jlist(art("v"), ref("A"))),
            rec("T", "P", xs=jtuple(jlist(ref("A")))),
            rec("M", "P", xs=jdict(("k", art("v")), (7, jlist(ref("A"))))),
            rec("N", "P", xs=art("independent")),
        ]
        assert actions(plan(runs, "A")) == {
            "P": AWAIT, "A": EXECUTE, "L": EXECUTE, "T": EXECUTE, "M": EXECUTE, "N": REUSE}

    def test_a_run_consuming_one_output_twice(self):
        runs = [rec("P", out="B"), rec("A", "P"), rec("B", "P", x="A", y=jlist(ref("A"), ref("A")))]
        p = plan(runs, "A")
        assert actions(p) == {"P": AWAIT, "A": EXECUTE, "B": EXECUTE}
        a = p["A"].new_id
        assert p["B"].input_refs == {"x": ref(a), "y": jlist(ref(a), ref(a))}


class TestPlanCacheHits:
    def cached_pipeline(self) -> list[Rec]:
        """P: a = A(); h = H(a) (a cache hit: resolved, never expanded); return C(h).
        X: return X1(); X's H2 is a cache hit nested one level down."""
        return [
            rec("P", out=jlist(ref("C"), ref("X"))),
            rec("A", "P"),
            rec("H", "P", a="A"),  # a composition resolved from the cache: no nested runs, no output_ref
            rec("C", "P", h="H"),
            rec("X", "P", out=jlist(ref("X1"), ref("H2"))),
            rec("X1", "X"),
            rec("H2", "X", x="X1"),
        ]

    def test_cache_hits_not_downstream_are_reused_as_is(self):
        p = plan(self.cached_pipeline(), "C")
        assert actions(p) == {"P": AWAIT, "A": REUSE, "H": REUSE, "C": EXECUTE, "X": REUSE, "X1": REUSE,
                              "H2": REUSE}
        assert p["H"].output_ref is None

    def test_a_cache_hit_downstream_of_the_target_executes(self):
        assert actions(plan(self.cached_pipeline(), "A")) == {
            "P": AWAIT, "A": EXECUTE, "H": EXECUTE, "C": EXECUTE, "X": REUSE, "X1": REUSE, "H2": REUSE}

    def test_rerun_from_a_cache_hit(self):
        assert actions(plan(self.cached_pipeline(), "H")) == {
            "P": AWAIT, "A": REUSE, "H": EXECUTE, "C": EXECUTE, "X": REUSE, "X1": REUSE, "H2": REUSE}

    def test_rerun_from_a_nested_cache_hit(self):
        assert actions(plan(self.cached_pipeline(), "H2")) == {
            "P": AWAIT, "A": REUSE, "H": REUSE, "C": REUSE, "X": AWAIT, "X1": REUSE, "H2": EXECUTE}


class TestPlanContinue:
    def failed_resolution(self) -> list[Rec]:
        """P: a = A(); x = X(a); y = Y(x); d = D(); z = Z(); return [y, d, z]

        X expanded to X1 (resolved) and X2 (failed); so X and P failed. Y never ran (canceled);
        D was waiting for a free slot (canceled); Z, a composition, had resolved.
        """
        return [
            rec("P", state=FAILED, out=jlist(ref("Y"), ref("D"), ref("Z"))),
            rec("A", "P"),
            rec("X", "P", state=FAILED, out="X2", a="A"),
            rec("X1", "X"),
            rec("X2", "X", state=FAILED, v="X1"),
            rec("Y", "P", state=CANCELED, x="X"),
            rec("D", "P", state=CANCELED),
            rec("Z", "P", out="Z1"),
            rec("Z1", "Z"),
        ]

    def test_continue_resets_only_what_did_not_resolve(self):
        p = plan(self.failed_resolution(), "P", "continue")
        assert actions(p) == {
            "P": AWAIT, "A": REUSE,
            "X": AWAIT, "X1": REUSE, "X2": EXECUTE,  # an expanded composition awaits its nested runs
            "Y": EXECUTE, "D": EXECUTE,  # canceled runs run
            "Z": REUSE, "Z1": REUSE,
        }
        assert p["X"].output_ref == ref(p["X2"].new_id)
        assert p["X2"].input_refs == {"v": ref(p["X1"].new_id)}

    def test_continue_after_a_composition_failed_in_its_own_body(self):
        runs = [
            rec("P", state=FAILED, out=jlist(ref("X"), ref("B"))),
            rec("A", "P"),
            rec("X", "P", state=FAILED, a="A"),  # raised before returning: no output_ref, no nested runs
            rec("B", "P", state=CANCELED, x="X"),
        ]
        assert actions(plan(runs, "P", "continue")) == {"P": AWAIT, "A": REUSE, "X": EXECUTE, "B": EXECUTE}

    def test_continue_a_canceled_composition_that_had_expanded(self):
        runs = [
            rec("P", state=FAILED, out=jlist(ref("F"), ref("X"))),
            rec("F", "P", state=FAILED),
            rec("X", "P", state=CANCELED, out=jlist(ref("X1"), ref("X2"), ref("X3"))),
            rec("X1", "X"),
            rec("X2", "X", state=CANCELED),
            rec("X3", "X", state=CANCELED, v="X1"),
        ]
        assert actions(plan(runs, "P", "continue")) == {
            "P": AWAIT, "F": EXECUTE, "X": AWAIT, "X1": REUSE, "X2": EXECUTE, "X3": EXECUTE}

    def test_continue_a_composition_that_failed_after_its_nested_runs_resolved(self):
        """E.g. its returned structure failed the output type check: nothing nested is re-run."""
        runs = [rec("P", state=FAILED, out="X"), rec("X", "P", state=FAILED, out="X1"), rec("X1", "X")]
        assert actions(plan(runs, "P", "continue")) == {"P": AWAIT, "X": AWAIT, "X1": REUSE}

    def test_continue_a_failed_plain_root(self):
        p = plan([rec("P", state=FAILED, x=art("v"))], "P", "continue")
        assert actions(p) == {"P": EXECUTE}
        assert p["P"].input_refs == {"x": art("v")}

    def test_continue_a_root_that_failed_before_expanding(self):
        runs = [rec("P", state=FAILED)]
        assert actions(plan(runs, "P", "continue")) == {"P": EXECUTE}

    def test_continue_after_an_interruption_resets_unfinished_states(self):
        runs = [
            rec("P", state=RUNNING, out=jlist(ref("A"), ref("B"), ref("C"), ref("D"))),
            rec("A", "P", state=RUNNING),
            rec("B", "P", state=SCHEDULED),
            rec("C", "P", state=CREATED),
            rec("D", "P"),
        ]
        assert actions(plan(runs, "P", "continue")) == {
            "P": AWAIT, "A": EXECUTE, "B": EXECUTE, "C": EXECUTE, "D": REUSE}

    def test_continue_a_resolution_that_resolved_reuses_everything(self):
        assert actions(plan(nested_pipeline(), "P", "continue")) == {
            "P": REUSE, "X": REUSE, "X1": REUSE, "X2": REUSE, "Y": REUSE, "Y1": REUSE}

    def test_continue_takes_the_root_run_id(self):
        with pytest.raises(ValueError, match="not a root run"):
            plan_rerun(self.failed_resolution(), "X", "continue", new_ids())


class TestPlanFromAfterAFailure:
    def test_an_unrelated_failed_run_is_reset_too(self):
        runs = flat_pipeline({"P": FAILED, "D": FAILED})
        assert actions(plan(runs, "B")) == {"P": AWAIT, "A": REUSE, "B": EXECUTE, "C": EXECUTE, "D": EXECUTE}

    def test_canceled_runs_are_never_reused(self):
        runs = flat_pipeline({"P": FAILED, "B": FAILED, "C": CANCELED})
        assert actions(plan(runs, "D")) == {"P": AWAIT, "A": REUSE, "B": EXECUTE, "C": EXECUTE, "D": EXECUTE}

    def test_an_unrelated_failure_inside_a_composition(self):
        runs = [
            rec("P", state=FAILED, out=jlist(ref("A"), ref("X"), ref("Y"))),
            rec("A", "P"),
            rec("X", "P", state=FAILED, out=jlist(ref("X1"), ref("X2"))),
            rec("X1", "X"),
            rec("X2", "X", state=FAILED),
            rec("Y", "P", state=CANCELED, x="X"),
        ]
        assert actions(plan(runs, "A")) == {
            "P": AWAIT, "A": EXECUTE, "X": AWAIT, "X1": REUSE, "X2": EXECUTE, "Y": EXECUTE}

    def test_failed_runs_under_the_target_are_dropped_with_it(self):
        runs = [
            rec("P", state=FAILED, out="X"),
            rec("X", "P", state=FAILED, out="X1"),
            rec("X1", "X", state=FAILED),
        ]
        assert actions(plan(runs, "X")) == {"P": AWAIT, "X": EXECUTE}

    def test_rerun_from_the_failed_run_itself(self):
        runs = flat_pipeline({"P": FAILED, "B": FAILED, "C": CANCELED})
        assert actions(plan(runs, "B")) == {"P": AWAIT, "A": REUSE, "B": EXECUTE, "C": EXECUTE, "D": REUSE}


class TestPlanIdsAndOrder:
    def test_every_kept_run_gets_a_fresh_id_and_refs_follow(self):
        p = plan(deep_pipeline(), "V1")
        new = {old: x.new_id for old, x in p.items()}
        assert new == {old: f"new{i}" for i, old in enumerate(p, start=1)}, "ids come from new_id, in plan order"
        assert p["P"].new_parent_id is None
        assert p["W"].new_parent_id == new["P"]
        assert p["V1"].new_parent_id == new["V"]
        assert p["P"].output_ref == jlist(ref(new["Q"]), ref(new["K"]))
        assert p["W"].output_ref == jtuple(ref(new["V"]), ref(new["U"]))
        assert p["V2"].input_refs == {"a": ref(new["V1"])}
        assert p["U"].input_refs == {"v": ref(new["V"])}
        assert p["Z"].input_refs == {"w": ref(new["W"])}
        assert p["Q"].input_refs == {"z": ref(new["Z"])}

    def test_plan_order_is_parents_before_children_depth_first(self):
        planned = plan_rerun(deep_pipeline(), "K", "from", new_ids())
        assert [x.old_id for x in planned] == ["P", "W", "V", "V1", "V2", "U", "U1", "Z", "Z1", "Q", "K"]

    def test_parents_come_first_whatever_the_order_of_the_records(self):
        runs = list(reversed(deep_pipeline()))
        planned = plan_rerun(runs, "V1", "from", new_ids())
        check_well_formed(runs, planned)
        rng = random.Random(4)
        for _ in range(20):
            rng.shuffle(runs)
            check_well_formed(runs, plan_rerun(runs, "U1", "from", new_ids()))

    def test_dropped_runs_are_absent_and_execute_runs_have_no_output_ref(self):
        planned = plan_rerun(deep_pipeline(), "W", "from", new_ids())
        assert {x.old_id for x in planned} == {"P", "W", "Z", "Q", "K"}
        assert all(x.output_ref is None for x in planned if x.action == EXECUTE)
        assert {x.old_id for x in planned if x.action == EXECUTE} == {"W", "Z", "Q"}

    def test_runs_may_be_any_iterable_and_input_refs_may_be_none(self):
        runs = [Rec("P", None, RESOLVED, None, ref("A")), Rec("A", "P", RESOLVED, None, None)]
        planned = plan_rerun(iter(runs), "A", "from", new_ids())
        assert [(x.old_id, x.action, x.input_refs) for x in planned] == [("P", AWAIT, {}), ("A", EXECUTE, {})]

    def test_the_input_runs_are_not_modified(self):
        runs = deep_pipeline()
        before = repr(runs)
        plan_rerun(runs, "V1", "from", new_ids())
        assert repr(runs) == before

    def test_planned_runs_are_immutable(self):
        planned = plan_rerun(flat_pipeline(), "A", "from", new_ids())
        with pytest.raises(AttributeError):
            planned[0].action = REUSE  # type: ignore[misc]


class TestPlanErrors:
    def test_an_unknown_run_id(self):
        with pytest.raises(LookupError, match="no run nope"):
            plan_rerun(flat_pipeline(), "nope", "from", new_ids())

    def test_an_unknown_run_id_in_continue_mode(self):
        with pytest.raises(LookupError):
            plan_rerun(flat_pipeline(), "nope", "continue", new_ids())

    @pytest.mark.parametrize("mode", ["", "FROM", "restart", None])
    def test_a_bad_mode(self, mode):
        with pytest.raises(ValueError, match="rerun mode"):
            plan_rerun(flat_pipeline(), "B", mode, new_ids())

    def test_continue_from_a_nested_run(self):
        with pytest.raises(ValueError, match="root"):
            plan_rerun(flat_pipeline({"P": FAILED, "B": FAILED}), "B", "continue", new_ids())


# =============================================================================================
# 5. plan_rerun: properties on simulated resolutions
# =============================================================================================



class TestSimulator:
    """The generator must produce the kind of records the resolution loop writes."""

    def test_a_resolution_that_resolves(self):
        program = Call((), (Call(), Call((0,), (Call(), Call((0,)))), Call((1,), cached=True)))
        runs = {r.id: r for r in simulate(program, random.Random(0))}
        assert {k: r.state for k, r in runs.items()} == dict.fromkeys(["r", "r.0", "r.1", "r.1.0", "r.1.1", "r.2"],
                                                                       RESOLVED)
        assert runs["r"].output_ref == ref("r.2")
        assert runs["r.1"].output_ref == ref("r.1.1")
        assert runs["r.2"].output_ref is None and runs["r.2"].input_refs == {"p0": ref("r.1"), "const": art("k")}

    def test_a_resolution_that_fails(self):
        program = Call((), (Call(), Call((0,), (Call(), Call((0,)))), Call((1,))))
        runs = {r.id: r.state for r in simulate(program, random.Random(0), frozenset({"r.1.1"}))}
        assert runs == {"r": FAILED, "r.0": RESOLVED, "r.1": FAILED, "r.1.0": RESOLVED, "r.1.1": FAILED,
                        "r.2": CANCELED}


class TestPlanProperties:
    @PROPERTY_SETTINGS
    @given(runs=resolutions(), data=st.data())
    def test_rerun_from_any_run(self, runs, data):
        target = data.draw(st.sampled_from([r.id for r in runs]), label="target")
        planned = plan_rerun(runs, target, "from", new_ids())
        check_well_formed(runs, planned)
        check_invariants(runs, planned, target, "from")
        assert {p.old_id: p.action for p in planned} == oracle(runs, target)

    @PROPERTY_SETTINGS
    @given(runs=resolutions())
    def test_continue_from_the_root(self, runs):
        planned = plan_rerun(runs, "r", "continue", new_ids())
        check_well_formed(runs, planned)
        check_invariants(runs, planned, "r", "continue")
        assert {p.old_id: p.action for p in planned} == oracle(runs, None)

    @PROPERTY_SETTINGS
    @given(runs=resolutions(), data=st.data())
    def test_a_plan_can_be_loaded_into_a_graph_and_driven_to_the_end(self, runs, data):
        """What the rerun's resolution loop does with a plan: it must never get stuck."""
        mode = data.draw(st.sampled_from(["from", "continue"]), label="mode")
        target = "r" if mode == "continue" else data.draw(st.sampled_from([r.id for r in runs]), label="target")
        planned = plan_rerun(runs, target, mode, new_ids())
        g = Graph()
        g.add([
            Node(p.new_id, p.new_parent_id, state=RESOLVED) if p.action == REUSE else
            Node(p.new_id, p.new_parent_id, mode=AWAIT, state=RUNNING, output_template=from_json(p.output_ref, str))
            if p.action == AWAIT else
            Node(p.new_id, p.new_parent_id, inputs={k: from_json(t, str) for k, t in p.input_refs.items()})
            for p in planned
        ])
        root = g.nodes[planned[0].new_id]
        while root.state != RESOLVED:
            finishable, ready = g.pop_finishable(), g.pop_ready()
            assert finishable or ready, "the rerun is stuck"
            for n in finishable + ready:
                g.resolve(n.run_id, None)  # an EXECUTE composition would expand; irrelevant here
        assert all(n.state == RESOLVED for n in g.nodes.values())


def test_state_changes_follow_the_transitions_listed_in_graph():
    from sematic_k8s.graph import RUNNING as _RUNNING
    from sematic_k8s.graph import TRANSITIONS

    g = Graph()
    g.add([node("a")])
    g.resolve("a", 1)
    assert _RUNNING not in TRANSITIONS["resolved"]
    with pytest.raises(ValueError, match="cannot go from resolved to running"):
        g.set_state("a", _RUNNING)
