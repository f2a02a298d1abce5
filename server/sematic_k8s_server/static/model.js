/* A resolution's graph as the dashboard reads it: runs by id, the nesting of runs in their compositions,
 * and the edges between them. Built once per fetched graph; shared by the layout, the graph and the run panel.
 * Pure: no DOM, no fetching.
 */

/** Run and resolution states that never change again. */
export const TERMINAL = new Set(["resolved", "failed", "canceled"]);

/** Creation order (then id): how siblings are ordered wherever order is not set by dependencies. */
export const byCreated = (a, b) => String(a.created_at).localeCompare(String(b.created_at)) || a.id.localeCompare(b.id);

/** The run ids a value template refers to ({run: ID} anywhere inside lists and objects). */
function runRefs(template, out = []) {
  if (Array.isArray(template)) template.forEach((x) => runRefs(x, out));
  else if (template && typeof template === "object") {
    if (typeof template.run === "string") out.push(template.run);
    else Object.values(template).forEach((x) => runRefs(x, out));
  }
  return out;
}

/** The graph's edges ({source, destination, param}; source null for a given value); derived from the
 * runs' input_refs when a server sends none. */
export function edgesOf(g) {
  if (Array.isArray(g.edges)) return g.edges;
  const edges = [];
  for (const run of g.runs) {
    for (const [param, t] of Object.entries(run.input_refs || {})) {
      const srcs = runRefs(t);
      (srcs.length ? srcs : [null]).forEach((s) => edges.push({ source: s, destination: run.id, param }));
    }
  }
  return edges;
}

/**
 * The model of a graph response ({resolution, runs, edges}):
 *   resolution  the resolution record
 *   runs        every run
 *   byId        Map id -> run
 *   roots       runs shown at the top level, in creation order: those whose parent is not in the graph
 *               (a broken parent chain that loops is cut, so every run is shown exactly once)
 *   children    Map id -> its nested runs in creation order (only for runs that have some)
 *   incoming    Map id -> edges into that run
 */
export function graphModel(g) {
  const runs = g.runs || [];
  const byId = new Map(runs.map((r) => [r.id, r]));
  const children = new Map();
  const roots = [];
  for (const run of runs) {
    if (run.parent_id && run.parent_id !== run.id && byId.has(run.parent_id)) {
      if (!children.has(run.parent_id)) children.set(run.parent_id, []);
      children.get(run.parent_id).push(run);
    } else {
      roots.push(run);
    }
  }
  // runs on a parent loop are reachable from no root: each loop becomes a root of its own
  const reached = new Set();
  const reach = (run) => {
    reached.add(run.id);
    for (const kid of children.get(run.id) || []) if (!reached.has(kid.id)) reach(kid);
  };
  roots.forEach(reach);
  for (const run of [...runs].sort(byCreated)) {
    if (reached.has(run.id)) continue;
    const siblings = children.get(run.parent_id);
    siblings.splice(siblings.indexOf(run), 1);
    if (!siblings.length) children.delete(run.parent_id);
    roots.push(run);
    reach(run);
  }
  roots.sort(byCreated);
  for (const kids of children.values()) kids.sort(byCreated);

  const incoming = new Map();
  for (const e of edgesOf({ ...g, runs })) {
    if (!e.destination) continue;
    if (!incoming.has(e.destination)) incoming.set(e.destination, []);
    incoming.get(e.destination).push(e);
  }
  return { resolution: g.resolution, runs, byId, roots, children, incoming };
}
