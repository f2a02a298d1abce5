// layout.js without a browser: nesting, ordering, no overlaps, sizes that follow content.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { columnsOf, layoutGraph, METRICS } from "../../../server/sematic_k8s_server/static/layout.js";
import { graphModel } from "../../../server/sematic_k8s_server/static/model.js";
import { graph, randomGraph, run, textSize } from "./graphs.mjs";

function lay(g, size) {
  const model = graphModel(g);
  return { model, ...layoutGraph(model, size || textSize(model)) };
}

const right = (b) => b.x + b.width;
const bottom = (b) => b.y + b.height;
const inside = (inner, outer) =>
  inner.x >= outer.x && inner.y >= outer.y && right(inner) <= right(outer) && bottom(inner) <= bottom(outer);
const disjoint = (a, b) => right(a) <= b.x || right(b) <= a.x || bottom(a) <= b.y || bottom(b) <= a.y;

/** Is `anc` a proper ancestor of `id` in the model's nesting? */
function isAncestor(model, anc, id) {
  for (const [parent, kids] of model.children) {
    if (kids.some((k) => k.id === id)) return parent === anc || isAncestor(model, anc, parent);
  }
  return false;
}

/** The invariants every layout keeps, checked over all runs. */
function checkInvariants(model, layout, size) {
  assert.equal(layout.boxes.size, model.runs.length, "one box per run");
  for (const r of model.runs) {
    const b = layout.boxes.get(r.id);
    assert.ok(b, `run ${r.id} has a box`);
    for (const v of [b.x, b.y, b.width, b.height]) assert.ok(Number.isFinite(v) && v >= 0, `${r.id}: ${JSON.stringify(b)}`);
    const c = size(r);
    assert.ok(b.width >= Math.max(METRICS.minWidth, c.width + METRICS.inset.left + METRICS.inset.right), `${r.id} fits its content`);
    assert.ok(b.height >= c.height + METRICS.inset.top + METRICS.inset.bottom, `${r.id} fits its content's height`);
    assert.ok(right(b) <= layout.width && bottom(b) <= layout.height, `${r.id} is inside the graph`);
  }
  const ids = model.runs.map((r) => r.id);
  for (let i = 0; i < ids.length; i++) {
    for (let j = i + 1; j < ids.length; j++) {
      const [a, b] = [ids[i], ids[j]];
      const [ba, bb] = [layout.boxes.get(a), layout.boxes.get(b)];
      if (isAncestor(model, a, b)) assert.ok(inside(bb, ba), `${b} is inside its ancestor ${a}`);
      else if (isAncestor(model, b, a)) assert.ok(inside(ba, bb), `${a} is inside its ancestor ${b}`);
      else assert.ok(disjoint(ba, bb), `${a} ${JSON.stringify(ba)} and ${b} ${JSON.stringify(bb)} do not overlap`);
    }
  }
  // a nested run sits below its composition's own content
  for (const [parent, kids] of model.children) {
    const p = layout.boxes.get(parent);
    const contentBottom = p.y + METRICS.inset.top + size(model.byId.get(parent)).height;
    for (const k of kids) assert.ok(layout.boxes.get(k.id).y >= contentBottom + METRICS.nestGap, `${k.id} is below ${parent}'s head`);
  }
}

describe("nesting", () => {
  const g = graph([
    run("pipeline"),
    run("make", { parent: "pipeline" }),
    run("report", { parent: "pipeline" }),
    run("total", { parent: "report" }),
    run("scale", { parent: "report" }),
    run("check", { parent: "pipeline" }),
  ], [["make", "report"], ["make", "total"], ["total", "scale"], ["report", "check"]]);

  test("a composition's box holds its nested runs, below its own content, and no boxes overlap", () => {
    const { model, boxes, ...rest } = lay(g);
    checkInvariants(model, { boxes, ...rest }, textSize(model));
    assert.ok(inside(boxes.get("total"), boxes.get("report")));
    assert.ok(inside(boxes.get("report"), boxes.get("pipeline")));
  });

  test("the graph is exactly as big as its top-level boxes", () => {
    const { boxes, width, height } = lay(g);
    const p = boxes.get("pipeline");
    assert.deepEqual([p.x, p.y, p.width, p.height], [0, 0, width, height]);
  });

  test("a leaf is its content plus the box's border and padding", () => {
    const { boxes, model } = lay(g);
    const c = textSize(model)(model.byId.get("scale"));
    const b = boxes.get("scale");
    assert.equal(b.height, c.height + METRICS.inset.top + METRICS.inset.bottom);
    assert.ok(b.width >= c.width + METRICS.inset.left + METRICS.inset.right);
  });

  test("custom insets are kept around content and nested runs", () => {
    const model = graphModel(g);
    const inset = { left: 30, right: 20, top: 15, bottom: 25 };
    const size = () => ({ width: 200, height: 40 });
    const { boxes } = layoutGraph(model, size, { inset });
    const p = boxes.get("report");
    const kids = ["total", "scale"].map((id) => boxes.get(id));
    assert.equal(Math.min(...kids.map((k) => k.x)), p.x + inset.left);
    assert.ok(Math.max(...kids.map(right)) <= right(p) - inset.right);
    assert.equal(Math.max(...kids.map(bottom)), bottom(p) - inset.bottom);
    assert.equal(boxes.get("scale").height, 40 + inset.top + inset.bottom);
  });
});

