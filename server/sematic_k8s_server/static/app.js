/* sematic-k8s dashboard: one page, hash routes, plain DOM.
 *
 *   #/                   resolutions list
 *   #/resolutions/ID     a resolution: its graph of runs, its Actions
 *   #/runs/ID            the same, with the Run panel of run ID open
 *
 * Every string from the API reaches the page through text nodes or attribute values (see h()),
 * never through innerHTML. Live updates come from /api/v1/events (read with fetch so the API
 * key header can be sent); when that stream is unavailable the current view is polled every 2 s.
 */
"use strict";

(() => {
  const API = "/api/v1";
  const KEY_STORAGE = "sematic_k8s_api_key";
  const TERMINAL = new Set(["resolved", "failed", "canceled"]);
  const POLL_MS = 2000;

  // -- DOM helpers ------------------------------------------------------------------------------

  /** Create an element. attrs: class, testid, data (object), on<event> (function), or attributes. */
  function h(tag, attrs, ...children) {
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
  function fill(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    return el;
  }

  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;
  const short = (id) => (id ? String(id).slice(0, 8) : "");
  const cssToken = (s) => String(s || "unknown").toLowerCase().replace(/[^a-z0-9_-]/g, "");
  const runHref = (id) => `#/runs/${enc(id)}`;
  const resHref = (id) => `#/resolutions/${enc(id)}`;

  function badge(state, testid = "state-badge") {
    return h("span", { class: `badge state-${cssToken(state)}`, testid, data: { state } }, state || "?");
  }

  function link(href, text, testid, title) {
    return h("a", { href, testid, title, class: "mono" }, text);
  }

  function parseTime(s) {
    if (!s) return null;
    const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`); // the API speaks UTC
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function fmtTime(s) {
    const d = parseTime(s);
    if (!d) return "—";
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function fmtDuration(ms) {
    if (ms == null || Number.isNaN(ms)) return "—";
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }

  /** A duration; while `end` is missing and the thing is live, it ticks (see tickDurations). */
  function duration(start, end, live) {
    const a = parseTime(start);
    const b = parseTime(end);
    if (!a) return h("span", { class: "duration" }, "—");
    if (b) return h("span", { class: "duration" }, fmtDuration(b - a));
    if (!live) return h("span", { class: "duration" }, "—");
    return h("span", { class: "duration ticking", data: { since: String(a.getTime()) } }, fmtDuration(Date.now() - a));
  }

  function tickDurations() {
    document.querySelectorAll(".ticking").forEach((el) => {
      el.textContent = fmtDuration(Date.now() - Number(el.dataset.since));
    });
  }

  function summaryText(summary, format) {
    if (summary === undefined) return "";
    const keys = summary && typeof summary === "object" ? Object.keys(summary) : [];
    if (format !== "json" && keys.length === 1 && typeof summary.repr === "string") return summary.repr;
    try {
      return JSON.stringify(summary);
    } catch {
      return String(summary);
    }
  }

  // -- banner and API key -----------------------------------------------------------------------

  let bannerTimer = null;

  function showBanner(message, kind = "error") {
    const b = $('[data-testid="error-banner"]');
    b.textContent = message;
    b.className = `banner ${kind}`;
    b.hidden = false;
    clearTimeout(bannerTimer);
    if (kind !== "error") bannerTimer = setTimeout(() => { b.hidden = true; }, 6000);
  }

  function hideBanner() {
    $('[data-testid="error-banner"]').hidden = true;
  }

  const apiKey = () => localStorage.getItem(KEY_STORAGE) || "";
  let needKey = false; // the last request got 401: no polling or reconnecting until a key is saved

  function showKeyForm(message) {
    const form = $('[data-testid="api-key-form"]');
    $('[data-testid="api-key-message"]').textContent = message || "This server needs an API key.";
    if (form.hidden) {
      form.hidden = false;
      $('[data-testid="api-key-input"]').focus();
    }
  }

  function setupKeyForm() {
    const form = $('[data-testid="api-key-form"]');
    const input = $('[data-testid="api-key-input"]');
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (key) localStorage.setItem(KEY_STORAGE, key);
      input.value = "";
      form.hidden = true;
      needKey = false;
      hideBanner();
      live.restart();
      route(true);
    });
    $('[data-testid="api-key-forget"]').addEventListener("click", () => {
      localStorage.removeItem(KEY_STORAGE);
      input.value = "";
      showKeyForm(apiKey() ? "" : "No API key stored. Paste one, or leave it empty for a local-mode server.");
    });
    $('[data-testid="api-key-button"]').addEventListener("click", () => {
      if (form.hidden) showKeyForm(apiKey() ? "An API key is stored; paste a new one to replace it." : "");
      else form.hidden = true;
    });
  }

  // -- API --------------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function authHeaders(extra) {
    const headers = { ...extra };
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    return headers;
  }

  async function errorMessage(resp) {
    const text = await resp.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      const detail = body.detail !== undefined ? body.detail : body;
      return typeof detail === "string" ? detail : JSON.stringify(detail);
    } catch {
      return text.trim() || `${resp.status} ${resp.statusText}`;
    }
  }

  /** fetch /api/v1 + path; JSON by default, text with {text: true}; 401 opens the key form. */
  async function api(path, { method = "GET", body, text = false } = {}) {
    const headers = authHeaders({ Accept: text ? "text/plain" : "application/json" });
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(API + path, {
      method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!resp.ok) {
      const message = await errorMessage(resp);
      if (resp.status === 401) {
        needKey = true;
        showKeyForm(message);
      }
      throw new HttpError(resp.status, message);
    }
    needKey = false;
    return text ? resp.text() : resp.json();
  }

  const artifactCache = new Map(); // artifacts are immutable: fetch each once

  function artifact(id) {
    if (!artifactCache.has(id)) {
      const p = api(`/artifacts/${enc(id)}`).catch((e) => {
        artifactCache.delete(id);
        throw e;
      });
      artifactCache.set(id, p);
    }
    return artifactCache.get(id);
  }

  // -- Actions drop-down --------------------------------------------------------------------------

  let openMenu = null; // the testid of the open drop-down, kept across re-renders

  function closeMenus() {
    openMenu = null;
    document.querySelectorAll(".dropdown .menu").forEach((m) => { m.hidden = true; });
    document.querySelectorAll(".dropdown > button").forEach((b) => b.setAttribute("aria-expanded", "false"));
  }

  /** items: [{label, testid, disabled, title, run: async () => {}}] */
  function actionsMenu(testid, items) {
    const open = openMenu === testid;
    const menu = h("div", { class: "menu", role: "menu", hidden: !open, testid: `${testid}-menu` },
      items.map((it) => h("button", {
        type: "button", role: "menuitem", testid: it.testid, disabled: !!it.disabled, title: it.title,
        onclick: async (e) => {
          e.stopPropagation();
          closeMenus();
          await it.run();
        },
      }, it.label)));
    const button = h("button", {
      type: "button", class: "btn", testid, "aria-haspopup": "menu", "aria-expanded": String(open),
      onclick: (e) => {
        e.stopPropagation();
        const wasOpen = openMenu === testid;
        closeMenus();
        if (!wasOpen) {
          openMenu = testid;
          menu.hidden = false;
          button.setAttribute("aria-expanded", "true");
        }
      },
    }, "Actions ▾");
    return h("div", { class: "dropdown" }, button, menu);
  }

  async function rerun(resolutionId, body) {
    try {
      const r = await api(`/resolutions/${enc(resolutionId)}/rerun`, { method: "POST", body });
      showBanner(`Rerun accepted: new resolution ${short(r.resolution_id)}`, "info");
      location.hash = resHref(r.resolution_id);
    } catch (e) {
      showBanner(`Rerun of ${short(resolutionId)} failed: ${e.message}`);
    }
  }

  async function cancel(resolutionId, view) {
    try {
      await api(`/resolutions/${enc(resolutionId)}/cancel`, { method: "POST" });
      showBanner(`Cancel requested for ${short(resolutionId)}`, "info");
      view.refresh();
    } catch (e) {
      showBanner(`Cancel of ${short(resolutionId)} failed: ${e.message}`);
    }
  }

  // -- resolutions list -------------------------------------------------------------------------

  class ListView {
    constructor() {
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
      if (ev.type === "resolution" || ev.id === ev.root_id) schedule(this);
    }

    async refresh() {
      const q = new URLSearchParams({ limit: this.limit, offset: this.offset });
      if (this.stateFilter) q.set("state", this.stateFilter);
      let page;
      try {
        page = await api(`/resolutions?${q}`);
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
      }, ["", "created", "running", "resolved", "failed", "canceled"].map((s) => h("option", {
        value: s, selected: s === this.stateFilter,
      }, s || "all states")));
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

  // -- a resolution: header, graph, run panel ------------------------------------------------------

  class ResolutionView {
    constructor(resolutionId) {
      this.id = resolutionId;
      this.runId = null;
      this.g = null;
      this.sig = null;
      this.panelSig = null;
      this.logs = null;
      this.missingSince = null;
      this.header = h("div", { class: "res-header", testid: "resolution-header" });
      this.graphEl = h("div", { class: "graph-wrap" });
      this.panel = h("aside", { class: "panel", testid: "run-panel-wrap" });
      this.el = h("section", { class: "resolution", testid: "resolution-view", data: { id: resolutionId } },
        this.header, h("div", { class: "split" }, this.graphEl, this.panel));
    }

    mount(main, runId) {
      fill(main, this.el);
      fill(this.header, h("p", { class: "muted" }, `Loading resolution ${short(this.id)}…`));
      return this.select(runId);
    }

    onEvent(ev) {
      if (ev.root_id === this.id || ev.id === this.id) schedule(this);
    }

    async select(runId) {
      this.runId = runId || null;
      this.panelSig = null;
      this.logs = null;
      if (this.g) this.renderGraph();
      await this.refresh();
    }

    async refresh() {
      let g;
      try {
        g = await api(`/resolutions/${enc(this.id)}/graph`);
      } catch (e) {
        this.sig = null;
        if (e.status === 404) {
          // a rerun's resolution is recorded by a background process: give it a moment
          this.missingSince = this.missingSince || Date.now();
          const waiting = Date.now() - this.missingSince < 120000;
          fill(this.header, h("p", { class: waiting ? "muted" : "error", testid: "resolution-missing" },
            waiting ? `Waiting for resolution ${this.id} to be recorded…` : `No resolution ${this.id}.`));
          if (waiting) setTimeout(() => { if (view === this) this.refresh(); }, 1000);
        } else {
          fill(this.header, h("p", { class: "error", testid: "load-error" }, e.message));
        }
        return;
      }
      this.missingSince = null;
      const sig = JSON.stringify(g);
      if (sig !== this.sig) {
        this.sig = sig;
        this.g = g;
        this.byId = new Map(g.runs.map((r) => [r.id, r]));
        this.renderHeader();
        this.renderGraph();
      }
      await this.refreshPanel();
    }

    // header and resolution Actions

    renderHeader() {
      const r = this.g.resolution;
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

    // graph

    renderGraph() {
      const g = this.g;
      const children = new Map();
      for (const run of g.runs) {
        const key = run.parent_id && this.byId.has(run.parent_id) ? run.parent_id : null;
        if (!children.has(key)) children.set(key, []);
        children.get(key).push(run);
      }
      const incoming = new Map();
      for (const e of edgesOf(g)) {
        if (!e.destination) continue;
        if (!incoming.has(e.destination)) incoming.set(e.destination, []);
        incoming.get(e.destination).push(e);
      }
      const byCreated = (a, b) => String(a.created_at).localeCompare(String(b.created_at)) || a.id.localeCompare(b.id);

      const box = (run) => {
        const kids = children.get(run.id) || [];
        const tags = [];
        if (run.cached_from) tags.push(h("span", { class: "tag cached", title: `cached from ${run.cached_from}` }, "cached"));
        if (run.notes && run.notes.reused_from) {
          tags.push(h("span", { class: "tag reused", title: `reused from ${run.notes.reused_from}` }, "reused"));
        }
        if (run.attempts > 1) tags.push(h("span", { class: "tag" }, `${run.attempts} attempts`));
        const inEdges = (incoming.get(run.id) || []).filter((e) => e.param);
        const ins = inEdges.filter((e) => e.source && this.byId.has(e.source)).map((e) =>
          h("li", {}, h("span", { class: "param" }, e.param), ` ← ${this.byId.get(e.source).func_name}`));
        const literals = [...new Set(inEdges.filter((e) => !(e.source && this.byId.has(e.source))).map((e) => e.param))];
        if (literals.length) ins.push(h("li", { class: "literals" }, "given: ", h("span", { class: "param" }, literals.join(", "))));
        return h("div", {
          class: `run state-${cssToken(run.state)}${run.id === this.runId ? " selected" : ""}${kids.length ? " composite" : ""}`,
          testid: "run-node", data: { runId: run.id, func: run.func_name, state: run.state },
          tabindex: "0", role: "button", title: run.func_path,
          onclick: (e) => { e.stopPropagation(); location.hash = runHref(run.id); },
          onkeydown: (e) => {
            if (e.key === "Enter" && e.target === e.currentTarget) location.hash = runHref(run.id);
          },
        },
        h("div", { class: "run-head" }, h("span", { class: "fname" }, run.func_name), badge(run.state), tags),
        ins.length ? h("ul", { class: "ins" }, ins) : null,
        kids.length ? layered(kids) : null);
      };

      // siblings in columns by dependency depth, so values flow left to right
      const layered = (kids) => {
        const ids = new Set(kids.map((k) => k.id));
        const sibling = (id) => { // the ancestor of run `id` among these siblings, if any
          for (let r = this.byId.get(id), n = 0; r && n < 1000; r = this.byId.get(r.parent_id), n++) {
            if (ids.has(r.id)) return r.id;
          }
          return null;
        };
        const depth = new Map();
        const depthOf = (id, seen) => {
          if (depth.has(id)) return depth.get(id);
          if (seen.has(id)) return 0;
          seen.add(id);
          let d = 0;
          for (const e of incoming.get(id) || []) {
            const s = e.source && sibling(e.source);
            if (s && s !== id) d = Math.max(d, depthOf(s, seen) + 1);
          }
          depth.set(id, d);
          return d;
        };
        const cols = [];
        for (const k of [...kids].sort(byCreated)) {
          const d = depthOf(k.id, new Set());
          (cols[d] = cols[d] || []).push(k);
        }
        return h("div", { class: "layers" }, cols.filter(Boolean).map((col, i) => [
          i ? h("div", { class: "arrow", "aria-hidden": "true" }, "→") : null,
          h("div", { class: "layer" }, col.map(box)),
        ]));
      };

      const roots = (children.get(null) || []).sort(byCreated);
      const scroll = this.graphEl.firstChild ? [this.graphEl.scrollLeft, this.graphEl.scrollTop] : null;
      fill(this.graphEl, h("div", { class: "graph", testid: "run-graph" }, roots.map(box)));
      if (scroll) [this.graphEl.scrollLeft, this.graphEl.scrollTop] = scroll;
    }

    // run panel

    async refreshPanel() {
      if (!this.runId) {
        this.panelSig = null;
        fill(this.panel, h("p", { class: "muted", testid: "run-panel-hint" },
          "Click a run to see its inputs, output, logs and timings."));
        return;
      }
      let run = this.byId && this.byId.get(this.runId);
      if (!run) {
        try {
          run = await api(`/runs/${enc(this.runId)}`);
        } catch (e) {
          fill(this.panel, h("p", { class: "error" }, `Cannot load run ${this.runId}: ${e.message}`));
          return;
        }
      }
      const runId = run.id;
      const needLogs = this.logs === null || !TERMINAL.has(run.state) || this.logsState !== run.state;
      if (needLogs) {
        try {
          this.logs = await api(`/runs/${enc(runId)}/logs`, { text: true });
        } catch (e) {
          this.logs = e.status === 404 ? "" : `(cannot load logs: ${e.message})`;
        }
        this.logsState = run.state;
      }
      if (runId !== this.runId) return; // another run was selected meanwhile
      const sig = JSON.stringify([run, this.logs, this.g && this.g.resolution.state]);
      if (sig === this.panelSig) return;
      this.panelSig = sig;
      fill(this.panel, this.renderPanel(run));
    }

    renderPanel(run) {
      const res = this.g ? this.g.resolution : null;
      const resTerminal = res ? TERMINAL.has(res.state) : true;
      const notes = run.notes || {};
      const cache = notes.cache || {};
      const executor = notes.executor || null;
      const parent = run.parent_id && this.byId.get(run.parent_id);
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
        else cell.append(pendingInput((run.input_refs || {})[p], this.byId));
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

  /** The settings that differ from a plain func, on one line. */
  function settingsLine(settings) {
    const set = Object.entries(settings).filter(([, v]) => v !== null && v !== false && v !== 0 &&
      !(Array.isArray(v) && v.length === 0));
    return set.length ? set.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ")
      : "defaults";
  }

  function noLogs(run) {
    const notes = run.notes || {};
    if (notes.reused_from) return `(no logs here: its output was reused from run ${notes.reused_from})`;
    if (run.cached_from) return `(no logs: its output came from the cache, run ${run.cached_from})`;
    if (["created", "scheduled", "canceled"].includes(run.state)) return "(no logs: it never ran)";
    return run.state === "running" ? "(no output yet)" : "(no logs: it printed nothing)";
  }

  function section(title, body) {
    return h("section", { class: "psec" }, h("h3", {}, title), body);
  }

  function factList(pairs, testid) {
    return h("dl", { class: "facts", testid }, pairs.filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => h("div", { class: "fact" }, h("dt", {}, k), h("dd", {}, v))));
  }

  function fillArtifact(id, cell, typeCell) {
    cell.dataset.artifactId = id;
    cell.append(h("span", { class: "muted" }, "…"));
    artifact(id).then((a) => {
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

  /** The graph's edges; derived from input_refs when a server sends none. */
  function edgesOf(g) {
    if (Array.isArray(g.edges)) return g.edges;
    const edges = [];
    const walk = (t, out) => {
      if (Array.isArray(t)) t.forEach((x) => walk(x, out));
      else if (t && typeof t === "object") {
        if (typeof t.run === "string") out.push(t.run);
        else Object.values(t).forEach((x) => walk(x, out));
      }
    };
    for (const run of g.runs) {
      for (const [param, t] of Object.entries(run.input_refs || {})) {
        const srcs = [];
        walk(t, srcs);
        (srcs.length ? srcs : [null]).forEach((s) => edges.push({ source: s, destination: run.id, param }));
      }
    }
    return edges;
  }

  // -- live updates -------------------------------------------------------------------------------

  const pending = new Map(); // view -> timer: coalesce bursts of events into one refresh

  function schedule(v) {
    if (pending.has(v)) return;
    pending.set(v, setTimeout(() => {
      pending.delete(v);
      if (view === v) v.refresh();
    }, 150));
  }

  const live = {
    ctrl: null,
    pollTimer: null,
    retryTimer: null,

    status(text, kind) {
      const el = $('[data-testid="live-status"]');
      el.textContent = text;
      el.className = `live ${kind}`;
      el.dataset.mode = kind;
    },

    startPolling() {
      if (!this.pollTimer) this.pollTimer = setInterval(() => { if (view && !needKey) view.refresh(); }, POLL_MS);
    },

    stopPolling() {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    },

    restart() {
      if (this.ctrl) this.ctrl.abort();
      clearTimeout(this.retryTimer);
      this.connect();
    },

    async connect() {
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      try {
        const resp = await fetch(`${API}/events`, {
          headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store", signal: ctrl.signal,
        });
        if (resp.status === 401) needKey = true;
        if (!resp.ok || !resp.body) throw new Error(`events: HTTP ${resp.status}`);
        this.status("live", "live");
        this.stopPolling();
        if (view) view.refresh(); // catch up on what happened while disconnected
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let raw = "";
        let text = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          raw += value;
          const cut = raw.endsWith("\r") ? raw.length - 1 : raw.length; // a CR LF may straddle chunks
          text += raw.slice(0, cut).replace(/\r\n?/g, "\n");
          raw = raw.slice(cut);
          let i;
          while ((i = text.indexOf("\n\n")) >= 0) {
            const block = text.slice(0, i);
            text = text.slice(i + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:"))
              .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
            if (!data) continue;
            try {
              const ev = JSON.parse(data);
              if (!view || !ev || typeof ev !== "object") continue;
              if (ev.type === "overflow") schedule(view); // events were dropped: refetch
              else view.onEvent(ev);
            } catch {
              // not an event of ours
            }
          }
        }
        throw new Error("events stream ended");
      } catch (e) {
        if (ctrl.signal.aborted) return;
        this.status(needKey ? "no API key" : "polling", "polling");
        this.startPolling();
        const retry = () => {
          if (this.ctrl !== ctrl) return;
          if (needKey) this.retryTimer = setTimeout(retry, 5000); // saving a key restarts the stream
          else this.connect();
        };
        this.retryTimer = setTimeout(retry, 5000);
      }
    },
  };

  // -- routing --------------------------------------------------------------------------------------

  let view = null;
  const listView = new ListView();

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "resolutions" && parts[1]) return { name: "resolution", id: parts[1] };
    if (parts[0] === "runs" && parts[1]) return { name: "run", id: parts[1] };
    return { name: "list" };
  }

  let routeSeq = 0;

  async function route(force = false) {
    const seq = ++routeSeq;
    const r = parseRoute();
    const main = $("#app");
    closeMenus();
    if (r.name === "list") {
      view = listView;
      await listView.mount(main);
      return;
    }
    if (r.name === "resolution") {
      if (!force && view instanceof ResolutionView && view.id === r.id) {
        await view.select(null);
        return;
      }
      view = new ResolutionView(r.id);
      await view.mount(main, null);
      return;
    }
    // a run: show it inside its resolution
    let rootId = view instanceof ResolutionView && view.byId && view.byId.has(r.id) ? view.id : null;
    if (!rootId) {
      try {
        rootId = (await api(`/runs/${enc(r.id)}`)).root_id;
      } catch (e) {
        if (seq !== routeSeq) return;
        view = null;
        fill(main, h("p", { class: "error", testid: "load-error" }, `Cannot load run ${r.id}: ${e.message}`));
        return;
      }
      if (seq !== routeSeq) return;
    }
    if (!force && view instanceof ResolutionView && view.id === rootId) {
      await view.select(r.id);
      return;
    }
    view = new ResolutionView(rootId);
    await view.mount(main, r.id);
  }

  document.addEventListener("click", closeMenus);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenus(); });
  $('[data-testid="error-banner"]').addEventListener("click", hideBanner);
  window.addEventListener("hashchange", () => route());
  setInterval(tickDurations, 1000);
  setupKeyForm();
  live.status("connecting…", "connecting");
  live.connect();
  route();
})();
