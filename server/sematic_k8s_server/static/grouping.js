/* What the graph and the timeline show of a resolution's overview (GET /resolutions/ID/overview): its nodes
 * (runs, and groups of sibling runs of one func), nested in their compositions, with compositions the user
 * collapsed folded into one box, and the edges between what is shown. Pure: no DOM, no fetching.
 */

import { TERMINAL } from "./model.js";

/** States in the order a group's counts are told. */
const STATE_ORDER = ["resolved", "running", "scheduled", "created", "failed", "canceled"];

/** "480 resolved, 20 running": counts by state, the states in a fixed order, then any others. */
export function countsText(states = {}) {
  const keys = [...STATE_ORDER.filter((s) => states[s]), ...Object.keys(states).filter((s) => !STATE_ORDER.includes(s) && states[s]).sort()];
  return keys.map((s) => `${states[s]} ${s}`).join(", ");
}

/** "500 × add: 480 resolved, 20 running". */
export function groupText(node) {
  return `${node.count} × ${node.func_name}: ${countsText(node.states)}`;
}

/** The state a group is drawn in: failed if any failed, running while any is not ended, else resolved. */
export function groupState(node) {
  const states = node.states || {};
  if (states.failed) return "failed";
  if (Object.keys(states).some((s) => !TERMINAL.has(s) && states[s])) return "running";
  if (states.canceled && !states.resolved) return "canceled";
  return "resolved";
}

/** "13/41 resolved" from runs counted by state. */
export function progressText(counts) {
  const c = counts || {};
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  return `${c.resolved || 0}/${total} resolved`;
}

/**
 * The display model:
 *   nodes     every node of the overview, by id (Map)
 *   roots     nodes shown at the top level
 *   children  Map id -> the nodes shown inside it (absent for collapsed compositions and leaves)
 *   edges     [{source, destination, params}] between shown nodes, each pair once
 *   shown     Set of the ids of shown nodes
 *   collapsed the compositions folded (those in `collapsed` that have nested nodes)
 * `collapsed` is a Set of composition ids.
 */
export function displayModel(overview, collapsed = new Set()) {
  const list = overview.nodes || [];
  const nodes = new Map(list.map((n) => [n.id, n]));
  const parentOf = (n) => (n.parent_id && n.parent_id !== n.id && nodes.has(n.parent_id) ? n.parent_id : null);
  const allKids = new Map();
  for (const n of list) {
    const p = parentOf(n);
    if (p) {
      if (!allKids.has(p)) allKids.set(p, []);
      allKids.get(p).push(n);
    }
  }
  // the shown node standing for each node: itself, or its outermost collapsed ancestor
  const shownAs = new Map();
  const standFor = (n) => {
    if (shownAs.has(n.id)) return shownAs.get(n.id);
    let rep = n.id;
    const seen = new Set();
    for (let p = parentOf(n); p && !seen.has(p); p = parentOf(nodes.get(p))) {
      seen.add(p);
      if (collapsed.has(p)) rep = p;
    }
    shownAs.set(n.id, rep);
    return rep;
  };
  const shown = new Set(list.filter((n) => standFor(n) === n.id).map((n) => n.id));
  const roots = list.filter((n) => shown.has(n.id) && (!parentOf(n) || !shown.has(parentOf(n))));
  const children = new Map();
  for (const [p, kids] of allKids) {
    if (shown.has(p) && !collapsed.has(p)) children.set(p, kids.filter((k) => shown.has(k.id)));
  }
  const pairs = new Map();
  for (const e of overview.edges || []) {
    if (!nodes.has(e.source) || !nodes.has(e.destination)) continue;
    const s = standFor(nodes.get(e.source));
    const d = standFor(nodes.get(e.destination));
    if (s === d) continue;
    const key = `${s}\u0000${d}`;
    if (!pairs.has(key)) pairs.set(key, { source: s, destination: d, params: [] });
    const params = pairs.get(key).params;
    for (const p of e.params || []) if (!params.includes(p)) params.push(p);
  }
  const folded = new Set([...collapsed].filter((id) => shown.has(id) && allKids.has(id)));
  return { nodes, roots, children, edges: [...pairs.values()], shown, collapsed: folded, hasKids: (id) => allKids.has(id) };
}
