/* The timeline: a Gantt chart of the shown nodes (runs and groups), each a row with when it was created
 * (queued, light), started and ended (solid; a run whose code never began only waited: started.js); the critical path (critical.js) highlighted. Nested nodes are
 * indented under their composition. */

import { badge, fill, h } from "./dom.js";
import { cssToken, fmtDuration, parseTime } from "./format.js";
import { groupState, groupText } from "./grouping.js";
import { neverStarted, waitingFor } from "./started.js";

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

/** Draw the timeline of `dm` into `container`; clicking a run's row calls select(runId). */
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
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { class: "tick", style: `left: ${pct(f)}` }, fmtDuration(f * span)));
  const body = list.map(({ node, depth }) => {
    const group = node.kind === "group";
    const state = group ? groupState(node) : node.state;
    const created = t(node.created_at);
    const unstarted = !group && neverStarted(node); // handed to its executor, its code never began: it waited
    const started = unstarted ? null : t(node.started_at);
    const ended = t(node.ended_at) ?? (started !== null ? now : null);
    const bars = [];
    if (created !== null) {
      const queuedEnd = started ?? ended ?? now;
      bars.push(h("span", {
        class: "bar queued", testid: unstarted ? "timeline-waited" : null,
        style: `left: ${pct(x(created))}; width: ${pct(x(queuedEnd) - x(created))}`,
        title: unstarted ? `${node.func_name}: ${node.ended_at ? "never ran; waited" : "not started; waiting"} ${fmtDuration(queuedEnd - created)}${waitingFor(node) ? ` (${waitingFor(node)})` : ""}` : null,
      }));
    }
    if (started !== null) {
      bars.push(h("span", {
        class: `bar ran state-${cssToken(state)}`, testid: "timeline-bar",
        style: `left: ${pct(x(started))}; width: max(2px, ${pct(x(ended) - x(started))})`,
        title: `${node.func_name}: ${fmtDuration(ended - started)}${node.ended_at ? "" : " so far"}`,
      }));
    }
    const onCritical = critical.has(node.id);
    return h("div", {
      class: `trow${onCritical ? " critical" : ""}${node.id === selected ? " selected" : ""}`, testid: "timeline-row",
      data: { id: node.id, critical: onCritical ? "true" : "false", kind: node.kind, started: unstarted ? "false" : "true" },
      onclick: () => { if (!group) select(node.id); },
    },
    h("span", { class: "tlabel", style: `padding-left: ${6 + depth * 14}px`, title: node.func_path },
      h("span", { class: "fname" }, group ? groupText(node) : node.func_name), " ", group ? null : badge(state),
      node.label ? h("span", { class: "muted mono" }, ` ${node.label}`) : null),
    h("span", { class: "tbars" }, bars));
  });
  fill(container, h("div", { class: "timeline", testid: "timeline" },
    h("div", { class: "trow axis" }, h("span", { class: "tlabel muted" },
      `${list.length} rows · critical path: ${[...critical].length} nodes`), h("span", { class: "tbars ticks" }, ticks)),
    h("div", { class: "trows" }, body),
    h("p", { class: "muted small legend" }, h("span", { class: "bar queued sample" }), " waiting to start (or never started)  ",
      h("span", { class: "bar ran sample" }), " running  ", h("span", { class: "bar ran crit sample" }),
      " on the critical path: what decided when it ended")));
}
