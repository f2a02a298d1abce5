/* A resolution's page: its header (facts, progress, tags and note, error, Actions), its graph or its
 * timeline, and the Run panel. The graph comes from the overview endpoint: fan-outs arrive as groups, shown a
 * page at a time on request, so a resolution of thousands of runs draws a few boxes. */

import { actionsMenu, cancel, rerun, startedByUs } from "./actions.js";
import { getOverview, unreachable } from "./api.js";
import { criticalPath } from "./critical.js";
import { badge, duration, fill, fillFacts, fillInPlace, fillKeepingDrawn, h, link, setBadge, setText } from "./dom.js";
import { fmtTime, short } from "./format.js";
import { renderGraph } from "./graph.js";
import { displayModel, progressText } from "./grouping.js";
import { labelsFor } from "./labels.js";
import { Staleness, View } from "./live.js";
import { TERMINAL } from "./model.js";
import { RunPanel } from "./panel.js";
import { resHref, runHref } from "./routes.js";
import { claimWaiting, notStartedText, resolutionCanceledText } from "./started.js";
import { renderTimeline } from "./timeline.js";

const STARTING_WAIT_MS = 120000; // a rerun this page started is recorded by a process that is starting
const PAGE = 50; // runs of a group shown at a time

export class ResolutionView extends View {
  constructor(resolutionId) {
    super();
    this.id = resolutionId;
    this.runId = null;
    this.overview = null;
    this.dm = null;
    this.sig = null;
    this.missingSince = null;
    this.expand = new Map(); // group id -> offset of the page shown
    this.collapsed = new Set(); // compositions folded
    this.mode = "graph";
    this.header = h("div", { class: "res-header", testid: "resolution-header" });
    this.toolbar = h("div", { class: "toolbar" }); // kept in the header across redraws, as its Actions menu is
    this.actions = null;
    this.title = { func: h("span", { testid: "resolution-func" }), state: badge(null, "resolution-state") };
    this.title.el = h("h1", { testid: "resolution-title" }, h("span", { class: "muted" }, "Resolution "), this.title.func,
      " ", this.title.state); // updated in place, as the progress beside it: a selection in them is kept
    this.progress = h("span", { class: "progress", testid: "header-progress" });
    this.spacer = h("span", { class: "spacer" });
    this.facts = h("dl", { class: "facts" }); // its facts drawn in place (their links stay: see fillFacts)
    this.notice = h("p", { class: "stale-notice", testid: "resolution-stale", hidden: true });
    this.graphEl = h("div", { class: "graph-wrap", testid: "graph-wrap" });
    this.timelineEl = h("div", { class: "timeline-wrap", testid: "timeline-wrap", hidden: true });
    this.switch = h("div", { class: "tabs view-tabs" },
      h("button", { type: "button", class: "tab active", testid: "view-graph", onclick: () => this.setMode("graph") }, "Graph"),
      h("button", { type: "button", class: "tab", testid: "view-timeline", onclick: () => this.setMode("timeline") }, "Timeline"));
    const panelEl = h("aside", { class: "panel", testid: "run-panel-wrap" });
    this.panel = new RunPanel(panelEl);
    this.body = h("div", { class: "split" }, h("div", { class: "main-col" }, this.switch, this.graphEl, this.timelineEl), panelEl);
    this.el = h("section", { class: "resolution", testid: "resolution-view", data: { id: resolutionId } },
      this.notice, this.header, this.body);
    this.stale = new Staleness(this.el, this.notice, () => { if (this.active) this.refresh(); });
  }

  /** True when run `id` is shown in this resolution's graph (as last fetched). */
  hasRun(id) {
    return !!this.overview && this.overview.nodes.some((n) => n.id === id && n.kind === "run");
  }

  /** The router shows another page: its requests on their way are aborted, the Run panel's and its log's too. */
  leave() {
    super.leave();
    this.stale.stop();
    this.panel.show(null);
  }

