/* The graph of a resolution drawn: one box per shown node (a run, or a group of sibling runs of one func),
 * nested runs inside their composition's box, edges as SVG paths. Box contents are measured in the page,
 * positions come from layout.js (dagre) over grouping.js's display model, then each box is placed absolutely
 * inside its parent's box. Compositions fold and unfold; groups show their runs a page at a time. */

import { badge, fill, h } from "./dom.js";
import { cssToken } from "./format.js";
import { groupState, groupText } from "./grouping.js";
import { layoutGraph } from "./layout.js";

const px = (n) => `${n}px`;
const SVG = "http://www.w3.org/2000/svg";

/** The tags after a run's name: cached, reused, attempts. */
function tags(node) {
  const out = [];
  if (node.cached) out.push(h("span", { class: "tag cached", title: "its output came from the cache" }, "cached"));
  if (node.reused) out.push(h("span", { class: "tag reused", title: "reused from the resolution it re-runs" }, "reused"));
  if (node.attempts > 1) out.push(h("span", { class: "tag" }, `${node.attempts} attempts`));
  return out;
}

function button(label, testid, title, onclick) {
  return h("button", {
    type: "button", class: "btn tiny", testid, title,
    onclick: (e) => { e.stopPropagation(); onclick(); },
  }, label);
}

/** A group's own content: its counts, and buttons to show its runs a page at a time. */
function groupBody(node, page, act) {
  const paged = node.shown > 0;
  const from = node.offset;
  const to = Math.min(node.total, node.offset + node.shown);
  return h("div", { class: "run-body" },
    h("div", { class: "run-head" }, h("span", { class: "fname" }, `${node.total} × ${node.func_name}`),
      badge(groupState(node))),
    h("div", { class: "group-text", testid: "group-text" }, paged ? `${groupText(node)} not shown` : groupText(node)),
    h("div", { class: "group-actions" }, paged
      ? [h("span", { class: "muted", testid: "group-page" }, `runs ${from + 1}–${to} of ${node.total} shown`),
        button("◀", "group-prev", "the previous page", () => act.expand(node.id, Math.max(0, from - page))),
        button("▶", "group-next", "the next page", () => act.expand(node.id, from + page)),
        button("hide", "group-hide", "show them as one group again", () => act.expand(node.id, null))]
      : button(`show ${Math.min(page, node.total)}`, "group-expand", `show ${page} of these runs one by one`,
        () => act.expand(node.id, 0))));
}

function runBody(node, dm, act) {
  const foldable = dm.hasKids(node.id);
  const folded = dm.collapsed.has(node.id);
  return h("div", { class: "run-body" },
    h("div", { class: "run-head" },
      foldable ? button(folded ? "▸" : "▾", "fold-toggle", folded ? "show its nested runs" : "fold its nested runs",
        () => act.fold(node.id)) : null,
      h("span", { class: "fname" }, node.func_name), badge(node.state), tags(node)),
    node.label ? h("div", { class: "label mono", testid: "run-label" }, node.label) : null,
    folded ? h("div", { class: "muted small" }, "nested runs folded") : null);
}

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
  const drawn = new Map(); // id -> {box, body, parent}
  const box = (node, parent) => {
    const kids = dm.children.get(node.id) || [];
    const group = node.kind === "group";
    const body = group ? groupBody(node, page, act) : runBody(node, dm, act);
    const state = group ? groupState(node) : node.state;
    const go = () => { if (!group) act.select(node.id); };
    const el = h("div", {
      class: `run state-${cssToken(state)}${node.id === selected ? " selected" : ""}${kids.length ? " composite" : ""}` +
        `${group ? " group" : ""}${critical.has(node.id) ? " critical" : ""}`,
      testid: group ? "group-node" : "run-node",
      data: { runId: group ? null : node.id, groupId: group ? node.id : null, func: node.func_name, state, kind: node.kind },
      tabindex: "0", role: group ? "group" : "button", title: node.func_path,
      onclick: (e) => { e.stopPropagation(); go(); },
      onkeydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) go(); },
    }, body, kids.map((k) => box(k, node.id)));
    drawn.set(node.id, { box: el, body, parent });
    return el;
  };
  const graph = h("div", { class: "graph", testid: "run-graph", data: { nodes: String(dm.shown.size) } },
    dm.roots.map((r) => box(r, null)));
  const scroll = container.firstChild ? [container.scrollLeft, container.scrollTop] : null;
  fill(container, graph);

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
