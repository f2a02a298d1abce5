/* Artifacts shown as people want to look at them: tables for lists of records and dataframes, pictures for
 * PNG and SVG bytes and figures, JSON as a collapsible tree, long values folded, and a download of the bytes.
 *
 * JSON artifacts are read whole (their serialized bytes are JSON, parsed here, never evaluated); pickled ones
 * only through their summary and its preview (sematic_k8s/previews.py): nothing is ever unpickled. */

import { getArtifact, getArtifactData } from "./api.js";
import { download, fill, h } from "./dom.js";
import { short } from "./format.js";

const TAG = "__sk__";
const FULL_BYTES = 2_000_000; // JSON artifacts up to this size are fetched whole to be shown
const INLINE_CHARS = 120; // shorter values are shown on one line
const FOLD_CHARS = 300; // longer strings are folded
const MAX_ROWS = 200;
const PNG = "iVBORw0KGgo"; // base64 of the PNG signature
// a download's file extension by the artifact's format (serialization.py's); another (client-written) format: .bin
const EXTENSIONS = { json: "json", pickle: "pickle" };

/** A tagged JSON tree (serialization.py) as plain JSON to show: tuples and sets as lists, dicts with other
 * keys as objects with those keys as text, dataclasses as their fields; bytes stay {__sk__: "bytes"}. */
export function plain(tree) {
  if (Array.isArray(tree)) return tree.map(plain);
  if (!tree || typeof tree !== "object") return tree;
  const tag = tree[TAG];
  if (tag === undefined) return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, plain(v)]));
  const v = tree.v;
  if (tag === "bytes") return tree;
  if (tag === "tuple" || tag === "set" || tag === "frozenset") return v.map(plain);
  if (tag === "dict") return Object.fromEntries(v.map(([k, x]) => [typeof k === "string" ? k : JSON.stringify(plain(k)), plain(x)]));
  if (tag === "dataclass") return plain(v);
  if (tag === "enum") return plain(v);
  return v; // datetime, date, time, uuid, decimal, path: their text
}

/** Rows of a table when `value` is a non-empty list of records (objects), else null. */
export function recordsTable(value) {
  if (!Array.isArray(value) || !value.length) return null;
  if (!value.every((r) => r && typeof r === "object" && !Array.isArray(r) && r[TAG] === undefined)) return null;
  const columns = [...new Set(value.flatMap((r) => Object.keys(r)))];
  if (columns.length > 40) return null;
  return { columns, rows: value.map((r) => columns.map((c) => r[c])) };
}

function imageOfBytes(tree) {
  if (!tree || tree[TAG] !== "bytes") return null;
  if (tree.v.startsWith(PNG)) return `data:image/png;base64,${tree.v}`;
  let head = "";
  try {
    head = atob(tree.v.slice(0, 400));
  } catch {
    return null;
  }
  return /^\s*(<\?xml[^>]*>\s*)?<svg[\s>]/.test(head) ? `data:image/svg+xml;base64,${tree.v}` : null;
}

const isSvgText = (v) => typeof v === "string" && /^\s*(<\?xml[^>]*>\s*)?<svg[\s>]/.test(v) && v.includes("</svg>");

function cellText(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(plain(v));
}

function table(columns, rows, note) {
  return h("div", { class: "value-table-wrap" },
    h("table", { class: "grid compact value-table", testid: "value-table" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.slice(0, MAX_ROWS).map((r) => h("tr", {}, r.map((v) => h("td", { class: "mono" }, fold(cellText(v), 80))))))),
    note ? h("p", { class: "muted small" }, note) : null);
}

/** A string, folded past `limit` characters. */
export function fold(text, limit = FOLD_CHARS) {
  if (text.length <= limit) return text;
  return h("details", { class: "fold", testid: "folded" }, h("summary", { class: "mono" }, `${text.slice(0, limit)}… (${text.length} characters)`),
    h("pre", { class: "json" }, text));
}

/** A JSON value as a tree: objects and lists are <details>, open near the top. */
export function jsonTree(value, depth = 0, key = null) {
  const label = key === null ? null : h("span", { class: "jkey" }, `${key}: `);
  if (value && typeof value === "object" && value[TAG] === "bytes") {
    return h("div", { class: "jleaf" }, label, h("span", { class: "muted" }, `${Math.floor(value.v.length * 3 / 4)} bytes`));
  }
  if (value && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const kind = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
    return h("details", { class: "jnode", open: depth < 2, testid: depth === 0 ? "json-tree" : null },
      h("summary", {}, label, h("span", { class: "muted" }, kind)),
      h("div", { class: "jkids" }, entries.slice(0, 500).map(([k, v]) => jsonTree(v, depth + 1, k)),
        entries.length > 500 ? h("div", { class: "muted" }, `… ${entries.length - 500} more`) : null));
  }
  return h("div", { class: "jleaf" }, label, h("code", {}, fold(JSON.stringify(value) ?? "undefined", 200)));
}

