/* The pipelines index: resolutions grouped by root func, the func with the newest first, each with its recent
 * history (state, progress while running, when, duration, rerun of, tags and note); search and filters by
 * func, state and time range. */

import { listPipelines } from "./api.js";
import { badge, duration, fill, fillInPlace, fillKeepingDrawn, h, link, setBadge, setData } from "./dom.js";
import { fmtTime, short } from "./format.js";
import { countsText, progressText } from "./grouping.js";
import { labelsLine } from "./labels.js";
import { View } from "./live.js";
import { TERMINAL } from "./model.js";
import { resHref } from "./routes.js";
import { claimWaiting } from "./started.js";

const STATES = ["", "created", "running", "canceling", "resolved", "failed", "canceled"];
const RANGES = [["", "any time"], ["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]];
const RANGE_MS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const GROUPS = 20;
const WAITING_CHARS = 40; // of what a claimed rerun waits for, in its row (as `resolutions list` cuts it)

export class ListView extends View {
  constructor() {
    super();
    this.offset = 0;
    this.filters = { q: "", func: "", state: "", range: "" };
    this.perFunc = 5;
    this.sig = null;
    this.funcs = [];
    this.funcsTotal = 0; // root funcs recorded: the server names the first 1,000 (page.funcs)
    this.toolbar = null;
    this.funcSelect = null; // the func filter, its options drawn in place (fillFuncs)
    this.results = h("div", { class: "pipelines", testid: "pipelines" });
    this.groups = new Map(); // root func -> its group drawn, {el, head, table, rows, byId}: kept while it is shown
    this.el = h("section", { class: "list", testid: "resolutions-view" });
  }

  mount(main) {
    this.sig = null;
    fill(main, this.el);
    this.toolbar = this.renderToolbar();
    fill(this.el, this.toolbar, this.results);
    fill(this.results, h("p", { class: "muted" }, "Loading pipelines…"));
    return this.refresh();
  }

  onEvent(ev) {
    if (ev.changed) return; // a run's notes, inputs, output or error: no row shows them
    if (this.timer) return; // progress changes with every run: at most one refresh a second
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.active) this.refresh();
    }, 1000);
  }

  set(key, value) {
    this.filters[key] = value;
    this.offset = 0;
    this.perFunc = this.filters.func ? 50 : 5;
    this.refresh();
  }

  query() {
    const f = this.filters;
    const q = { limit: GROUPS, offset: this.offset, per_func: this.perFunc };
    if (f.q.trim()) q.q = f.q.trim();
    if (f.func) q.func = f.func;
    if (f.state) q.state = f.state;
    if (f.range) q.since = new Date(Date.now() - RANGE_MS[f.range]).toISOString();
    return q;
  }

  async refresh() {
    let page;
    try {
      const query = this.query(); // its `since` moves with the clock: what is asked about is the filters
      const about = JSON.stringify([this.filters, this.offset, this.perFunc]);
      page = await this.answers.take(about, (signal) => listPipelines(query, { signal }));
    } catch (e) {
      this.sig = null;
      fill(this.results, h("p", { class: "error", testid: "load-error" }, `Cannot list pipelines: ${e.message}`));
      return;
    }
    if (page === undefined) return; // a query superseded (aborted), or an older one's answer come after a newer one's
    const sig = JSON.stringify([page, this.filters]);
    if (sig === this.sig) return;
    this.sig = sig;
    const total = page.funcs_total ?? page.funcs.length;
    if (JSON.stringify(page.funcs) !== JSON.stringify(this.funcs) || total !== this.funcsTotal) {
      this.funcs = page.funcs;
      this.funcsTotal = total;
      this.fillFuncs();
    }
    this.render(page);
  }

  /** The toolbar: search and filters, kept while the list is shown (a search being typed keeps its focus and text
   * as live events bring pipelines the func filter did not list: fillFuncs). */
  renderToolbar() {
    const f = this.filters;
    let typing = null;
    const search = h("input", {
      type: "search", class: "search", placeholder: "search funcs, tags, notes, ids", testid: "search", value: f.q,
      oninput: (e) => { clearTimeout(typing); typing = setTimeout(() => this.set("q", e.target.value), 250); },
    });
    const select = (testid, key, options) => h("select", { testid, onchange: (e) => this.set(key, e.target.value) },
      options.map(([v, label]) => h("option", { value: v, selected: v === f[key] }, label)));
    this.funcSelect = select("func-filter", "func", []);
    this.fillFuncs();
    return h("div", { class: "toolbar wrap-tools" }, h("h1", {}, "Pipelines"), h("span", { class: "spacer" }), search,
      this.funcSelect,
      select("state-filter", "state", STATES.map((s) => [s, s || "all states"])),
      select("time-filter", "range", RANGES));
  }

  /** The func filter's options, from the funcs the server names, drawn in place (the select stays). */
  fillFuncs() {
    const f = this.filters;
    const funcs = f.func && !this.funcs.includes(f.func) ? [f.func, ...this.funcs] : this.funcs; // one past the first
    const more = this.funcsTotal - this.funcs.length;
    const options = [["", "all funcs"], ...funcs.map((p) => [p, p]),
      ...(more > 0 ? [["\u2026", `\u2026 and ${more} more: search for one by name`, true]] : [])];
    fill(this.funcSelect, options.map(([v, label, disabled]) => h("option", { value: v, selected: v === f.func, disabled },
      label)));
    this.funcSelect.value = f.func;
  }

  render(page) {
    const groups = page.groups || [];
    const pager = h("div", { class: "pager" },
      h("button", {
        type: "button", class: "btn small", testid: "page-newer", disabled: this.offset === 0,
        onclick: () => { this.offset = Math.max(0, this.offset - GROUPS); this.refresh(); },
      }, "← Newer"),
      h("span", { class: "muted small", testid: "pipelines-count" }, `${page.total} pipeline${page.total === 1 ? "" : "s"}`),
      h("button", {
        type: "button", class: "btn small", testid: "page-older", disabled: this.offset + GROUPS >= page.total,
        onclick: () => { this.offset += GROUPS; this.refresh(); },
      }, "Older →"));
    if (!groups.length) {
      const any = Object.values(this.filters).some(Boolean);
      fill(this.results, h("p", { class: "muted", testid: "no-resolutions" },
        any ? "No resolution matches these filters." : "No resolutions recorded yet."));
      return;
    }
    // a pipeline's group stays, and what did not change in it: a click on its links as a live event redraws the
    // list is made (a click whose element leaves the page between its mousedown and mouseup is dropped)
    this.groups = new Map(groups.map((g) => [g.root_func_path, this.group(g)]));
    fillKeepingDrawn(this.results, [...[...this.groups.values()].map((g) => g.el), page.total > GROUPS ? pager : null]);
  }

  /** Pipeline `g`'s group ({el, head, table, rows, byId}): the one shown, if any, its head and rows drawn in place
   * (each row kept by resolution, its cells updated in place: see row()). */
  group(g) {
    const name = g.root_func_path.split(":").pop();
    const states = countsText(g.states);
    const more = g.count > g.resolutions.length && !this.filters.func;
    const kept = this.groups.get(g.root_func_path) || {
      el: h("section", { class: "pipeline", testid: "pipeline-group", data: { func: g.root_func_path } }),
      head: h("div", { class: "pipeline-head" }),
      table: h("table", { class: "grid", testid: "resolutions-table" },
        h("thead", {}, h("tr", {}, ["ID", "State", "Progress", "Created", "Duration", "Rerun of", "Tags and note"]
          .map((t) => h("th", {}, t))))),
      rows: h("tbody", {}),
      byId: new Map(), // resolution id -> its row drawn ({tr, cells, badge})
    };
    fillKeepingDrawn(kept.head, [
      h("h2", { class: "mono", testid: "pipeline-name" }, name),
      h("span", { class: "muted mono small wrap" }, g.root_func_path),
      h("span", { class: "spacer" }),
      h("span", { class: "muted small", testid: "pipeline-count" }, `${g.count} resolution${g.count === 1 ? "" : "s"}: ${states}`)]);
    const byId = new Map(g.resolutions.map((r) => [r.id, row(r, kept.byId.get(r.id))]));
    kept.byId = byId; // a resolution no longer shown is forgotten
    fillInPlace(kept.rows, [...byId.values()].map((r) => r.tr));
    fillInPlace(kept.table, kept.table.tHead, kept.rows);
    fillKeepingDrawn(kept.el, [kept.head, kept.table, more ? h("button", {
      type: "button", class: "btn small more", testid: "group-more",
      onclick: () => this.set("func", g.root_func_path),
    }, `all ${g.count} →`) : null]);
    return kept;
  }

}