  mount(main, runId) {
    fill(main, this.el);
    fill(this.header, h("p", { class: "muted" }, `Loading resolution ${short(this.id)}…`));
    return this.select(runId);
  }

  onEvent(ev) {
    if (ev.root_id === this.id || ev.id === this.id) this.soon();
  }

  /** Refresh soon; a big graph less often (a burst of events makes one refresh). */
  soon() {
    if (this.timer) return;
    const big = this.overview && this.overview.total_runs > 500;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.active) this.refresh();
    }, big ? 1000 : 150);
  }

  setMode(mode) {
    this.mode = mode;
    this.switch.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.testid === `view-${mode}`));
    this.graphEl.hidden = mode !== "graph";
    this.timelineEl.hidden = mode !== "timeline";
    this.draw();
  }

  /** Open the Run panel on run `runId` (null: close it). */
  async select(runId) {
    this.runId = runId || null;
    this.panel.show(this.runId);
    if (this.dm) this.draw();
    await this.refresh();
  }

  async refresh() {
    let ov;
    try {
      const ask = (signal) => getOverview(this.id, { expand: this.expand, page: PAGE, signal });
      ov = await this.answers.take(JSON.stringify([...this.expand]), ask); // the pages of groups shown
    } catch (e) {
      if (this.overview && unreachable(e)) {
        this.stale.mark(e.message);
        return;
      }
      this.stale.mark(null);
      this.sig = null;
      if (e.status === 404 && startedByUs(this.id)) {
        this.missingSince = this.missingSince || Date.now();
        if (Date.now() - this.missingSince < STARTING_WAIT_MS) {
          fill(this.header, h("p", { class: "muted", testid: "resolution-waiting" }, `Waiting for resolution ${this.id} to be recorded…`));
          setTimeout(() => { if (this.active) this.refresh(); }, 1000);
          return;
        }
      }
      this.showProblem(e.status === 404 ? `No resolution ${this.id}` : `Cannot load resolution ${this.id}`,
        e.status === 404 ? "It may have been typed wrong, or be on another server."
          : unreachable(e) ? Staleness.retrying(e.message) : e.message);
      if (unreachable(e)) this.stale.again(); // an outage: shown once it answers
      return;
    }
    if (ov === undefined) return; // superseded (pages of groups since changed: aborted), or come after a newer one's
    this.missingSince = null;
    this.stale.mark(null);
    const sig = JSON.stringify(ov);
    if (sig !== this.sig) {
      this.sig = sig;
      this.overview = ov;
      this.rebuild();
      this.renderHeader();
    }
    await this.panel.refresh({ resolution: ov.resolution, refused: ov.actions_refused || "",
      byId: new Map(ov.nodes.map((n) => [n.id, n])) });
  }

  /** A readable page for a resolution that cannot be shown. */
  showProblem(title, detail) {
    this.overview = null;
    this.dm = null;
    fill(this.header, h("div", { class: "problem", testid: "resolution-missing" },
      h("h1", {}, title), h("p", { class: "muted" }, detail), h("p", {}, link("#/", "← all pipelines", "back-to-list"))));
    this.body.hidden = true;
  }

  rebuild() {
    this.body.hidden = false;
    this.dm = displayModel(this.overview, this.collapsed);
    const nodes = this.overview.nodes.filter((n) => this.dm.shown.has(n.id));
    this.critical = criticalPath(nodes, this.dm.edges);
    this.draw();
  }

  draw() {
    if (!this.dm || !this.el.isConnected) return;
    const act = {
      select: (id) => { location.hash = runHref(id); },
      fold: (id) => {
        if (this.collapsed.has(id)) this.collapsed.delete(id);
        else this.collapsed.add(id);
        this.rebuild();
      },
      expand: (groupId, offset) => {
        if (offset === null) this.expand.delete(groupId);
        else this.expand.set(groupId, offset);
        this.refresh();
      },
    };
    if (this.mode === "graph") {
      renderGraph(this.graphEl, this.dm, { selected: this.runId, page: PAGE, critical: this.critical, act });
    } else {
      renderTimeline(this.timelineEl, this.dm, { critical: this.critical, selected: this.runId, select: act.select });
    }
  }

  renderHeader() {
    const r = this.overview.resolution;
    const s = r.settings || {};
    const terminal = TERMINAL.has(r.state);
    const func = String(r.root_func_path || "").split(/[:.]/).pop();
    const refused = this.overview.actions_refused || ""; // another key's resolution (--actions-by owner)
    const items = [
      {
        label: "Rerun", testid: "action-rerun", disabled: !terminal, refused,
        title: terminal ? "Run the whole pipeline again" : "Wait until it ends",
        run: () => rerun(r, { rerun_from: null, mode: "from" }),
      },
      {
        label: "Continue", testid: "action-continue", disabled: r.state !== "failed", refused,
        title: r.state === "failed" ? "Re-run only what did not succeed" : "Only a failed resolution continues",
        run: () => rerun(r, { rerun_from: null, mode: "continue" }),
      },
      {
        label: "Cancel", testid: "action-cancel", disabled: terminal || r.state === "canceling", refused,
        title: terminal ? "It has ended" : r.state === "canceling" ? "Already canceling" : "Stop this resolution",
        run: () => cancel(r.id, this),
      },
    ];
    // kept across redraws (only their state changes): a click begun on one as a live event redraws is not lost
    this.actions = this.actions ? this.actions.update(items) : actionsMenu("resolution-actions", items);
    const counts = this.overview.counts || {};
    const facts = [
      ["ID", h("span", { class: "mono", testid: "resolution-id" }, r.id)],
      ["Root func", h("span", { class: "mono wrap" }, r.root_func_path)],
      ["Runs", h("span", { testid: "resolution-progress", data: { total: String(this.overview.total_runs) } },
        terminal ? `${this.overview.total_runs} runs` : progressText(counts))],
      ["Created", fmtTime(r.created_at)],
      ["Duration", duration(r.created_at, r.ended_at, !terminal)],
      ["Kind", s.kind || null],
      ["Rerun of", r.rerun_of ? link(resHref(r.rerun_of), short(r.rerun_of), "rerun-of-link", r.rerun_of) : null],
      ["Rerun from", s.rerun_from ? h("span", {}, link(runHref(s.rerun_from), short(s.rerun_from), "rerun-from-link",
        s.rerun_from), s.rerun_mode ? ` (${s.rerun_mode})` : "") : null],
      ["Cache namespace", s.cache_namespace ? h("span", { class: "mono" }, s.cache_namespace) : null],
      ["Image", r.image ? h("span", { class: "mono wrap", testid: "resolution-image" }, r.image) : null],
    ];
    this.labels = labelsFor(this.labels, r, () => this.refresh(), refused);
    setText(this.title.func, func);
    setBadge(this.title.state, r.state);
    // its notices and error kept while drawn the same (a selection in them too): see fillKeepingDrawn
    fillKeepingDrawn(this.header, [
      fillInPlace(this.toolbar, this.title.el, terminal ? null : setText(this.progress, progressText(counts)),
        this.spacer, this.actions),
      fillFacts(this.facts, facts),
      terminal || !notStartedText(this.overview.waiting) ? null
        : h("p", { class: "warning", testid: "resolution-not-started" }, notStartedText(this.overview.waiting)),
      claimWaiting(r) // a rerun's claim: its launch waits
        ? h("p", { class: "warning", testid: "resolution-waiting" }, `Not started yet: ${claimWaiting(r)}`) : null,
      this.labels,
      r.state === "canceled" // a cancel is not an error: a notice of when and how
        ? h("p", { class: "notice", testid: "resolution-canceled" }, resolutionCanceledText(r, r.ended_at ? fmtTime(r.ended_at) : null))
        : r.error ? h("pre", { class: "error-box", testid: "resolution-error" }, r.error) : null]);
  }
}
