/* A resolution's page: its header (facts, error, Actions), the graph of its runs, and the Run panel. */

import { actionsMenu, cancel, rerun } from "./actions.js";
import { getGraph } from "./api.js";
import { badge, duration, factList, fill, h, link } from "./dom.js";
import { fmtTime, short } from "./format.js";
import { renderGraph } from "./graph.js";
import { View } from "./live.js";
import { graphModel, TERMINAL } from "./model.js";
import { RunPanel } from "./panel.js";
import { resHref, runHref } from "./routes.js";

const MISSING_WAIT_MS = 120000; // a rerun's resolution is recorded by a background process: give it this long

export class ResolutionView extends View {
  constructor(resolutionId) {
    super();
    this.id = resolutionId;
    this.runId = null;
    this.model = null;
    this.sig = null;
    this.missingSince = null;
    this.header = h("div", { class: "res-header", testid: "resolution-header" });
    this.graphEl = h("div", { class: "graph-wrap" });
    const panelEl = h("aside", { class: "panel", testid: "run-panel-wrap" });
    this.panel = new RunPanel(panelEl);
    this.el = h("section", { class: "resolution", testid: "resolution-view", data: { id: resolutionId } },
      this.header, h("div", { class: "split" }, this.graphEl, panelEl));
  }

  /** True when run `id` is one of this resolution's runs (as last fetched). */
  hasRun(id) {
    return !!this.model && this.model.byId.has(id);
  }

  mount(main, runId) {
    fill(main, this.el);
    fill(this.header, h("p", { class: "muted" }, `Loading resolution ${short(this.id)}…`));
    return this.select(runId);
  }

  onEvent(ev) {
    if (ev.root_id === this.id || ev.id === this.id) this.soon();
  }

  /** Open the Run panel on run `runId` (null: close it). */
  async select(runId) {
    this.runId = runId || null;
    this.panel.show(this.runId);
    if (this.model) this.renderGraph();
    await this.refresh();
  }

  async refresh() {
    let g;
    try {
      g = await getGraph(this.id);
    } catch (e) {
      this.sig = null;
      if (e.status === 404) {
        this.missingSince = this.missingSince || Date.now();
        const waiting = Date.now() - this.missingSince < MISSING_WAIT_MS;
        fill(this.header, h("p", { class: waiting ? "muted" : "error", testid: "resolution-missing" },
          waiting ? `Waiting for resolution ${this.id} to be recorded…` : `No resolution ${this.id}.`));
        if (waiting) setTimeout(() => { if (this.active) this.refresh(); }, 1000);
      } else {
        fill(this.header, h("p", { class: "error", testid: "load-error" }, e.message));
      }
      return;
    }
    this.missingSince = null;
    const sig = JSON.stringify(g);
    if (sig !== this.sig) {
      this.sig = sig;
      this.model = graphModel(g);
      this.renderHeader();
      this.renderGraph();
    }
    await this.panel.refresh(this.model);
  }

  renderGraph() {
    if (this.el.isConnected) renderGraph(this.graphEl, this.model, { selected: this.runId });
  }

  renderHeader() {
    const r = this.model.resolution;
    const s = r.settings || {};
    const terminal = TERMINAL.has(r.state);
    const func = String(r.root_func_path || "").split(/[:.]/).pop();
    const actions = actionsMenu("resolution-actions", [
      {
        label: "Rerun", testid: "action-rerun", disabled: !terminal,
        title: terminal ? "Run the whole pipeline again" : "Wait until it ends",
        run: () => rerun(r.id, { rerun_from: null, mode: "from" }),
      },
      {
        label: "Continue", testid: "action-continue", disabled: r.state !== "failed",
        title: r.state === "failed" ? "Re-run only what did not succeed" : "Only a failed resolution continues",
        run: () => rerun(r.id, { rerun_from: null, mode: "continue" }),
      },
      {
        label: "Cancel", testid: "action-cancel", disabled: terminal || r.state === "canceling",
        title: terminal ? "It has ended" : r.state === "canceling" ? "Already canceling" : "Stop this resolution",
        run: () => cancel(r.id, this),
      },
    ]);
    const facts = [
      ["ID", h("span", { class: "mono", testid: "resolution-id" }, r.id)],
      ["Root func", h("span", { class: "mono wrap" }, r.root_func_path)],
      ["Created", fmtTime(r.created_at)],
      ["Ended", fmtTime(r.ended_at)],
      ["Duration", duration(r.created_at, r.ended_at, !terminal)],
      ["Rerun of", r.rerun_of ? link(resHref(r.rerun_of), short(r.rerun_of), "rerun-of-link", r.rerun_of) : null],
      ["Rerun from", s.rerun_from ? h("span", {}, link(runHref(s.rerun_from), short(s.rerun_from), "rerun-from-link",
        s.rerun_from), s.rerun_mode ? ` (${s.rerun_mode})` : "") : null],
      ["Cache namespace", s.cache_namespace ? h("span", { class: "mono" }, s.cache_namespace) : null],
      ["Image", r.image ? h("span", { class: "mono wrap", testid: "resolution-image" }, r.image) : null],
      ["Build hash", r.build_hash ? h("span", { class: "mono", title: r.build_hash }, short(r.build_hash)) : null],
    ];
    fill(this.header,
      h("div", { class: "toolbar" },
        h("h1", {}, h("span", { class: "muted" }, "Resolution "), func, " ", badge(r.state, "resolution-state")),
        h("span", { class: "spacer" }), actions),
      factList(facts),
      r.error ? h("pre", { class: "error-box", testid: "resolution-error" }, r.error) : null);
  }
}
