/* Where each box of the graph goes, and the path of each edge. Pure: no DOM; box content sizes come from the
 * caller (graph.js measures them in the page; tests make them up).
 *
 * The placement is dagre's (vendor/dagre.esm.js, from the npm registry): at each level of nesting (the
 * top-level nodes, the nodes nested in one composition) the nodes are laid out left to right along the
 * edges between them, an edge into or out of a nested node counting as one into or out of the sibling that
 * holds it. A composition's box holds its own content, then its nested nodes' layout below it.
 *
 * The result is in graph coordinates (top-left of the graph is 0,0):
 *   {width, height, boxes: Map id -> {x, y, width, height},
 *    edges: [{parent, source, destination, points: [{x, y}, ...]}]}   (parent: the composition it is drawn in)
 */

import { graphlib, layout as dagreLayout } from "./vendor/dagre.esm.js";

/** Spacing in CSS pixels. `inset` is a box's border plus padding around its content (see .run in style.css). */
export const METRICS = Object.freeze({
  inset: Object.freeze({ left: 14, right: 11, top: 8, bottom: 8 }),
  nodesep: 12, // between boxes of one rank
  ranksep: 44, // between ranks, where the edges run
  nestGap: 8, // between a composition's own content and its nested nodes
  minWidth: 150, // of any box
});

function withDefaults(metrics) {
  return { ...METRICS, ...metrics, inset: { ...METRICS.inset, ...(metrics.inset || {}) } };
}

/** The node among `ids` that is `id` or holds it, or null. */
function holder(dm, ids, id) {
  let n = dm.nodes.get(id);
  for (let i = 0; n && i < 1000; i++) {
    if (ids.has(n.id)) return n.id;
    n = n.parent_id ? dm.nodes.get(n.parent_id) : null;
  }
  return null;
}

/**
 * Lay out a display model (grouping.js displayModel()).
 * @param dm           {nodes, roots, children, edges}
 * @param contentSize  node -> {width, height} of the node's own content, without its nested nodes
 * @param metrics      overrides of METRICS
 */
export function layoutGraph(dm, contentSize, metrics = {}) {
  const m = withDefaults(metrics);
  const { inset } = m;
  const sizes = new Map(); // id -> {width, height}
  const inner = new Map(); // composition id -> {dx, dy, pos: Map kid -> {x, y}, edges}

  /** Lay out one level: sizes of its nodes first (recursively), then dagre. */
  const level = (siblings) => {
    const ids = new Set(siblings.map((n) => n.id));
    const g = new graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: m.nodesep, ranksep: m.ranksep, marginx: 0, marginy: 0 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of siblings) {
      size(n);
      g.setNode(n.id, { ...sizes.get(n.id) });
    }
    for (const e of dm.edges) {
      const s = holder(dm, ids, e.source);
      const d = holder(dm, ids, e.destination);
      if (s && d && s !== d && !g.hasEdge(s, d)) g.setEdge(s, d, { source: e.source, destination: e.destination });
    }
    dagreLayout(g);
    // the level's extent: its boxes and its edges' paths (a path looping back may run outside the boxes)
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    const grow = (x, y, w = 0, hh = 0) => {
      x0 = Math.min(x0, x);
      y0 = Math.min(y0, y);
      x1 = Math.max(x1, x + w);
      y1 = Math.max(y1, y + hh);
    };
    for (const id of g.nodes()) {
      const v = g.node(id);
      grow(v.x - v.width / 2, v.y - v.height / 2, v.width, v.height);
    }
    for (const e of g.edges()) for (const q of g.edge(e).points || []) grow(q.x, q.y);
    if (!Number.isFinite(x0)) [x0, y0, x1, y1] = [0, 0, 0, 0];
    const pos = new Map();
    for (const id of g.nodes()) {
      const v = g.node(id);
      pos.set(id, { x: v.x - v.width / 2 - x0, y: v.y - v.height / 2 - y0 });
    }
    const edges = g.edges().map((e) => ({
      source: e.v, destination: e.w, points: (g.edge(e).points || []).map((q) => ({ x: q.x - x0, y: q.y - y0 })),
    }));
    const width = x1 - x0;
    const height = y1 - y0;
    return { pos, edges, width: Math.ceil(width), height: Math.ceil(height) };
  };

  const size = (n) => {
    const c = contentSize(n) || {};
    const cw = Math.max(0, Number(c.width) || 0);
    const ch = Math.max(0, Number(c.height) || 0);
    const kids = dm.children.get(n.id) || [];
    if (!kids.length) {
      sizes.set(n.id, { width: Math.max(m.minWidth, inset.left + cw + inset.right), height: inset.top + ch + inset.bottom });
      return;
    }
    const lv = level(kids);
    inner.set(n.id, { ...lv, dx: inset.left, dy: inset.top + ch + m.nestGap });
    sizes.set(n.id, {
      width: Math.max(m.minWidth, inset.left + Math.max(cw, lv.width) + inset.right),
      height: inset.top + ch + m.nestGap + lv.height + inset.bottom,
    });
  };

  const top = level(dm.roots);
  const boxes = new Map();
  const edges = [];
  const place = (lv, parent, ox, oy) => {
    for (const [id, p] of lv.pos) {
      const box = { x: ox + p.x, y: oy + p.y, ...sizes.get(id) };
      boxes.set(id, box);
      const sub = inner.get(id);
      if (sub) place(sub, id, box.x + sub.dx, box.y + sub.dy);
    }
    for (const e of lv.edges) {
      edges.push({ parent, source: e.source, destination: e.destination, points: e.points.map((q) => ({ x: ox + q.x, y: oy + q.y })) });
    }
  };
  place(top, null, 0, 0);
  return { width: top.width, height: top.height, boxes, edges };
}
