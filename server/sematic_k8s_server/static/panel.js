/* The Run panel: one run's head (name, state, Actions, error) and tabs: Inputs, Output, Source, Logs, Details
 * (timings, where it ran, cache and lineage, settings). Values are drawn by values.js, logs by logs.js.
 * Redrawn as its run changes, the panel keeps what it drew of that run: its tabs and Actions, and each part that
 * did not change (dom.fillKeepingDrawn), so a click on a tab, an action or a link as a live event comes is made.
 * A load of its run that finds the server unreachable (no answer, 502/503/504) keeps the run drawn, greyed, under a
 * one-line note, as the resolution view does; any other error (404, 403...) replaces it with the error's line, its log
 * followed no more. */

import { actionsMenu, rerun } from "./actions.js";
import { getRun, unreachable } from "./api.js";
import { badge, duration, factList, fill, fillInPlace, fillKeepingDrawn, h, link, section, setBadge, setText } from "./dom.js";
import { cssToken, fmtTime, settingsLine, short } from "./format.js";
import { Answers, Staleness } from "./live.js";
import { LogView } from "./logs.js";
import { TERMINAL } from "./model.js";
import { runHref } from "./routes.js";
import { canceledText, neverStarted, waitingFor } from "./started.js";
import { ValueSlot } from "./values.js";

const TABS = ["inputs", "output", "source", "logs", "details"];
const TITLES = { inputs: "Inputs", output: "Output", source: "Source", logs: "Logs", details: "Details" };

const MESSAGE_SHOWN = 300; // characters of an error's message shown before it is folded
const MESSAGE_LINES = 5; // lines of it shown before it is folded

/** A run's error message: whole when short; else its first line cut short, and all of it folded below. */
function errorMessage(err) {
  const message = String(err.message || "");
  const lines = message.split("\n").length;
  const short = message.length <= MESSAGE_SHOWN && lines <= MESSAGE_LINES;
  const first = message.split("\n", 1)[0];
  const head = h("p", { class: "error" }, h("b", {}, err.type || "Error"), ": ",
    short ? message : first.length > MESSAGE_SHOWN ? `${first.slice(0, MESSAGE_SHOWN)}…` : first);
  if (short) return head;
  return [head, h("details", { testid: "run-error-message" },
    h("summary", { class: "muted" },
      `the whole message (${lines} line${lines === 1 ? "" : "s"}, ${message.length} characters)`),
    h("pre", { class: "error-box" }, message))];
}

function pendingInput(template, byId) {
  const src = template && typeof template === "object" && typeof template.run === "string" ? byId.get(template.run) : null;
  return h("span", { class: "muted" }, src ? `pending: output of ${src.func_name}` : "pending");
}

/** The panel beside the graph. show(runId) picks the run (null: a hint, and no logs followed), refresh(ctx)
 * redraws it when the run or its resolution's state changed (an answer older than the one shown is dropped; a
 * request about the run shown before is aborted). ctx: {resolution, byId (Map id -> overview node)} */
export class RunPanel {
  constructor(el) {
    this.el = el;
    this.runId = null;
    this.sig = null;
    this.tab = "output";
    this.logView = null;
    this.panes = null;
    this.drawn = null; // the run drawn: {runId, root, toolbar, actions, tabs, inputs, output}, kept while it is shown
    this.answers = new Answers();
    this.notice = h("p", { class: "stale-notice", testid: "run-stale", hidden: true });
    this.ctx = null; // the last refresh's, for a try again while the run cannot be loaded
    this.stale = new Staleness(el, this.notice, () => this.refresh(this.ctx));
  }

  show(runId) {
    if (runId !== this.runId) this.stopLogs();
    this.stale.stop(); // a try again is about the run shown before
    if (runId && runId !== this.runId) { // until its answer comes (none while the server cannot be reached)
      this.drawn = null;
      this.stale.mark(null);
      fill(this.el, h("p", { class: "muted", testid: "run-loading" }, `Loading run ${runId}…`));
    }
    this.runId = runId || null;
    this.sig = null;
    this.answers.drop(); // requests on their way are about the run shown before: aborted
  }

  /** The log followed no more (the run left, or replaced by its load error). */
  stopLogs() {
    if (this.logView) this.logView.stop();
    this.logView = null;
  }

  /** What was drawn of the run dropped with its log's following: its panel replaced (a load error). */
  forget() {
    this.stopLogs();
    this.drawn = null;
    this.panes = null;
  }

