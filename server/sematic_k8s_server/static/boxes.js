/* The graph's boxes: what a run's box and a group's box hold, each box made once per shown node and updated in
 * place on each redraw (its classes and data; of its content, only the parts that changed are drawn anew). A
 * running resolution's graph is redrawn on each run event: a click begun on a box, or on a fold or page button,
 * badge or tag in it, as one comes ends on it, though that part changes (the browser drops a click whose element
 * left the page between its mousedown and mouseup: see dom.fillInPlace). */

import { badge, fillInPlace, fillKeepingDrawn, h, setBadge, setData, setText } from "./dom.js";
import { cssToken } from "./format.js";
import { groupState, groupText } from "./grouping.js";

/** The tags a box may show after a run's name, made once with the box (see tags()). */
const makeTags = () => ({
  cached: h("span", { class: "tag cached", testid: "run-tag", title: "its output came from the cache" }, "cached"),
  reused: h("span", { class: "tag reused", testid: "run-tag", title: "reused from the resolution it re-runs" }, "reused"),
  attempts: h("span", { class: "tag", testid: "run-tag" }),
});

/** The tags after a run's name (cached, reused, attempts): the box's own, their text updated in place, so a click
 * on one as it changes (another attempt) is made. */
function tags(node, kept) {
  if (node.attempts > 1) setText(kept.attempts, `${node.attempts} attempts`);
  return [node.cached ? kept.cached : null, node.reused ? kept.reused : null, node.attempts > 1 ? kept.attempts : null];
}

function button(label, testid, title, onclick) {
  return h("button", {
    type: "button", class: "btn tiny", testid, title,
    onclick: (e) => { e.stopPropagation(); onclick(); },
  }, label);
}

/** A group's own parts, made once with its box: its counts and its buttons to show its runs a page at a time. The
 * buttons act on what the box shows when clicked (box.shown: {node, page, act}), so they stay in the page as the
 * group changes (a run added to it, its counts). */
function makeGroupParts(box) {
  const act = (offset) => {
    const { node, page, act: a } = box.shown;
    a.expand(node.id, offset(node, page));
  };
  return {
    text: h("div", { class: "group-text", testid: "group-text" }),
    actions: h("div", { class: "group-actions" }),
    page: h("span", { class: "muted", testid: "group-page" }),
    prev: button("◀", "group-prev", "the previous page", () => act((n, page) => Math.max(0, n.offset - page))),
    next: button("▶", "group-next", "the next page", () => act((n, page) => n.offset + page)),
    hide: button("hide", "group-hide", "show them as one group again", () => act(() => null)),
    expand: button("", "group-expand", "", () => act(() => 0)),
  };
}

/** A group's content: its head's parts (name, its badge), then its counts and its page buttons, updated in place. */
function groupParts(node, page, box) {
  const parts = box.group;
  const paged = node.shown > 0;
  setText(parts.text, paged ? `${groupText(node)} not shown` : groupText(node));
  if (paged) {
    const to = Math.min(node.total, node.offset + node.shown);
    setText(parts.page, `runs ${node.offset + 1}–${to} of ${node.total} shown`);
    fillInPlace(parts.actions, parts.page, parts.prev, parts.next, parts.hide);
  } else {
    setText(parts.expand, `show ${Math.min(page, node.total)}`);
    parts.expand.title = `show ${page} of these runs one by one`;
    fillInPlace(parts.actions, parts.expand);
  }
  return [[h("span", { class: "fname" }, `${node.total} × ${node.func_name}`), box.badge], parts.text, parts.actions];
}

/** A run's content: its head's parts (fold toggle, name, its badge, its tags), then its label and whether it is
 * folded. `box`: the box's own parts, its badge and tags. */
function runParts(node, dm, act, box) {
  const foldable = dm.hasKids(node.id);
  const folded = dm.collapsed.has(node.id);
  return [[foldable ? button(folded ? "▸" : "▾", "fold-toggle", folded ? "show its nested runs" : "fold its nested runs",
    () => act.fold(node.id)) : null, h("span", { class: "fname" }, node.func_name), box.badge, tags(node, box.tags)],
  node.label ? h("div", { class: "label mono", testid: "run-label" }, node.label) : null,
  folded ? h("div", { class: "muted small" }, "nested runs folded") : null];
}

/** A box made for a node; its content filled by update(). */
function make(group) {
  const el = h("div", {
    testid: group ? "group-node" : "run-node", tabindex: "0", role: group ? "group" : "button",
    onclick: (e) => { e.stopPropagation(); el.go(); },
    onkeydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) el.go(); },
  });
  const head = h("div", { class: "run-head" });
  const box = { el, head, body: h("div", { class: "run-body" }, head), badge: badge(null), tags: makeTags(), shown: null };
  box.group = group ? makeGroupParts(box) : null;
  return box;
}

/** The boxes of one graph, kept by node across redraws. */
export class Boxes {
  constructor() {
    this.kept = new Map(); // "kind:id" -> {el, head, body, badge, tags, group, shown}
    this.drawn = new Map(); // those drawn in the redraw under way
  }

  /** The box of `node` made or updated in place: {el, body}; its nested boxes go in with nest(). ctx: {dm, page,
   * act, selected, critical, composite}. */
  draw(node, { dm, page, act, selected, critical, composite }) {
    const group = node.kind === "group";
    const key = `${node.kind}:${node.id}`;
    const box = this.kept.get(key) || make(group);
    this.drawn.set(key, box);
    const state = group ? groupState(node) : node.state;
    box.el.className = `run state-${cssToken(state)}${node.id === selected ? " selected" : ""}` +
      `${composite ? " composite" : ""}${group ? " group" : ""}${critical.has(node.id) ? " critical" : ""}`;
    setData(box.el, { runId: group ? null : node.id, groupId: group ? node.id : null, func: node.func_name, state,
      kind: node.kind });
    if (node.func_path) box.el.title = node.func_path;
    else box.el.removeAttribute("title");
    box.el.go = () => { if (!group) act.select(node.id); };
    setBadge(box.badge, state); // in place: a click on it as the state changes is made too
    box.shown = { node, page, act };
    const [head, ...rest] = group ? groupParts(node, page, box) : runParts(node, dm, act, box);
    fillKeepingDrawn(box.head, head.flat());
    fillKeepingDrawn(box.body, [box.head, ...rest]);
    return box;
  }

  /** Put `kids` (boxes' elements) in `box` after its content. */
  nest(box, kids) {
    fillInPlace(box.el, box.body, kids);
  }

  /** The redraw is over: boxes not drawn in it are forgotten. */
  done() {
    this.kept = this.drawn;
    this.drawn = new Map();
  }
}
