/* The critical path of a resolution: the chain of runs that decided when it ended. Pure: no DOM.
 *
 * From the root, step to what ended last among what the current node waited for: a composition waits for its
 * nested nodes, any node waits for the nodes whose outputs it takes. Running nodes count as ending `now`.
 */

import { parseTime } from "./format.js";

/** ms since the epoch of a node's end (its start, or now, while it runs; null when it never started). */
export function endOf(node, now) {
  const end = parseTime(node.ended_at);
  if (end) return end.getTime();
  return node.started_at || node.created_at ? now : null;
}

/**
 * Ids on the critical path. `nodes` is a list of {id, parent_id, created_at, started_at, ended_at}; `edges`
 * [{source, destination}]. `now` in ms stands for the end of what has not ended.
 */
export function criticalPath(nodes, edges, now = Date.now()) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const kids = new Map();
  for (const n of nodes) {
    if (n.parent_id && byId.has(n.parent_id) && n.parent_id !== n.id) {
      if (!kids.has(n.parent_id)) kids.set(n.parent_id, []);
      kids.get(n.parent_id).push(n);
    }
  }
  const deps = new Map();
  for (const e of edges) {
    if (!byId.has(e.source) || !byId.has(e.destination)) continue;
    if (!deps.has(e.destination)) deps.set(e.destination, []);
    deps.get(e.destination).push(byId.get(e.source));
  }
  const last = (list) => {
    let best = null;
    let bestEnd = -Infinity;
    for (const n of list || []) {
      const end = endOf(n, now);
      if (end !== null && (end > bestEnd || (end === bestEnd && best && n.id < best.id))) {
        best = n;
        bestEnd = end;
      }
    }
    return best;
  };
  const roots = nodes.filter((n) => !n.parent_id || !byId.has(n.parent_id) || n.parent_id === n.id);
  const path = new Set();
  let cur = last(roots);
  while (cur && !path.has(cur.id)) {
    path.add(cur.id);
    const inner = last(kids.get(cur.id));
    if (inner) {
      cur = inner;
      continue;
    }
    // a leaf: what it waited for, ending no later than it started (or anything it took an input from)
    const start = (parseTime(cur.started_at) || parseTime(cur.created_at) || { getTime: () => now }).getTime();
    const inputs = deps.get(cur.id) || [];
    cur = last(inputs.filter((d) => (endOf(d, now) ?? Infinity) <= start)) || last(inputs);
  }
  return path;
}