/** How a decoded JSON value is shown: a picture, a table, one line, or a tree. */
export function showPlain(tree) {
  const img = imageOfBytes(tree);
  if (img) return h("img", { class: "value-image", testid: "value-image", src: img, alt: "image artifact" });
  if (isSvgText(tree)) {
    return h("div", {}, h("img", { class: "value-image", testid: "value-image", alt: "SVG artifact",
      src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(tree)}` }), fold(tree));
  }
  const value = plain(tree);
  const records = recordsTable(value);
  if (records) return table(records.columns, records.rows, value.length > MAX_ROWS ? `first ${MAX_ROWS} of ${value.length} rows` : null);
  if (typeof value === "string") return value.length <= INLINE_CHARS ? h("code", {}, value) : fold(value);
  const text = JSON.stringify(value);
  if (text !== undefined && text.length <= INLINE_CHARS) return h("code", {}, text);
  return jsonTree(value);
}

/** A pickled value: its preview (table, picture) when it has one, else its repr, folded. */
function showSummary(artifact) {
  const s = artifact.summary || {};
  const p = s.preview;
  if (p && p.kind === "table") {
    const [r, c] = p.shape || [];
    return table(p.columns, p.rows, r !== undefined ? `${r} rows × ${c} columns${r > p.rows.length ? `, first ${p.rows.length} shown` : ""}` : null);
  }
  if (p && p.kind === "image" && /^image\/(png|jpeg|gif|webp)$/.test(p.mime)) {
    return h("img", { class: "value-image", testid: "value-image", src: `data:${p.mime};base64,${p.base64}`, alt: artifact.type_name });
  }
  const repr = typeof s.repr === "string" ? s.repr : JSON.stringify(s);
  return repr.length <= INLINE_CHARS && !repr.includes("\n") ? h("code", {}, repr) : fold(repr);
}

/** A "download" button for the bytes of `shown.artifact` (of resolution `shown.resolutionId`), the one it holds
 * when clicked; hidden while it holds none. */
function downloadButton(shown) {
  return h("button", {
    type: "button", class: "btn tiny", testid: "artifact-download", hidden: true,
    onclick: async (e) => {
      e.stopPropagation();
      const a = shown.artifact;
      if (!a) return;
      const blob = await getArtifactData(a.id, shown.resolutionId);
      download(blob, `${short(a.id)}-${a.type_name}`, Object.hasOwn(EXTENSIONS, a.format) ? EXTENSIONS[a.format] : "bin");
    },
  }, "download");
}

/**
 * Where a value is shown (a run's input or output): `cell` (how it looks), `type` (its type's name) and `button`
 * (its download), kept while their run is shown. show() draws another value in them in place, so a click on them
 * as the value changes is made; the value drawn again asks the server nothing.
 */
export class ValueSlot {
  constructor(cellAttrs = {}, typeAttrs = {}) {
    this.cell = h("div", { class: "summary", ...cellAttrs });
    this.type = h("span", { class: "mono muted", ...typeAttrs });
    this.button = downloadButton(this);
    this.artifact = null; // the one loaded
    this.resolutionId = null;
    this.shown = null; // what is shown: an artifact id, or the HTML of what stands in its place
  }

  /** Show artifact `id` of resolution `resolutionId` (fetched, then drawn by showArtifact), or, without one, `words`
   * (an element). The download button stays, holding the value shown before until the new one is fetched. */
  show(id, resolutionId, words) {
    const shown = id || words.outerHTML;
    if (shown === this.shown) return;
    this.shown = shown;
    if (!id) {
      this.artifact = null;
      this.button.hidden = true;
      this.type.textContent = "";
      this.cell.removeAttribute("title");
      fill(this.cell, words);
      return;
    }
    fill(this.cell, h("span", { class: "muted" }, "…"));
    getArtifact(id).then((a) => {
      if (this.shown !== id) return; // another value shown since
      this.artifact = a;
      this.resolutionId = resolutionId;
      this.cell.title = `artifact ${a.id} (${a.format}, ${a.size} bytes)`;
      this.type.textContent = a.type_name || "";
      this.button.title = `${a.size} bytes, ${a.format}`;
      this.button.hidden = false;
      return showArtifact(this.cell, a, resolutionId, () => this.shown === id);
    }).catch((e) => {
      if (this.shown === id) fill(this.cell, h("span", { class: "error" }, `artifact ${short(id)}: ${e.message}`));
    });
  }
}

/** Fill `cell` with how `artifact` looks (fetching JSON artifacts whole when they are small enough); the whole
 * value come back is drawn only while `still()` (the cell shows another value since: dropped). */
export async function showArtifact(cell, artifact, resolutionId, still = () => true) {
  if (artifact.format !== "json") {
    fill(cell, showSummary(artifact));
    return;
  }
  if (artifact.size > FULL_BYTES) {
    fill(cell, showPlain(artifact.summary), h("p", { class: "muted small" }, "(a summary: download it for all of it)"));
    return;
  }
  fill(cell, showPlain(artifact.summary));
  if (!JSON.stringify(artifact.summary).includes("…")) return; // the summary is the whole value
  try {
    const tree = JSON.parse(await (await getArtifactData(artifact.id, resolutionId)).text());
    if (still()) fill(cell, showPlain(tree));
  } catch (e) {
    if (still()) cell.append(h("p", { class: "muted small" }, `(showing a summary: ${e.message})`));
  }
}
