/* The graph of a resolution's runs, drawn: one box per run (its name, state, tags and where its inputs come
 * from), nested runs inside their composition's box. The boxes' content is measured in the page, positions
 * come from layout.js, and each box is then placed absolutely inside its parent's box. */

import { badge, fill, h } from "./dom.js";
import { cssToken } from "./format.js";
import { layoutGraph } from "./layout.js";
import { runHref } from "./routes.js";

const px = (n) => `${n}px`;

/** The tags after a run's name: cached, reused, attempts. */
function tags(run) {
  const out = [];
  if (run.cached_from) out.push(h("span", { class: "tag cached", title: `cached from ${run.cached_from}` }, "cached"));
  if (run.notes && run.notes.reused_from) {
    out.push(h("span", { class: "tag reused", title: `reused from ${run.notes.reused_from}` }, "reused"));
  }
  if (run.attempts > 1) out.push(h("span", { class: "tag" }, `${run.attempts} attempts`));
  return out;
}

/** Where a run's inputs come from: "param ← func" per input from another run, then the given ones. */
function inputs(model, run) {
  const inEdges = (model.incoming.get(run.id) || []).filter((e) => e.param);
  const fromRun = (e) => e.source && model.byId.has(e.source);
  const items = inEdges.filter(fromRun).map((e) =>
    h("li", {}, h("span", { class: "param" }, e.param), ` ← ${model.byId.get(e.source).func_name}`));
  const literals = [...new Set(inEdges.filter((e) => !fromRun(e)).map((e) => e.param))];
  if (literals.length) items.push(h("li", { class: "literals" }, "given: ", h("span", { class: "param" }, literals.join(", "))));
  return items.length ? h("ul", { class: "ins" }, items) : null;
}

/** A box's border and border plus padding on each side, as the stylesheet draws it. */
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
 * Draw `model` (graphModel()) into `container`, keeping its scroll position. `selected` is the id of the
 * run whose box is highlighted; clicking a box goes to that run's route.
 */
export function renderGraph(container, model, { selected = null } = {}) {
  const drawn = new Map(); // id -> {box, body, parent}
  const box = (run, parent) => {
    const kids = model.children.get(run.id) || [];
    const go = () => { location.hash = runHref(run.id); };
    const body = h("div", { class: "run-body" },
      h("div", { class: "run-head" }, h("span", { class: "fname" }, run.func_name), badge(run.state), tags(run)),
      inputs(model, run));
    const el = h("div", {
      class: `run state-${cssToken(run.state)}${run.id === selected ? " selected" : ""}${kids.length ? " composite" : ""}`,
      testid: "run-node", data: { runId: run.id, func: run.func_name, state: run.state },
      tabindex: "0", role: "button", title: run.func_path,
      onclick: (e) => { e.stopPropagation(); go(); },
      onkeydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) go(); },
    }, body, kids.map((k) => box(k, run.id)));
    drawn.set(run.id, { box: el, body, parent });
    return el;
  };
  const graph = h("div", { class: "graph", testid: "run-graph" }, model.roots.map((r) => box(r, null)));
  const scroll = container.firstChild ? [container.scrollLeft, container.scrollTop] : null;
  fill(container, graph);

  // measure every box's own content in one pass, then lay out and place
  const sizes = new Map();
  for (const [id, { body }] of drawn) {
    const r = body.getBoundingClientRect();
    sizes.set(id, { width: Math.ceil(r.width), height: Math.ceil(r.height) });
  }
  const first = drawn.values().next().value;
  const chrome = first ? chromeOf(first.box) : { border: { left: 0, top: 0 }, inset: {} };
  const layout = layoutGraph(model, (run) => sizes.get(run.id), { inset: chrome.inset });

  // a box is placed inside its parent's padding box, i.e. from the corner inside the parent's border
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
  for (const a of layout.arrows) {
    const o = origin(a.parent);
    drawn.get(a.parent).box.append(h("span", {
      class: "arrow", "aria-hidden": "true", style: `left: ${px(a.x - o.x)}; top: ${px(a.y - o.y)}`,
    }, "→"));
  }
  if (scroll) [container.scrollLeft, container.scrollTop] = scroll;
}
