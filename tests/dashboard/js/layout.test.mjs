// layout.js: boxes from dagre, level by level; nested boxes inside their composition, siblings apart, content
// held, every edge drawn between the boxes it joins.

import assert from "node:assert/strict";
import { test } from "node:test";

import { displayModel } from "../../../server/sematic_k8s_server/static/grouping.js";
import { layoutGraph, METRICS } from "../../../server/sematic_k8s_server/static/layout.js";
import { graph, overviewOf, random, randomGraph, run, textSize } from "./graphs.mjs";

const inside = (a, b) => a.x >= b.x - 0.5 && a.y >= b.y - 0.5 && a.x + a.width <= b.x + b.width + 0.5 &&
  a.y + a.height <= b.y + b.height + 0.5;
const apart = (a, b) => a.x + a.width <= b.x + 0.5 || b.x + b.width <= a.x + 0.5 || a.y + a.height <= b.y + 0.5 ||
  b.y + b.height <= a.y + 0.5;

function model(g, collapsed) {
  return displayModel(overviewOf(g), collapsed);
}

/** What is wrong with a layout, as text. */
function problems(dm, layout, size) {
  const out = [];
  const { inset } = METRICS;
  for (const id of dm.shown) {
    const b = layout.boxes.get(id);
    if (!b) {
      out.push(`${id}: no box`);
      continue;
    }
    const c = size(dm.nodes.get(id));
    if (b.width < c.width + inset.left + inset.right || b.height < c.height + inset.top + inset.bottom) out.push(`${id}: content does not fit`);
    if (b.x < 0 || b.y < 0 || b.x + b.width > layout.width + 0.5 || b.y + b.height > layout.height + 0.5) out.push(`${id}: outside the graph`);
  }
  const levels = [dm.roots, ...dm.children.values()];
  for (const sibs of levels) {
    for (let i = 0; i < sibs.length; i++) {
      for (let j = i + 1; j < sibs.length; j++) {
        if (!apart(layout.boxes.get(sibs[i].id), layout.boxes.get(sibs[j].id))) out.push(`${sibs[i].id} overlaps ${sibs[j].id}`);
      }
    }
  }
  for (const [p, kids] of dm.children) {
    const pb = layout.boxes.get(p);
    for (const k of kids) {
      const kb = layout.boxes.get(k.id);
      if (!inside(kb, pb)) out.push(`${k.id} sticks out of ${p}`);
      if (kb.y < pb.y + inset.top + size(dm.nodes.get(p)).height) out.push(`${k.id} covers ${p}'s head`);
    }
  }
  for (const e of layout.edges) {
    if (e.points.length < 2) out.push(`edge ${e.source}->${e.destination}: no path`);
    const area = e.parent ? layout.boxes.get(e.parent) : { x: 0, y: 0, width: layout.width, height: layout.height };
    for (const q of e.points) {
      if (q.x < area.x - 1 || q.x > area.x + area.width + 1 || q.y < area.y - 1 || q.y > area.y + area.height + 1) {
        out.push(`edge ${e.source}->${e.destination} leaves its composition`);
        break;
      }
    }
  }
  return out;
}

test("a chain flows left to right, with an edge between each pair", () => {
  const g = graph([run("p", { func: "pipeline" }), run("a", { parent: "p" }), run("b", { parent: "p" }), run("c", { parent: "p" })],
    [["a", "b"], ["b", "c"]]);
  const dm = model(g);
  const size = textSize(dm.nodes.size ? { incoming: new Map() } : null);
  const layout = layoutGraph(dm, size);
  const x = (id) => layout.boxes.get(id).x;
  assert.ok(x("a") < x("b") && x("b") < x("c"));
  assert.deepEqual(layout.edges.map((e) => [e.parent, e.source, e.destination]), [["p", "a", "b"], ["p", "b", "c"]]);
  assert.deepEqual(problems(dm, layout, size), []);
});

test("an edge into a nested run counts, at the outer level, as one into the composition holding it", () => {
  const g = graph([run("p"), run("load", { parent: "p" }), run("report", { parent: "p" }), run("total", { parent: "report" }),
    run("scale", { parent: "report" })], [["load", "total"], ["total", "scale"]]);
  const dm = model(g);
  const size = textSize({ incoming: new Map() });
  const layout = layoutGraph(dm, size);
  const pairs = layout.edges.map((e) => `${e.parent}:${e.source}->${e.destination}`).sort();
  assert.deepEqual(pairs, ["p:load->report", "report:total->scale"]);
  assert.ok(layout.boxes.get("load").x + layout.boxes.get("load").width < layout.boxes.get("report").x);
  assert.deepEqual(problems(dm, layout, size), []);
});

test("a folded composition is one box, and edges to what it holds go to it", () => {
  const g = graph([run("p"), run("load", { parent: "p" }), run("report", { parent: "p" }), run("total", { parent: "report" })],
    [["load", "total"]]);
  const dm = model(g, new Set(["report"]));
  assert.equal(dm.shown.has("total"), false);
  assert.deepEqual(dm.edges, [{ source: "load", destination: "report", params: ["x"] }]);
  const layout = layoutGraph(dm, textSize({ incoming: new Map() }));
  assert.equal(layout.boxes.has("total"), false);
  assert.equal(layout.edges.length, 1);
});

test("random graphs, with and without loops: every box placed, nested inside, siblings apart", () => {
  for (let seed = 1; seed <= 25; seed++) {
    for (const acyclic of [true, false]) {
      const g = randomGraph(seed, 5 + (seed * 7) % 45, { acyclic });
      const rnd = random(seed);
      const collapsed = new Set(g.runs.filter(() => rnd() < 0.1).map((r) => r.id));
      const dm = model(g, collapsed);
      const size = textSize({ incoming: new Map() });
      const layout = layoutGraph(dm, size);
      assert.deepEqual(problems(dm, layout, size), [], `seed ${seed} acyclic ${acyclic}`);
    }
  }
});

test("no nodes: an empty layout", () => {
  const layout = layoutGraph(displayModel({ nodes: [], edges: [] }), () => ({ width: 1, height: 1 }));
  assert.equal(layout.width, 0);
  assert.equal(layout.boxes.size, 0);
});
