/* Where each run's box goes in the graph. Pure: no DOM; positions are computed from the model (model.js)
 * and each run's content size, which the caller measures (graph.js) or, in tests, makes up.
 *
 * A run's box holds its own content (name, state, inputs) and, for a composition, its nested runs below it.
 * Nested runs stand in columns by dependency depth, so values flow left to right: a run goes one column
 * right of the sibling it takes an input from (an input from deeper inside a sibling counts as from that
 * sibling). A column is as wide as its widest box and every box in it is stretched to that width; columns
 * are centred on each other, with room for an arrow between two columns. Top-level runs are stacked.
 *
 * The result is in graph coordinates (top-left of the graph is 0,0), one box per run:
 *   {width, height, boxes: Map id -> {x, y, width, height}, arrows: [{parent, x, y}] (arrow centres)}
 * A layout library can later replace the placement here behind the same call.
 */

/** Spacing in CSS pixels. `inset` is a box's border plus padding around its content (see .run in style.css). */
export const METRICS = Object.freeze({
  inset: Object.freeze({ left: 14, right: 11, top: 8, bottom: 8 }),
  gap: 8, // between boxes in one column, and between top-level boxes
  nestGap: 8, // between a composition's own content and its nested runs
  columnGap: 34, // between two dependency columns; their arrow is drawn in the middle
  minWidth: 150, // of any box
});

/** The ancestor of run `id` (or the run itself) that is one of `ids`, or null. */
function siblingOf(model, ids, id) {
  for (let r = model.byId.get(id), n = 0; r && n < 1000; r = model.byId.get(r.parent_id), n++) {
    if (ids.has(r.id)) return r.id;
  }
  return null;
}

/** Siblings (runs nested in one composition, or the top-level runs) in columns by dependency depth; each
 * column in the siblings' given order. A dependency loop is cut where it is found. */
export function columnsOf(model, siblings) {
  const ids = new Set(siblings.map((k) => k.id));
  const depth = new Map();
  const depthOf = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    let d = 0;
    for (const e of model.incoming.get(id) || []) {
      const s = e.source && siblingOf(model, ids, e.source);
      if (s && s !== id) d = Math.max(d, depthOf(s, seen) + 1);
    }
    depth.set(id, d);
    return d;
  };
  const cols = [];
  for (const k of siblings) {
    const d = depthOf(k.id, new Set());
    (cols[d] = cols[d] || []).push(k);
  }
  return cols.filter(Boolean);
}

function withDefaults(metrics) {
  return { ...METRICS, ...metrics, inset: { ...METRICS.inset, ...(metrics.inset || {}) } };
}

/**
 * Lay out a graph model.
 * @param model        from graphModel(): roots, children, byId, incoming
 * @param contentSize  run -> {width, height} of the run's own content, without its nested runs
 * @param metrics      overrides of METRICS
 */
export function layoutGraph(model, contentSize, metrics = {}) {
  const m = withDefaults(metrics);
  const { inset } = m;
  const sizes = new Map(); // id -> {width, height}
  const offsets = new Map(); // id -> {dx, dy}: its box's corner from its parent box's corner
  const localArrows = []; // {parent, dx, dy}

  const place = (run) => {
    const content = contentSize(run) || {};
    const cw = Math.max(0, Number(content.width) || 0);
    const ch = Math.max(0, Number(content.height) || 0);
    let innerW = cw;
    let innerH = ch;
    const kids = model.children.get(run.id) || [];
    if (kids.length) {
      const cols = columnsOf(model, kids).map((col) => {
        col.forEach(place);
        const width = Math.max(...col.map((k) => sizes.get(k.id).width));
        const height = col.reduce((sum, k) => sum + sizes.get(k.id).height, 0) + m.gap * (col.length - 1);
        return { col, width, height };
      });
      const rowH = Math.max(...cols.map((c) => c.height));
      const top = inset.top + ch + m.nestGap;
      let x = 0;
      cols.forEach(({ col, width, height }, i) => {
        if (i) localArrows.push({ parent: run.id, dx: inset.left + x - m.columnGap / 2, dy: top + rowH / 2 });
        let y = Math.floor((rowH - height) / 2);
        for (const k of col) {
          sizes.get(k.id).width = width; // stretched to its column
          offsets.set(k.id, { dx: inset.left + x, dy: top + y });
          y += sizes.get(k.id).height + m.gap;
        }
        x += width + m.columnGap;
      });
      innerW = Math.max(cw, x - m.columnGap);
      innerH = ch + m.nestGap + rowH;
    }
    sizes.set(run.id, {
      width: Math.max(m.minWidth, inset.left + innerW + inset.right),
      height: inset.top + innerH + inset.bottom,
    });
  };

  model.roots.forEach(place);
  const width = model.roots.length ? Math.max(...model.roots.map((r) => sizes.get(r.id).width)) : 0;
  const boxes = new Map();
  const put = (run, x, y) => {
    boxes.set(run.id, { x, y, ...sizes.get(run.id) });
    for (const k of model.children.get(run.id) || []) {
      const o = offsets.get(k.id);
      put(k, x + o.dx, y + o.dy);
    }
  };
  let y = 0;
  for (const r of model.roots) {
    sizes.get(r.id).width = width; // top-level boxes share one width
    put(r, 0, y);
    y += sizes.get(r.id).height + m.gap;
  }
  const arrows = localArrows.map((a) => {
    const p = boxes.get(a.parent);
    return { parent: a.parent, x: p.x + a.dx, y: p.y + a.dy };
  });
  return { width, height: model.roots.length ? y - m.gap : 0, boxes, arrows };
}
