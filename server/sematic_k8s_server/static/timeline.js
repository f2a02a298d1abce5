/* The timeline: a Gantt chart of the shown nodes (runs and groups), each a row with when it was created
 * (queued, light), started and ended (solid; a run whose code never began only waited: started.js); the critical path (critical.js) highlighted. Nested nodes are
 * indented under their composition. A redraw (each live event of a running resolution) keeps the rows drawn and
 * updates them in place, so a click on a run's row as one comes is made (see dom.fillInPlace). */

import { badge, fill, fillInPlace, h, setBadge, setData } from "./dom.js";
import { cssToken, fmtDuration, parseTime } from "./format.js";
import { groupState, groupText } from "./grouping.js";
import { neverStarted, waitingFor } from "./started.js";

const kept = new WeakMap(); // container -> {root, axis, ticks, trows, rows}: what renderTimeline drew there
const pct = (x) => `${(Math.max(0, Math.min(1, x)) * 100).toFixed(3)}%`;

/** Shown nodes depth first (a composition, then what is nested in it), with their depth. */
function rows(dm) {
  const out = [];
  const walk = (node, depth) => {
    out.push({ node, depth });
    for (const k of dm.children.get(node.id) || []) walk(k, depth + 1);
  };
  dm.roots.forEach((r) => walk(r, 0));
  return out;
}

/** Set `el`'s class, test id, style and title (null: none). */
function setLook(el, { cls, testid = null, style, title = null }) {
  el.className = cls;
  setData(el, { testid });
  el.setAttribute("style", style);
  if (title === null) el.removeAttribute("title");
  else el.title = title;
}

/** A row made for a node; its content set by drawRow(). */
function makeRow() {
  const el = h("div", { onclick: () => el.go() });
  const label = h("span", { class: "tlabel" });
  const bars = h("span", { class: "tbars" });
  el.append(label, bars);
  return { el, label, bars, fname: h("span", { class: "fname" }), gap: document.createTextNode(" "), badge: badge(null),
    mark: h("span", { class: "muted mono" }), queued: h("span", {}), ran: h("span", {}) };
}

/** Row `row` updated in place to show `node` at `depth`; ctx: {critical, selected, select, t, x, now}. */
function drawRow(row, node, depth, { critical, selected, select, t, x, now }) {
  const group = node.kind === "group";
  const state = group ? groupState(node) : node.state;
  const created = t(node.created_at);
  const unstarted = !group && neverStarted(node); // handed to its executor, its code never began: it waited
  const started = unstarted ? null : t(node.started_at);
  const ended = t(node.ended_at) ?? (started !== null ? now : null);
  const onCritical = critical.has(node.id);
  row.el.className = `trow${onCritical ? " critical" : ""}${node.id === selected ? " selected" : ""}`;
  setData(row.el, { testid: "timeline-row", id: node.id, critical: onCritical ? "true" : "false", kind: node.kind,
    started: unstarted ? "false" : "true" });
  row.el.go = () => { if (!group) select(node.id); };
  row.label.setAttribute("style", `padding-left: ${6 + depth * 14}px`);
  if (node.func_path) row.label.title = node.func_path;
  else row.label.removeAttribute("title");
  const name = group ? groupText(node) : node.func_name;
  if (row.fname.textContent !== name) row.fname.textContent = name;
  if (!group) setBadge(row.badge, state);
  if (node.label && row.mark.textContent !== ` ${node.label}`) row.mark.textContent = ` ${node.label}`;
  fillInPlace(row.label, row.fname, row.gap, group ? null : row.badge, node.label ? row.mark : null);
  if (created !== null) {
    const queuedEnd = started ?? ended ?? now;
    setLook(row.queued, {
      cls: "bar queued", testid: unstarted ? "timeline-waited" : null,
      style: `left: ${pct(x(created))}; width: ${pct(x(queuedEnd) - x(created))}`,
      title: unstarted ? `${node.func_name}: ${node.ended_at ? "never ran; waited" : "not started; waiting"} ${fmtDuration(queuedEnd - created)}${waitingFor(node) ? ` (${waitingFor(node)})` : ""}` : null,
    });
  }
  if (started !== null) {
    setLook(row.ran, {
      cls: `bar ran state-${cssToken(state)}`, testid: "timeline-bar",
      style: `left: ${pct(x(started))}; width: max(2px, ${pct(x(ended) - x(started))})`,
      title: `${node.func_name}: ${fmtDuration(ended - started)}${node.ended_at ? "" : " so far"}`,
    });
  }
  fillInPlace(row.bars, created !== null ? row.queued : null, started !== null ? row.ran : null);
  return row.el;
}

/** What is kept of the timeline drawn in `container`: its parts, and its rows by node. */
function skeleton() {
  const axis = h("span", { class: "tlabel muted" });
  const ticks = h("span", { class: "tbars ticks" });
  const trows = h("div", { class: "trows" });
  return { axis, ticks, trows, rows: new Map(), root: h("div", { class: "timeline", testid: "timeline" },
    h("div", { class: "trow axis" }, axis, ticks), trows,
    h("p", { class: "muted small legend" }, h("span", { class: "bar queued sample" }), " waiting to start (or never started)  ",
      h("span", { class: "bar ran sample" }), " running  ", h("span", { class: "bar ran crit sample" }),
      " on the critical path: what decided when it ended")) };
}

/** Draw the timeline of `dm` into `container`; clicking a run's row calls select(runId). Redrawn into the same
 * container, the rows of the nodes still shown are kept and updated in place. */
export function renderTimeline(container, dm, { critical = new Set(), selected = null, select, now = Date.now() }) {
  const list = rows(dm);
  const t = (s) => { const d = parseTime(s); return d ? d.getTime() : null; };
  const starts = list.map(({ node }) => t(node.created_at)).filter((x) => x !== null);
  const ends = list.map(({ node }) => t(node.ended_at) ?? (node.started_at || node.created_at ? now : null)).filter((x) => x !== null);
  if (!starts.length) {
    fill(container, h("p", { class: "muted", testid: "timeline-empty" }, "Nothing has started yet."));
    return;
  }
  const t0 = Math.min(...starts);
  const span = Math.max(1, Math.max(...ends, t0 + 1) - t0);
  const x = (ms) => (ms - t0) / span;
  let mine = kept.get(container);
  if (!mine) {
    mine = skeleton();
    kept.set(container, mine);
  }
  const drawn = new Map();
  const ctx = { critical, selected, select, t, x, now };
  fillInPlace(mine.trows, list.map(({ node, depth }) => {
    const key = `${node.kind}:${node.id}`;
    const row = mine.rows.get(key) || makeRow();
    drawn.set(key, row);
    return drawRow(row, node, depth, ctx);
  }));
  mine.rows = drawn;
  const axisText = `${list.length} rows · critical path: ${[...critical].length} nodes`;
  if (mine.axis.textContent !== axisText) mine.axis.textContent = axisText;
  fill(mine.ticks, [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { class: "tick", style: `left: ${pct(f)}` }, fmtDuration(f * span))));
  fillInPlace(container, mine.root);
}