describe("ordering", () => {
  test("siblings stand in columns by dependency depth, values flowing left to right", () => {
    // c <- b <- a; d depends on nothing; e on a and c
    const g = graph([run("p"), ...["a", "b", "c", "d", "e"].map((id) => run(id, { parent: "p" }))],
      [["a", "b"], ["b", "c"], ["a", "e"], ["c", "e"], [null, "d", "n"]]);
    const { model, boxes } = lay(g);
    const cols = columnsOf(model, model.children.get("p")).map((col) => col.map((r) => r.id));
    assert.deepEqual(cols, [["a", "d"], ["b"], ["c"], ["e"]]);
    const [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map((id) => boxes.get(id));
    assert.equal(a.x, d.x);
    assert.ok(right(a) < b.x && right(b) < c.x && right(c) < e.x);
  });

  test("within a column, runs are in creation order, top to bottom", () => {
    const g = graph([run("p"), run("late", { parent: "p", order: 30 }), run("early", { parent: "p", order: 10 }),
      run("mid", { parent: "p", order: 20 })]);
    const { boxes } = lay(g);
    const [early, mid, late] = ["early", "mid", "late"].map((id) => boxes.get(id));
    assert.ok(bottom(early) <= mid.y && bottom(mid) <= late.y);
    assert.equal(mid.y - bottom(early), METRICS.gap);
  });

  test("an input from inside a sibling composition counts as an input from that sibling", () => {
    const g = graph([run("p"), run("report", { parent: "p" }), run("total", { parent: "report" }),
      run("check", { parent: "p" })], [["total", "check"]]);
    const { boxes } = lay(g);
    assert.ok(right(boxes.get("report")) < boxes.get("check").x);
  });

  test("inputs from outside the composition do not move a run right", () => {
    const g = graph([run("p"), run("a", { parent: "p" }), run("q"), run("b", { parent: "q" })], [["a", "b"]]);
    const { boxes } = lay(g);
    assert.equal(boxes.get("b").x, boxes.get("q").x + METRICS.inset.left);
  });

  test("top-level runs are stacked in creation order and share one width", () => {
    const g = graph([run("second", { order: 2, func: "a_much_longer_name" }), run("first", { order: 1 })]);
    const { boxes, width } = lay(g);
    const [first, second] = [boxes.get("first"), boxes.get("second")];
    assert.equal(first.y, 0);
    assert.equal(second.y, bottom(first) + METRICS.gap);
    assert.equal(first.width, width);
    assert.equal(second.width, width);
  });

  test("columns are centred on each other, with an arrow between each two", () => {
    const g = graph([run("p"), run("a", { parent: "p" }), run("b", { parent: "p" }), run("c", { parent: "p" })],
      [["a", "c"], ["b", "c"]]);
    const { boxes, arrows } = lay(g);
    const [a, b, c] = ["a", "b", "c"].map((id) => boxes.get(id));
    const middle = (x) => x.y + x.height / 2;
    assert.ok(Math.abs(middle(c) - (a.y + bottom(b)) / 2) <= 1, "the lone run is centred on the column of two");
    assert.equal(arrows.length, 1);
    const [arrow] = arrows;
    assert.equal(arrow.parent, "p");
    assert.ok(right(a) < arrow.x && arrow.x < c.x);
    assert.ok(c.y <= arrow.y && arrow.y <= bottom(c));
  });
});

describe("sizes grow with content", () => {
  const one = (func, extraEdges = 0) => {
    const runs = [run("x", { func })];
    const edges = Array.from({ length: extraEdges }, (_, i) => [null, "x", `p${i}`]);
    return lay(graph(runs, edges)).boxes.get("x");
  };

  test("a longer name makes a wider box; more inputs a taller one", () => {
    assert.ok(one("a".repeat(40)).width > one("a".repeat(20)).width);
    assert.ok(one("f", 3).height > one("f", 1).height);
    assert.ok(one("f", 1).height > one("f", 0).height);
  });

  test("a box is never narrower than the minimum width", () => {
    const model = graphModel(graph([run("x")]));
    const { boxes } = layoutGraph(model, () => ({ width: 1, height: 1 }));
    assert.equal(boxes.get("x").width, METRICS.minWidth);
  });

  test("nesting more runs makes a composition bigger: taller in a column, wider in a new column", () => {
    const base = [run("p"), run("a", { parent: "p" })];
    const alone = lay(graph(base)).boxes.get("p");
    const stacked = lay(graph([...base, run("b", { parent: "p" })])).boxes.get("p");
    const chained = lay(graph([...base, run("b", { parent: "p" })], [["a", "b"]])).boxes.get("p");
    assert.ok(stacked.height > alone.height);
    assert.ok(chained.width > alone.width);
  });

  test("a bigger nested run makes every composition around it bigger", () => {
    const at = (func) => lay(graph([run("p"), run("q", { parent: "p" }), run("leaf", { parent: "q", func })])).boxes;
    const small = at("f");
    const big = at("f".repeat(80));
    for (const id of ["leaf", "q", "p"]) assert.ok(big.get(id).width > small.get(id).width, id);
  });

  test("runs in one column are stretched to the widest of them", () => {
    const g = graph([run("p"), run("short", { parent: "p" }), run("long", { parent: "p", func: "l".repeat(60) })]);
    const { boxes } = lay(g);
    assert.equal(boxes.get("short").width, boxes.get("long").width);
    assert.equal(boxes.get("short").x, boxes.get("long").x);
  });
});

describe("awkward graphs", () => {
  test("an empty graph has no size", () => {
    const { boxes, width, height, arrows } = lay(graph([]));
    assert.deepEqual([boxes.size, width, height, arrows.length], [0, 0, 0, 0]);
  });

  test("a dependency loop between siblings is cut: both placed, side by side", () => {
    const g = graph([run("p"), run("a", { parent: "p" }), run("b", { parent: "p" })], [["a", "b"], ["b", "a"]]);
    const { model, ...layout } = lay(g);
    checkInvariants(model, layout, textSize(model));
    assert.equal(columnsOf(model, model.children.get("p")).length, 2);
  });

  test("a run depending on itself, or on its own composition, stays in the first column", () => {
    const g = graph([run("p"), run("a", { parent: "p" }), run("b", { parent: "a" }), run("z", { parent: "p" })],
      [["a", "a"], ["p", "a"], ["b", "a"]]);
    const { model, boxes } = lay(g);
    assert.deepEqual(columnsOf(model, model.children.get("p")).map((col) => col.map((r) => r.id)), [["a", "z"]]);
    assert.equal(boxes.get("a").x, boxes.get("z").x);
  });

  test("a parent loop (a corrupt record) still shows each run once", () => {
    const g = graph([run("a", { parent: "b" }), run("b", { parent: "a" }), run("c", { parent: "c" })]);
    const { model, ...layout } = lay(g);
    checkInvariants(model, layout, textSize(model));
  });

  test("random pipelines keep every invariant, loops or not", () => {
    for (let seed = 1; seed <= 40; seed++) {
      const g = randomGraph(seed, 5 + (seed % 40), { acyclic: seed % 2 === 0 });
      const { model, ...layout } = lay(g);
      checkInvariants(model, layout, textSize(model));
      for (const kids of [model.roots, ...model.children.values()]) {
        assert.equal(columnsOf(model, kids).flat().length, kids.length, `seed ${seed}: each sibling in one column`);
      }
    }
  });
});

describe("random pipelines without loops", () => {
  test("a nested run stands right of every sibling it takes an input from (or from inside)", () => {
    let checked = 0;
    for (let seed = 100; seed < 140; seed++) {
      const g = randomGraph(seed, 5 + (seed % 40), { acyclic: true });
      const { model, boxes } = lay(g);
      for (const e of g.edges) {
        const dest = model.byId.get(e.destination);
        if (!e.source || !dest.parent_id) continue; // top-level runs are stacked, not in columns
        const siblings = new Set(model.children.get(dest.parent_id).map((r) => r.id));
        let s = model.byId.get(e.source);
        while (s && !siblings.has(s.id)) s = model.byId.get(s.parent_id);
        if (!s || s.id === dest.id) continue; // from outside the composition, or from inside the run itself
        assert.ok(right(boxes.get(s.id)) < boxes.get(dest.id).x, `seed ${seed}: ${s.id} is left of ${dest.id}`);
        checked++;
      }
    }
    assert.ok(checked > 100, `only ${checked} sibling inputs checked`);
  });
});
