/* The resolutions list: newest first, filtered by state, paged. */

import { listResolutions } from "./api.js";
import { badge, duration, fill, h, link } from "./dom.js";
import { fmtTime, short } from "./format.js";
import { View } from "./live.js";
import { TERMINAL } from "./model.js";
import { resHref } from "./routes.js";

const STATES = ["", "created", "running", "resolved", "failed", "canceled"];

export class ListView extends View {
  constructor() {
    super();
    this.limit = 50;
    this.offset = 0;
    this.stateFilter = "";
    this.sig = null;
    this.el = h("section", { class: "list", testid: "resolutions-view" });
  }

  mount(main) {
    this.sig = null;
    fill(main, this.el);
    fill(this.el, h("p", { class: "muted" }, "Loading resolutions…"));
    return this.refresh();
  }

  onEvent(ev) {
    if (ev.type === "resolution" || ev.id === ev.root_id) this.soon();
  }

  async refresh() {
    const query = { limit: this.limit, offset: this.offset };
    if (this.stateFilter) query.state = this.stateFilter;
    let page;
    try {
      page = await listResolutions(query);
    } catch (e) {
      this.sig = null;
      fill(this.el, h("p", { class: "error", testid: "load-error" }, `Cannot list resolutions: ${e.message}`));
      return;
    }
    const sig = JSON.stringify(page);
    if (sig === this.sig) return;
    this.sig = sig;
    this.render(page.items || []);
  }

  render(items) {
    const filter = h("select", {
      testid: "state-filter",
      onchange: (e) => { this.stateFilter = e.target.value; this.offset = 0; this.refresh(); },
    }, STATES.map((s) => h("option", { value: s, selected: s === this.stateFilter }, s || "all states")));
    const pager = h("span", { class: "pager" },
      h("button", {
        type: "button", class: "btn small", testid: "page-newer", disabled: this.offset === 0,
        onclick: () => { this.offset = Math.max(0, this.offset - this.limit); this.refresh(); },
      }, "← Newer"),
      h("button", {
        type: "button", class: "btn small", testid: "page-older", disabled: items.length < this.limit,
        onclick: () => { this.offset += this.limit; this.refresh(); },
      }, "Older →"));
    const rows = items.map((r) => h("tr", { testid: "resolution-row", data: { id: r.id, state: r.state } },
      h("td", {}, link(resHref(r.id), short(r.id), "resolution-link", r.id)),
      h("td", { class: "mono wrap", testid: "root-func" }, r.root_func_path),
      h("td", {}, badge(r.state)),
      h("td", { class: "nowrap" }, fmtTime(r.created_at)),
      h("td", { class: "nowrap" }, duration(r.created_at, r.ended_at, !TERMINAL.has(r.state))),
      h("td", {}, r.rerun_of ? link(resHref(r.rerun_of), short(r.rerun_of), "rerun-of-link", r.rerun_of) : "—")));
    fill(this.el,
      h("div", { class: "toolbar" }, h("h1", {}, "Resolutions"), h("span", { class: "spacer" }), filter, pager),
      items.length === 0
        ? h("p", { class: "muted", testid: "no-resolutions" }, "No resolutions recorded yet.")
        : h("table", { class: "grid", testid: "resolutions-table" },
          h("thead", {}, h("tr", {}, ["ID", "Root func", "State", "Created", "Duration", "Rerun of"]
            .map((t) => h("th", {}, t)))),
          h("tbody", {}, rows)));
  }
}
