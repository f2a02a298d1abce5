/* The graph of a resolution drawn: one box per shown node (a run, or a group of sibling runs of one func),
 * nested runs inside their composition's box, edges as SVG paths. Box contents are measured in the page,
 * positions come from layout.js (dagre) over grouping.js's display model, then each box is placed absolutely
 * inside its parent's box. Compositions fold and unfold; groups show their runs a page at a time. A redraw keeps
 * the boxes drawn (boxes.js updates them in place), so a click on one as a live event redraws the graph is made. */

import { Boxes } from "./boxes.js";
import { fillInPlace, h } from "./dom.js";
import { layoutGraph } from "./layout.js";

const px = (n) => `${n}px`;
const SVG = "http://www.w3.org/2000/svg";
const kept = new WeakMap(); // container -> {graph, boxes}: what renderGraph drew there, redrawn in place

/** A box's border, and border plus padding, on each side, as the stylesheet draws it. */
function chromeOf(box) {
  const cs = getComputedStyle(box);
  const n = (v) => parseFloat(v) || 0;
  const border = { left: n(cs.borderLeftWidth), top: n(cs.borderTopWidth) };
  return {
    border,
    inset: {
      left: border.left + n(cs.paddingLeft),
      right: n(cs.borderRightWidth) + n(cs.paddingRight),
      top: border.top + n(cs.paddingTop),
      bottom: n(cs.borderBottomWidth) + n(cs.paddingBottom),
    },
  };
}

/**
 * Draw display model `dm` into `container`, keeping its scroll position. `selected`: the run highlighted.
 * act: {select(runId), fold(compositionId), expand(groupId, offset | null)}; `page`: runs per group page.
 */
export function renderGraph(container, dm, { selected = null, page = 50, critical = new Set(), act }) {
  const scroll = container.firstChild ? [container.scrollLeft, container.scrollTop] : null;
  let mine = kept.get(container);
  if (!mine || mine.graph.parentNode !== container) {
    mine = { graph: h("div", { class: "graph", testid: "run-graph" }), boxes: new Boxes() };
    kept.set(container, mine);
  }
  const { graph, boxes } = mine;
  const drawn = new Map(); // id -> {box, body, parent}
  const box = (node, parent) => {
    const kids = dm.children.get(node.id) || [];
    const b = boxes.draw(node, { dm, page, act, selected, critical, composite: kids.length > 0 });
    drawn.set(node.id, { box: b.el, body: b.body, parent });
    boxes.nest(b, kids.map((k) => box(k, node.id)));
    return b.el;
  };
  graph.dataset.nodes = String(dm.shown.size);
  fillInPlace(graph, dm.roots.map((r) => box(r, null)));
  boxes.done();
  fillInPlace(container, graph);

  const sizes = new Map();
  for (const [id, { body }] of drawn) {
    const r = body.getBoundingClientRect();
    sizes.set(id, { width: Math.ceil(r.width), height: Math.ceil(r.height) });
  }
  const first = drawn.values().next().value;
  const chrome = first ? chromeOf(first.box) : { border: { left: 0, top: 0 }, inset: {} };
  const layout = layoutGraph(dm, (n) => sizes.get(n.id), { inset: chrome.inset });

  const origin = (parent) => {
    if (!parent) return { x: 0, y: 0 };
    const p = layout.boxes.get(parent);
    return { x: p.x + chrome.border.left, y: p.y + chrome.border.top };
  };
  graph.style.width = px(layout.width);
  graph.style.height = px(layout.height);
  for (const [id, { box: el, parent }] of drawn) {
    const b = layout.boxes.get(id);
    const o = origin(parent);
    Object.assign(el.style, { left: px(b.x - o.x), top: px(b.y - o.y), width: px(b.width), height: px(b.height) });
  }
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("width", String(layout.width));
  svg.setAttribute("height", String(layout.height));
  svg.dataset.testid = "graph-edges";
  for (const e of layout.edges) {
    if (e.points.length < 2) continue;
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", `M${e.points.map((p) => `${p.x.toFixed(1)},${p.y.toFixed(1)}`).join("L")}`);
    path.setAttribute("class", critical.has(e.source) && critical.has(e.destination) ? "edge critical" : "edge");
    path.dataset.source = e.source;
    path.dataset.destination = e.destination;
    const tip = e.points[e.points.length - 1];
    const head = document.createElementNS(SVG, "path");
    head.setAttribute("d", `M${tip.x - 7},${tip.y - 4}L${tip.x},${tip.y}L${tip.x - 7},${tip.y + 4}`);
    head.setAttribute("class", "edge-head");
    svg.append(path, head);
  }
  graph.append(svg);
  if (scroll) [container.scrollLeft, container.scrollTop] = scroll;
}
