/* Building the page: elements from plain data, and the small pieces every view uses (badges, links,
 * durations, label/value lists).
 *
 * Every string from the API reaches the page through text nodes or attribute values (see h()), never
 * through innerHTML.
 */

import { cssToken, fmtDuration, parseTime } from "./format.js";

/** Create an element. attrs: class, testid, data (object), on<event> (function), or attributes. */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "testid") node.dataset.testid = v;
    else if (k === "data") Object.entries(v).forEach(([dk, dv]) => { if (dv != null) node.dataset[dk] = dv; });
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c)); // strings become text nodes
  }
  return node;
}

/** Replace el's children (null, undefined and false are left out, strings become text). */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** `fill(el, ...children)` that leaves in place the children it keeps (in the order they were in): they are never
 * taken out of the page, so what holds the focus (and its caret) keeps it, and a click begun on one of them (the
 * mouse pressed on a button as a live event redraws the page) ends on it. A node taken out between a mousedown and
 * its mouseup gets no click: the browser drops it. */
export function fillInPlace(el, ...children) {
  const kids = children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
  const kept = new Set(kids);
  for (const old of [...el.childNodes]) if (!kept.has(old)) old.remove();
  kids.forEach((c, i) => { if (el.childNodes[i] !== c) el.insertBefore(c, el.childNodes[i] || null); });
  return el;
}

export const $ = (sel) => document.querySelector(sel);

export function badge(state, testid = "state-badge") {
  return h("span", { class: `badge state-${cssToken(state)}`, testid, data: { state } }, state || "?");
}

/** Set `el`'s text to `text`, in place: `el` stays, and its text too while it is the same (a selection in it is
 * kept, as a user selecting it to copy it expects). */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
  return el;
}

/** Badge `el` (made by badge()) updated in place to show `state`. */
export function setBadge(el, state) {
  el.className = `badge state-${cssToken(state)}`;
  if (state) el.dataset.state = state;
  else delete el.dataset.state;
  return setText(el, state || "?");
}

/** Set `el`'s data attributes to `data` (null or undefined: removed). */
export function setData(el, data) {
  for (const [k, v] of Object.entries(data)) {
    if (v === null || v === undefined) delete el.dataset[k];
    else el.dataset[k] = v;
  }
  return el;
}

export function link(href, text, testid, title) {
  return h("a", { href, testid, title, class: "mono" }, text);
}

/** A duration; while `end` is missing and the thing is live, it ticks (see tickDurations). */
export function duration(start, end, live) {
  const a = parseTime(start);
  const b = parseTime(end);
  if (!a) return h("span", { class: "duration" }, "—");
  if (b) return h("span", { class: "duration" }, fmtDuration(b - a));
  if (!live) return h("span", { class: "duration" }, "—");
  return h("span", { class: "duration ticking", data: { since: String(a.getTime()) } }, fmtDuration(Date.now() - a));
}

/** Advance every ticking duration on the page (called every second). */
export function tickDurations() {
  document.querySelectorAll(".ticking").forEach((el) => {
    el.textContent = fmtDuration(Date.now() - Number(el.dataset.since));
  });
}

const shownPairs = (pairs) => pairs.filter(([, v]) => v !== null && v !== undefined);
const fact = ([k, v]) => h("div", { class: "fact" }, h("dt", {}, k), h("dd", {}, v));

/** A label/value list; pairs with a null or undefined value are left out. */
export function factList(pairs, testid) {
  return h("dl", { class: "facts", testid }, shownPairs(pairs).map(fact));
}

/** factList's pairs drawn into list `el` in place (see fillKeepingDrawn). */
export const fillFacts = (el, pairs) => fillKeepingDrawn(el, shownPairs(pairs).map(fact));

/** `fillInPlace(el, ...nodes)` that keeps, for each of `nodes`, the child of `el` drawn as it is (the same HTML
 * when both were made): what did not change stays in the page (a link or button in it clicked as a live event
 * redraws the page gets the click: see fillInPlace), the others are drawn anew. Strings are text (drawn anew: a
 * click on text is its element's). A node already in `el` (a part its owner keeps and updates in place: a toolbar, a
 * tab's pane, the log) stays as it is, never compared: its HTML is not read (a log pane holds megabytes of it). */
export function fillKeepingDrawn(el, nodes) {
  const given = nodes.filter((n) => n !== null && n !== undefined && n !== false);
  const placed = new Set(given.filter((n) => n instanceof Element && n.parentNode === el));
  const before = new Map([...el.children].filter((c) => c.drawn && !placed.has(c)).map((c) => [c.drawn, c]));
  return fillInPlace(el, given.map((n) => {
    if (!(n instanceof Element)) return n; // text
    if (placed.has(n)) {
      delete n.drawn; // changed in place since it was made, maybe: kept as itself only
      return n;
    }
    n.drawn = n.outerHTML; // as made (a ticking duration's text changes since)
    const kept = before.get(n.drawn);
    before.delete(n.drawn);
    return kept || n;
  }));
}

export function section(title, body) {
  return h("section", { class: "psec" }, h("h3", {}, title), body);
}

/** Save `blob` as a file named `stem`.`ext` (through a temporary link). `stem` is made of client-written words (a
 * func's name, a type's): only its letters, digits, `_`, `.` and `-` are kept (each other character becomes `_`: no
 * bidi override, no path); `ext` is this page's own (a record's words never choose what kind of file it saves). */
export function download(blob, stem, ext) {
  const name = `${String(stem).replace(/[^A-Za-z0-9_.-]/g, "_").replace(/^\.+/, "")}.${ext}`;
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A readable page for something that cannot be shown: what, why, and the way back. */
export function problem(title, detail, testid = "problem") {
  return h("div", { class: "problem", testid },
    h("h1", {}, title), h("p", { class: "muted" }, detail), h("p", {}, h("a", { href: "#/", testid: "back-to-list" }, "← all pipelines")));
}