  async refresh(ctx) {
    this.ctx = ctx;
    if (!this.runId) {
      this.sig = null;
      this.stale.mark(null);
      fill(this.el, h("p", { class: "muted", testid: "run-panel-hint" },
        "Click a run to see its inputs, output, source, logs and timings."));
      return;
    }
    const runId = this.runId;
    let run;
    try {
      run = await this.answers.take(runId, (signal) => getRun(runId, { signal }));
    } catch (e) {
      this.sig = null; // the run is drawn again once it answers, changed or not
      const shown = this.drawn && this.drawn.runId === runId && this.el.contains(this.drawn.root);
      if (shown && unreachable(e)) {
        this.stale.mark(`Cannot load run ${runId}: ${e.message}`);
        return;
      }
      this.stale.mark(null);
      this.forget(); // the run is no longer shown: nothing of it kept or followed
      fill(this.el, h("p", { class: "error", testid: "run-load-error" }, `Cannot load run ${runId}: ${e.message}`));
      return;
    }
    if (run === undefined) return; // another run was selected meanwhile, or a newer answer came first
    this.stale.mark(null);
    const resState = ctx && ctx.resolution ? ctx.resolution.state : null;
    const sig = JSON.stringify([run, resState]);
    if (sig === this.sig) return;
    this.sig = sig;
    if (this.logView && this.logView.run.id === run.id) this.logView.update(run, (ctx && ctx.resolution) || null);
    else {
      this.stopLogs();
      this.logView = new LogView(run, (ctx && ctx.resolution) || null);
    }
    fillInPlace(this.el, this.notice, this.render(run, ctx || {}));
  }

  select(tab) {
    this.tab = tab;
    if (!this.panes) return;
    for (const [name, { button, pane }] of this.panes) {
      const on = name === tab;
      button.classList.toggle("active", on);
      button.setAttribute("aria-selected", String(on));
      pane.hidden = !on;
    }
  }

  /** What is kept of run `runId` while it is shown: its panel, toolbar, title, Actions, tabs (and this.panes) and
   * where its values are shown. */
  skeleton(runId, items) {
    const panes = new Map();
    const tabs = h("div", { class: "tabs", role: "tablist" }, TABS.map((name) => {
      const button = h("button", {
        type: "button", class: "tab", role: "tab", testid: `tab-${name}`, onclick: () => this.select(name),
      }, TITLES[name]);
      panes.set(name, { button, pane: h("div", { class: "tabpane", role: "tabpanel", testid: `tabpane-${name}` }) });
      return button;
    }));
    this.panes = panes;
    this.select(this.tab);
    const output = new ValueSlot({ testid: "run-output" }, { testid: "run-output-type" });
    const name = h("span", { testid: "run-func-name" });
    const state = badge(null, "run-state");
    return {
      runId, tabs, actions: actionsMenu("run-actions", items), toolbar: h("div", { class: "toolbar" }),
      title: { el: h("h2", {}, name, " ", state), name, state }, // updated in place: a selection in it is kept
      root: h("div", { class: "run-panel", testid: "run-panel", data: { runId } }),
      inputs: { el: h("div", { class: "inputs", testid: "run-inputs" }), rows: new Map() }, // param -> {el, slot}
      output: { slot: output, el: h("div", {}, h("div", { class: "input-head" }, output.type, h("span", { class: "spacer" }),
        output.button), output.cell) },
    };
  }

  render(run, ctx) {
    const res = ctx.resolution || null;
    const byId = ctx.byId || new Map();
    const resTerminal = res ? TERMINAL.has(res.state) : true;
    const notes = run.notes || {};
    const items = [{
      label: "Rerun from here", testid: "action-rerun-from", disabled: !resTerminal, refused: ctx.refused || "",
      title: resTerminal ? "Re-execute this run and what depends on it; reuse the rest"
        : "Wait until the resolution ends",
      run: () => rerun(res || { id: run.root_id }, { rerun_from: run.id, mode: "from" }),
    }];
    if (this.drawn && this.drawn.runId === run.id) this.drawn.actions.update(items);
    else this.drawn = this.skeleton(run.id, items);
    const { root, toolbar, title, actions, tabs } = this.drawn;
    root.dataset.state = run.state;
    setText(title.name, run.func_name);
    setBadge(title.state, run.state);
    fillKeepingDrawn(toolbar, [title.el, h("span", { class: "spacer" }), actions]);
    for (const [name, { pane }] of this.panes) fillKeepingDrawn(pane, [this.pane(name, run, res, byId)].flat());
    const err = run.error;
    return fillKeepingDrawn(root, [toolbar,
      h("div", { class: "mono muted wrap small", testid: "run-func-path" }, run.func_path),
      notes.cache && notes.cache.source_changed ? h("p", { class: "warning", testid: "source-changed" },
        "Cache hit on a run whose func source differs from the current code.") : null,
      notes.cache && notes.cache.skipped ? h("p", { class: "warning", testid: "cache-skipped" },
        `Not cached: ${notes.cache.skipped}`) : null,
      waitingFor(run) && !TERMINAL.has(run.state) ? h("p", { class: "warning", testid: "run-waiting" },
        `Not started: ${waitingFor(run)}`) : null,
      run.state === "canceled" ? h("p", { class: "muted wrap", testid: "run-canceled" }, canceledText(run, res)) : null,
      err ? h("div", { class: "run-error", testid: "run-error" },
        errorMessage(err),
        // a worker that died has no Python traceback: its "traceback" is its last log lines, shown in view
        !err.traceback ? null : (err.mro || []).includes("WorkerDied")
          ? h("pre", { class: "error-box", testid: "run-error-lines" }, err.traceback)
          : h("details", {}, h("summary", { class: "muted" }, "traceback"), h("pre", { class: "error-box" }, err.traceback))) : null,
      tabs, [...this.panes.values()].map((p) => p.pane)]);
  }

