// grouping.js and critical.js: what is shown of an overview, group texts, progress, the critical path.

import assert from "node:assert/strict";
import { test } from "node:test";

import { criticalPath } from "../../../server/sematic_k8s_server/static/critical.js";
import { displayModel, groupState, groupText, progressText } from "../../../server/sematic_k8s_server/static/grouping.js";

const node = (id, parent, start, end, extra = {}) => ({
  kind: "run", id, parent_id: parent, func_name: id, state: end === null ? "running" : "resolved",
  created_at: `2026-01-01T00:00:${String(start).padStart(2, "0")}Z`, started_at: `2026-01-01T00:00:${String(start).padStart(2, "0")}Z`,
  ended_at: end === null ? null : `2026-01-01T00:00:${String(end).padStart(2, "0")}Z`, ...extra,
});

test("a group reads as 'N × func: counts by state', in a fixed order of states", () => {
  const g = { kind: "group", count: 500, func_name: "add", states: { running: 20, resolved: 480 } };
  assert.equal(groupText(g), "500 × add: 480 resolved, 20 running");
  assert.equal(groupState(g), "running");
  assert.equal(groupState({ states: { resolved: 3, failed: 1 } }), "failed");
  assert.equal(groupState({ states: { resolved: 3 } }), "resolved");
  assert.equal(groupText({ count: 3, func_name: "f", states: { weird: 1, failed: 2 } }), "3 × f: 2 failed, 1 weird");
});

test("progress counts resolved runs of all", () => {
  assert.equal(progressText({ resolved: 13, running: 3, created: 25 }), "13/41 resolved");
  assert.equal(progressText({}), "0/0 resolved");
});

test("display model: nesting, folded compositions stand for what they hold, edges once per pair", () => {
  const ov = {
    nodes: [node("p", null, 0, 9), node("a", "p", 1, 2), node("c", "p", 2, 8), node("c1", "c", 3, 4), node("c2", "c", 4, 8)],
    edges: [{ source: "a", destination: "c1", params: ["x"] }, { source: "a", destination: "c2", params: ["y"] },
      { source: "c1", destination: "c2", params: ["z"] }],
  };
  const open = displayModel(ov);
  assert.deepEqual(open.roots.map((n) => n.id), ["p"]);
  assert.deepEqual(open.children.get("c").map((n) => n.id), ["c1", "c2"]);
  assert.equal(open.edges.length, 3);
  const folded = displayModel(ov, new Set(["c", "nonexistent"]));
  assert.deepEqual([...folded.shown].sort(), ["a", "c", "p"]);
  assert.deepEqual(folded.edges, [{ source: "a", destination: "c", params: ["x", "y"] }]);
  assert.deepEqual([...folded.collapsed], ["c"]);
  assert.equal(folded.children.has("c"), false);
  const top = displayModel(ov, new Set(["p", "c"]));
  assert.deepEqual([...top.shown], ["p"]);
  assert.deepEqual(top.edges, []);
});

test("display model: a parent loop or a missing parent makes a top-level node, each shown once", () => {
  const ov = { nodes: [node("x", "y", 0, 1), node("y", "x", 0, 1), node("z", "gone", 0, 1)], edges: [] };
  const dm = displayModel(ov);
  assert.equal(dm.shown.size, 3);
  assert.ok(dm.roots.some((n) => n.id === "z"));
});

test("critical path: into the composition's last nested run, then back along the inputs it waited for", () => {
  // p: prep(1-2) -> [adds group 2-6] -> total(6-9); side(1-3) feeds nothing late
  const nodes = [node("p", null, 0, 9), node("prep", "p", 1, 2), node("side", "p", 1, 3),
    { ...node("adds", "p", 2, 6), kind: "group" }, node("total", "p", 6, 9)];
  const edges = [{ source: "prep", destination: "adds" }, { source: "adds", destination: "total" }, { source: "side", destination: "total" }];
  assert.deepEqual([...criticalPath(nodes, edges)], ["p", "total", "adds", "prep"]);
});

test("critical path: nested compositions, running nodes counted as ending now, loops cut", () => {
  const now = Date.parse("2026-01-01T00:00:30Z");
  const nodes = [node("p", null, 0, null), node("a", "p", 1, 5), node("c", "p", 5, null), node("c1", "c", 6, 8), node("c2", "c", 8, null)];
  const edges = [{ source: "a", destination: "c1" }, { source: "c1", destination: "c2" }, { source: "c2", destination: "c1" }];
  assert.deepEqual([...criticalPath(nodes, edges, now)], ["p", "c", "c2", "c1", "a"]);
  assert.deepEqual([...criticalPath([], [], now)], []);
});
