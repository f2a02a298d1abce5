// model.js: a graph response read into runs by id, nesting and edges.

import assert from "node:assert/strict";
import { test } from "node:test";

import { edgesOf, graphModel } from "../../../server/sematic_k8s_server/static/model.js";
import { graph, run } from "./graphs.mjs";

const ids = (runs) => runs.map((r) => r.id);

test("edges come from input_refs when the server sends none: one per referenced run, or a given value", () => {
  const a = run("a");
  const b = { ...run("b"), input_refs: { xs: [{ run: "a" }, { nested: { run: "c" } }], n: 3, label: { text: "x" } } };
  assert.deepEqual(edgesOf({ runs: [a, b] }), [
    { source: "a", destination: "b", param: "xs" },
    { source: "c", destination: "b", param: "xs" },
    { source: null, destination: "b", param: "n" },
    { source: null, destination: "b", param: "label" },
  ]);
});

test("the server's edges are used as they are when it sends them", () => {
  const g = graph([run("a"), { ...run("b"), input_refs: { x: { run: "a" } } }], [[null, "b", "other"]]);
  assert.deepEqual(edgesOf(g), [{ source: null, destination: "b", param: "other" }]);
});

test("nesting: roots and children in creation order; a run whose parent is not in the graph is a root", () => {
  const m = graphModel(graph([
    run("p", { order: 1 }),
    run("late", { parent: "p", order: 9 }),
    run("early", { parent: "p", order: 3 }),
    run("orphan", { parent: "elsewhere", order: 2 }),
  ]));
  assert.deepEqual(ids(m.roots), ["p", "orphan"]);
  assert.deepEqual(ids(m.children.get("p")), ["early", "late"]);
  assert.equal(m.children.has("early"), false);
  assert.equal(m.byId.get("late").func_name, "late");
  assert.equal(m.resolution.id, "res");
});

test("a parent loop or a run that is its own parent is cut: every run shown exactly once", () => {
  const m = graphModel(graph([run("a", { parent: "b" }), run("b", { parent: "a" }), run("c", { parent: "c" }),
    run("d", { parent: "b" })]));
  const shown = [];
  const walk = (r) => { shown.push(r.id); (m.children.get(r.id) || []).forEach(walk); };
  m.roots.forEach(walk);
  assert.deepEqual(shown.sort(), ["a", "b", "c", "d"]);
});

test("incoming edges are grouped by destination; edges without one are dropped", () => {
  const m = graphModel(graph([run("a"), run("b")], [["a", "b", "x"], [null, "b", "y"], ["a", null, "z"]]));
  assert.deepEqual(m.incoming.get("b").map((e) => e.param), ["x", "y"]);
  assert.equal(m.incoming.has("a"), false);
});