  pane(name, run, res, byId) {
    if (name === "inputs") return this.inputs(run, byId);
    if (name === "output") {
      const { output } = this.drawn;
      output.slot.show(run.output_id, run.root_id,
        h("span", { class: "muted" }, TERMINAL.has(run.state) ? "no output" : "not yet"));
      return output.el;
    }
    if (name === "source") {
      return h("div", {},
        run.source_file ? h("p", { class: "mono muted wrap small", testid: "run-source-file" }, run.source_file) : null,
        run.source_text
          ? h("pre", { class: "source", testid: "run-source" }, run.source_text)
          : h("p", { class: "muted", testid: "run-source" }, "(no source recorded for this run: it was recorded by an older version, or Python could not find it)"));
    }
    if (name === "logs") return this.logView.el();
    return this.details(run, res, byId);
  }

  /** The Inputs tab: each input's row kept while the run is shown, its value drawn in place (ValueSlot), so a click
   * on one (its download) as another input or its own value changes is made. */
  inputs(run, byId) {
    const params = Object.keys({ ...(run.input_refs || {}), ...(run.inputs || {}) });
    if (!params.length) return h("p", { class: "muted", testid: "run-inputs" }, "no inputs");
    const { inputs } = this.drawn;
    fillInPlace(inputs.el, params.map((p) => {
      let row = inputs.rows.get(p);
      if (!row) {
        const slot = new ValueSlot();
        row = {
          slot, el: h("div", { class: "input", testid: "input-row", data: { param: p } }, h("div", { class: "input-head" },
            h("b", { class: "mono" }, p), " ", slot.type, h("span", { class: "spacer" }), slot.button), slot.cell),
        };
        inputs.rows.set(p, row);
      }
      row.slot.show((run.inputs || {})[p], run.root_id, pendingInput((run.input_refs || {})[p], byId));
      return row.el;
    }));
    return inputs.el;
  }

  /** The Details tab's parts (each kept across redraws while it is drawn the same). */
  details(run, res, byId) {
    const notes = run.notes || {};
    const executor = notes.executor || null;
    const terminal = TERMINAL.has(run.state);
    const unstarted = neverStarted(run);
    const onWorker = (run.settings || {}).inline === false && ((res && res.settings) || {}).kind !== "local";
    const nowhere = onWorker // a worker's run (on Docker, Kubernetes) whose worker left no details
      ? unstarted ? (terminal ? "nowhere: its worker never started" : "nowhere yet: its worker has not started")
        : "on a worker (no executor details recorded)"
      : "in the resolver's process (no executor details recorded)";
    const parent = run.parent_id && byId.get(run.parent_id);
    const where = executor
      ? factList(Object.entries(executor).map(([k, v]) => [k, h("span", { class: "mono wrap", testid: `executor-${cssToken(k)}` },
        typeof v === "string" ? v : JSON.stringify(v))]), "executor")
      : h("p", { class: "muted", testid: "executor" }, notes.reused_from || run.cached_from
        ? "did not run in this resolution" : nowhere);
    const cacheFacts = [
      ["Cache key", run.cache_key ? h("span", { class: "mono", title: run.cache_key }, short(run.cache_key)) : null],
      ["Cached from", run.cached_from ? link(runHref(run.cached_from), short(run.cached_from), "cached-from-link", run.cached_from) : null],
      ["Reused from", notes.reused_from ? link(runHref(notes.reused_from), short(notes.reused_from), "reused-from-link", notes.reused_from) : null],
      ["Original run", run.original_run_id ? link(runHref(run.original_run_id), short(run.original_run_id), "original-run-link", run.original_run_id) : null],
      ["Source hash", run.source_hash ? h("span", { class: "mono", title: run.source_hash }, short(run.source_hash)) : null],
    ];
    return [
      factList([
        ["Run", h("span", { class: "mono", testid: "run-id" }, run.id)],
        ["Parent", run.parent_id ? link(runHref(run.parent_id), parent ? parent.func_name || short(run.parent_id) : short(run.parent_id), "parent-link", run.parent_id) : null],
      ]),
      section("Timings", factList([
        ["Created", fmtTime(run.created_at)],
        ["Submitted", unstarted && run.started_at ? fmtTime(run.started_at) : null],
        ["Started", unstarted ? (terminal ? "never" : "not yet") : fmtTime(run.started_at)],
        ["Ended", fmtTime(run.ended_at)],
        ["Duration", unstarted ? "—" : duration(run.started_at, run.ended_at, run.state === "running")],
        ["Attempts", h("span", { testid: "run-attempts" }, String(run.attempts ?? 0))],
      ], "timings")),
      section("Where it ran", where),
      cacheFacts.some(([, v]) => v) ? section("Cache and lineage", factList(cacheFacts, "lineage")) : null,
      run.settings && Object.keys(run.settings).length
        ? section("Settings", h("details", {}, h("summary", { class: "muted" }, settingsLine(run.settings)),
          h("pre", { class: "json" }, JSON.stringify(run.settings, null, 2)))) : null];
  }
}
