/* The Run panel: one run's facts, timings, error, inputs, output, logs, where it ran, cache and lineage,
 * settings, and its Actions ("Rerun from here"). */

import { actionsMenu, rerun } from "./actions.js";
import { getArtifact, getLogs, getRun } from "./api.js";
import { badge, duration, factList, fill, h, link, section } from "./dom.js";
import { cssToken, fmtTime, settingsLine, short, summaryText } from "./format.js";
import { TERMINAL } from "./model.js";
import { runHref } from "./routes.js";

/** What the Logs section says when there are none. */
function noLogs(run) {
  const notes = run.notes || {};
  if (notes.reused_from) return `(no logs here: its output was reused from run ${notes.reused_from})`;
  if (run.cached_from) return `(no logs: its output came from the cache, run ${run.cached_from})`;
  if (["created", "scheduled", "canceled"].includes(run.state)) return "(no logs: it never ran)";
  return run.state === "running" ? "(no output yet)" : "(no logs: it printed nothing)";
}

/** Fill `cell` with an artifact's summary (folded when long) and `typeCell` with its type, once fetched. */
function fillArtifact(id, cell, typeCell) {
  cell.dataset.artifactId = id;
  cell.append(h("span", { class: "muted" }, "…"));
  getArtifact(id).then((a) => {
    const text = summaryText(a.summary, a.format);
    const body = text.length > 160
      ? h("details", {}, h("summary", { class: "mono" }, `${text.slice(0, 160)}…`),
        h("pre", { class: "json" }, JSON.stringify(a.summary, null, 2)))
      : h("code", {}, text);
    fill(cell, body);
    cell.title = `artifact ${a.id} (${a.format}, ${a.size} bytes)`;
    typeCell.textContent = a.type_name || "";
  }, (e) => {
    fill(cell, h("span", { class: "error" }, `artifact ${short(id)}: ${e.message}`));
  });
}

function pendingInput(template, byId) {
  const src = template && typeof template === "object" && typeof template.run === "string" ? byId.get(template.run) : null;
  return h("span", { class: "muted" }, src ? `pending: output of ${src.func_name}` : "pending");
}

/** The panel beside the graph. show(runId) picks the run (null: a hint), refresh(model) redraws it when
 * the run, its logs or its resolution's state changed. */
export class RunPanel {
  constructor(el) {
    this.el = el;
    this.runId = null;
    this.sig = null;
    this.logs = null;
    this.logsState = null;
  }

  show(runId) {
    this.runId = runId || null;
    this.sig = null;
    this.logs = null;
  }

  async refresh(model) {
    if (!this.runId) {
      this.sig = null;
      fill(this.el, h("p", { class: "muted", testid: "run-panel-hint" },
        "Click a run to see its inputs, output, logs and timings."));
      return;
    }
    let run = model && model.byId.get(this.runId);
    if (!run) {
      try {
        run = await getRun(this.runId);
      } catch (e) {
        fill(this.el, h("p", { class: "error" }, `Cannot load run ${this.runId}: ${e.message}`));
        return;
      }
    }
    const runId = run.id;
    const needLogs = this.logs === null || !TERMINAL.has(run.state) || this.logsState !== run.state;
    if (needLogs) {
      try {
        this.logs = await getLogs(runId);
      } catch (e) {
        this.logs = e.status === 404 ? "" : `(cannot load logs: ${e.message})`;
      }
      this.logsState = run.state;
    }
    if (runId !== this.runId) return; // another run was selected meanwhile
    const sig = JSON.stringify([run, this.logs, model && model.resolution.state]);
    if (sig === this.sig) return;
    this.sig = sig;
    fill(this.el, this.render(run, model));
  }

