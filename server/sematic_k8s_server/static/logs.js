/* A run's logs: followed while it runs (new bytes fetched every second from the offset reached), searchable
 * (the lines holding a text), downloadable. */

import { getLogChunk } from "./api.js";
import { download, fill, h } from "./dom.js";
import { short } from "./format.js";
import { TERMINAL } from "./model.js";

const FOLLOW_MS = 1000;

/** What the log says when there is none. */
export function noLogs(run) {
  const notes = run.notes || {};
  if (notes.reused_from) return `(no logs here: its output was reused from run ${notes.reused_from})`;
  if (run.cached_from) return `(no logs: its output came from the cache, run ${run.cached_from})`;
  if (["created", "scheduled", "canceled"].includes(run.state)) return "(no logs: it never ran)";
  return run.state === "running" ? "(no output yet)" : "(no logs: it printed nothing)";
}

/** The Logs tab of one run. el() is its element; update(run) follows the run's state; stop() ends it. */
export class LogView {
  constructor(run) {
    this.run = run;
    this.text = "";
    this.size = 0;
    this.error = null;
    this.timer = null;
    this.stopped = false;
    this.query = "";
    this.pre = h("pre", { class: "logs", testid: "run-logs" });
    this.count = h("span", { class: "muted small", testid: "logs-count" });
    this.search = h("input", {
      type: "search", placeholder: "search the log", testid: "logs-search", class: "search",
      oninput: (e) => { this.query = e.target.value; this.draw(); },
    });
    this.follow = h("span", { class: "muted small", testid: "logs-follow" });
    this.root = h("div", { class: "logview" },
      h("div", { class: "toolbar" }, this.search, this.count, h("span", { class: "spacer" }), this.follow,
        h("button", {
          type: "button", class: "btn tiny", testid: "logs-download",
          onclick: () => download(new Blob([this.text], { type: "text/plain" }), `${short(this.run.id)}-${this.run.func_name}.log`),
        }, "download")),
      this.pre);
    this.draw();
    this.poll();
  }

  el() {
    return this.root;
  }

  update(run) {
    const wasLive = !TERMINAL.has(this.run.state);
    this.run = run;
    if (wasLive && !this.timer) this.poll();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  async poll() {
    this.timer = null;
    if (this.stopped) return;
    const live = !TERMINAL.has(this.run.state);
    try {
      const { text, size } = await getLogChunk(this.run.id, this.size);
      if (size < this.size) { // rewritten (a retry): start over
        this.text = "";
        this.size = 0;
        this.timer = setTimeout(() => this.poll(), 0);
        return;
      }
      this.text += text;
      this.size = size;
      this.error = null;
    } catch (e) {
      this.error = e.status === 404 ? null : e.message;
    }
    if (this.stopped) return;
    this.draw();
    if (live && !this.error) this.timer = setTimeout(() => this.poll(), FOLLOW_MS);
    else if (live) this.timer = setTimeout(() => this.poll(), FOLLOW_MS * 5);
  }

  draw() {
    const live = !TERMINAL.has(this.run.state);
    this.follow.textContent = live ? "following…" : "";
    this.pre.classList.toggle("error-box", !!this.error);
    if (this.error) {
      fill(this.pre, `(cannot show the logs: ${this.error})`);
      this.pre.dataset.error = "true";
      this.count.textContent = "";
      return;
    }
    delete this.pre.dataset.error;
    if (!this.text) {
      fill(this.pre, noLogs(this.run));
      this.count.textContent = "";
      return;
    }
    const lines = this.text.replace(/\n$/, "").split("\n");
    const q = this.query.trim().toLowerCase();
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    if (!q) {
      fill(this.pre, this.text);
      this.count.textContent = `${lines.length} lines`;
    } else {
      const hits = lines.filter((l) => l.toLowerCase().includes(q));
      fill(this.pre, hits.map((l) => {
        const i = l.toLowerCase().indexOf(q);
        return h("div", { class: "hit", testid: "logs-hit" }, l.slice(0, i), h("mark", {}, l.slice(i, i + q.length)), l.slice(i + q.length));
      }));
      this.count.textContent = `${hits.length} of ${lines.length} lines`;
    }
    if (atBottom && live) this.pre.scrollTop = this.pre.scrollHeight;
  }
}
