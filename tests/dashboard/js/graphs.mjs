// Graphs for the dashboard's JS tests, written the way the API sends them ({resolution, runs, edges}).

import { fileURLToPath } from "node:url";

export const STATIC = fileURLToPath(new URL("../../../server/sematic_k8s_server/static/", import.meta.url));

/** A run record: `parent` nests it; `order` sets its creation time (default: the order runs are listed). */
export function run(id, { parent = null, order = 0, func = id, state = "resolved" } = {}) {
  const seconds = String(order).padStart(6, "0");
  return { id, parent_id: parent, func_name: func, func_path: `pkg:${func}`, state, created_at: `2025-01-01T${seconds}` };
}

/** A graph response; edges [source, destination, param?] (source null: a given value). */
export function graph(runs, edges = []) {
  runs.forEach((r, i) => { if (r.created_at.endsWith("000000")) r.created_at = `2025-01-01T${String(i + 1).padStart(6, "0")}`; });
  return {
    resolution: { id: "res", state: "resolved" },
    runs,
    edges: edges.map(([source, destination, param = "x"]) => ({ source, destination, param })),
  };
}

/** A made-up content size: 8 px a character of the run's name (plus room for its state badge), 18 px a line
 * (its head, then one per incoming edge), so more content means a bigger box, as in the page. */
export function textSize(model) {
  return (r) => {
    const lines = (model.incoming.get(r.id) || []).length;
    return { width: 8 * (r.func_name.length + 10), height: 18 * (1 + lines) };
  };
}

/** A small seeded PRNG (mulberry32), so random graphs are the same on every run. */
export function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random pipeline: nested compositions up to 4 deep (a run is listed after its composition), names of
 * random length, some given values, and edges between any runs: only from a run listed earlier to one listed
 * later when `acyclic` (then no loops, even counting an input from inside a sibling as one from the sibling),
 * else any way round. */
export function randomGraph(seed, size, { acyclic = false } = {}) {
  const rnd = random(seed);
  const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
  const runs = [run("r0", { func: "pipeline" })];
  const depth = new Map([["r0", 0]]);
  for (let i = 1; i < size; i++) {
    const parents = runs.filter((r) => depth.get(r.id) < 4);
    const parent = rnd() < 0.15 ? null : pick(parents).id;
    const id = `r${i}`;
    runs.push(run(id, { parent, func: "f".repeat(1 + Math.floor(rnd() * 20)), order: Math.floor(rnd() * 1000) }));
    depth.set(id, parent === null ? 0 : depth.get(parent) + 1);
  }
  const edges = [];
  for (let i = 0; i < size * 1.5; i++) {
    let [a, b] = [Math.floor(rnd() * size), Math.floor(rnd() * size)];
    if (acyclic && a >= b) {
      if (a === b) continue;
      [a, b] = [b, a];
    }
    edges.push([rnd() < 0.1 ? null : runs[a].id, runs[b].id, `p${i % 4}`]);
  }
  return graph(runs, edges);
}

/** The overview the server sends for a graph() ({nodes, edges}), every run shown as itself. */
export function overviewOf(g) {
  const nodes = g.runs.map((r) => ({ kind: "run", ...r, composite: g.runs.some((k) => k.parent_id === r.id) }));
  const edges = g.edges.filter((e) => e.source).map((e) => ({ source: e.source, destination: e.destination, params: [e.param] }));
  return { resolution: g.resolution, nodes, edges };
}