  render(run, model) {
    const byId = model ? model.byId : new Map();
    const res = model ? model.resolution : null;
    const resTerminal = res ? TERMINAL.has(res.state) : true;
    const notes = run.notes || {};
    const cache = notes.cache || {};
    const executor = notes.executor || null;
    const parent = run.parent_id && byId.get(run.parent_id);
    const actions = actionsMenu("run-actions", [{
      label: "Rerun from here", testid: "action-rerun-from", disabled: !resTerminal,
      title: resTerminal ? "Re-execute this run and what depends on it; reuse the rest"
        : "Wait until the resolution ends",
      run: () => rerun(run.root_id, { rerun_from: run.id, mode: "from" }),
    }]);

    const inputsBody = h("tbody", {});
    const params = Object.keys({ ...(run.input_refs || {}), ...(run.inputs || {}) });
    for (const p of params) {
      const id = (run.inputs || {})[p];
      const cell = h("td", { class: "summary" });
      const typeCell = h("td", { class: "mono" });
      if (id) fillArtifact(id, cell, typeCell);
      else cell.append(pendingInput((run.input_refs || {})[p], byId));
      inputsBody.append(h("tr", { testid: "input-row", data: { param: p } }, h("td", { class: "mono" }, p), typeCell, cell));
    }
    const outCell = h("div", { class: "summary", testid: "run-output" });
    const outType = h("span", { class: "mono muted" });
    if (run.output_id) fillArtifact(run.output_id, outCell, outType);
    else outCell.append(h("span", { class: "muted" }, TERMINAL.has(run.state) ? "no output" : "not yet"));

    const err = run.error;
    const where = executor
      ? factList(Object.entries(executor).map(([k, v]) => [k, h("span", { class: "mono wrap", testid: `executor-${cssToken(k)}` },
        typeof v === "string" ? v : JSON.stringify(v))]), "executor")
      : h("p", { class: "muted", testid: "executor" }, notes.reused_from || run.cached_from
        ? "did not run in this resolution" : "in the resolver's process (no executor details recorded)");

    const cacheFacts = [
      ["Cache key", run.cache_key ? h("span", { class: "mono", title: run.cache_key }, short(run.cache_key)) : null],
      ["Cached from", run.cached_from ? link(runHref(run.cached_from), short(run.cached_from), "cached-from-link",
        run.cached_from) : null],
      ["Reused from", notes.reused_from ? link(runHref(notes.reused_from), short(notes.reused_from), "reused-from-link",
        notes.reused_from) : null],
      ["Original run", run.original_run_id ? link(runHref(run.original_run_id), short(run.original_run_id),
        "original-run-link", run.original_run_id) : null],
      ["Source hash", run.source_hash ? h("span", { class: "mono", title: run.source_hash }, short(run.source_hash)) : null],
    ];

    return h("div", { class: "run-panel", testid: "run-panel", data: { runId: run.id, state: run.state } },
      h("div", { class: "toolbar" },
        h("h2", {}, h("span", { testid: "run-func-name" }, run.func_name), " ", badge(run.state, "run-state")),
        h("span", { class: "spacer" }), actions),
      factList([
        ["Run", h("span", { class: "mono", testid: "run-id" }, run.id)],
        ["Func", h("span", { class: "mono wrap", testid: "run-func-path" }, run.func_path)],
        ["Source", run.source_file ? h("span", { class: "mono wrap" }, run.source_file) : null],
        ["Parent", parent ? link(runHref(parent.id), parent.func_name, "parent-link", parent.id) : null],
      ]),
      cache.source_changed ? h("p", { class: "warning", testid: "source-changed" },
        "Cache hit on a run whose func source differs from the current code.") : null,
      section("Timings", factList([
        ["Created", fmtTime(run.created_at)],
        ["Started", fmtTime(run.started_at)],
        ["Ended", fmtTime(run.ended_at)],
        ["Duration", duration(run.started_at, run.ended_at, run.state === "running")],
        ["Attempts", h("span", { testid: "run-attempts" }, String(run.attempts ?? 0))],
      ], "timings")),
      err ? section("Error", h("div", { testid: "run-error" },
        h("p", { class: "error" }, h("b", {}, err.type || "Error"), ": ", err.message || ""),
        err.traceback ? h("pre", { class: "error-box" }, err.traceback) : null)) : null,
      section("Inputs", params.length
        ? h("table", { class: "grid compact", testid: "run-inputs" },
          h("thead", {}, h("tr", {}, h("th", {}, "param"), h("th", {}, "type"), h("th", {}, "value"))), inputsBody)
        : h("p", { class: "muted", testid: "run-inputs" }, "no inputs")),
      section("Output", h("div", {}, outType, outCell)),
      section("Logs", h("pre", { class: "logs", testid: "run-logs" }, this.logs || noLogs(run))),
      section("Where it ran", where),
      cacheFacts.some(([, v]) => v) ? section("Cache and lineage", factList(cacheFacts, "lineage")) : null,
      run.settings && Object.keys(run.settings).length
        ? section("Settings", h("details", {}, h("summary", { class: "muted" }, settingsLine(run.settings)),
          h("pre", { class: "json" }, JSON.stringify(run.settings, null, 2)))) : null);
  }
}