const CELLS = ["", "", "nowrap", "nowrap", "nowrap", "", "wrap"]; // the classes of a row's cells

/** Resolution `r`'s row: `kept` (the one drawn for it before) updated in place, or a new one. Its state and
 * progress change with each of its run events: its cells stay, its badge is updated, and in each cell what is drawn
 * as before stays (fillKeepingDrawn), so a click on its link (or its badge, a tag) as it changes is made (a click
 * whose element left the page between its mousedown and mouseup is dropped). */
function row(r, kept) {
  const live = !TERMINAL.has(r.state);
  const { tr, cells, badge: state } = kept || {
    tr: h("tr", { testid: "resolution-row" }), cells: CELLS.map((c) => h("td", { class: c || null })), badge: badge(null),
  };
  setData(tr, { id: r.id, state: r.state });
  setBadge(state, r.state);
  const parts = [
    [link(resHref(r.id), short(r.id), "resolution-link", r.id), h("span", { class: "hidden-func", testid: "root-func" }, r.root_func_path)],
    [state, waitingLine(r)],
    [live && r.run_counts ? h("span", { class: "progress", testid: "run-progress" }, progressText(r.run_counts)) : "—"],
    [fmtTime(r.created_at)],
    [duration(r.created_at, r.ended_at, live)],
    [r.rerun_of ? link(resHref(r.rerun_of), short(r.rerun_of), "rerun-of-link", r.rerun_of) : "—"],
    [labelsLine(r)],
  ];
  parts.forEach((p, i) => fillKeepingDrawn(cells[i], p.flat()));
  fillInPlace(tr, cells);
  return { tr, cells, badge: state };
}

/** A claimed rerun's "not started yet: ..." beside its state, on one line cut to WAITING_CHARS (as `sematic-k8s
 * resolutions list` says it), its title the whole words; null for any other resolution. */
function waitingLine(r) {
  const why = claimWaiting(r);
  if (why === null) return null;
  const line = why.split(/\s+/).filter(Boolean).join(" ");
  const cut = line.length <= WAITING_CHARS ? line : `${line.slice(0, WAITING_CHARS - 1)}\u2026`;
  return [" ", h("span", { class: "muted small nowrap", testid: "resolution-waiting", title: why }, `not started yet: ${cut}`)];
}
