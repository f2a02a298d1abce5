/* A run's logs: its last part first, then followed while it runs (new bytes fetched every second from the offset
 * reached, a part at a time), searchable (the lines holding a text), downloadable whole. The page holds at most
 * SHOWN characters of a log (a log of gigabytes is never loaded whole): what came before is said, not shown. */

import { getLogChunk } from "./api.js";
import { download, fill, h } from "./dom.js";
import { short } from "./format.js";
import { TERMINAL } from "./model.js";
import { noLogs } from "./started.js";

const FOLLOW_MS = 1000;
const PART = 1 << 20; // bytes asked for at a time
const SHOWN = 4 << 20; // characters of a log held on the page, at most
const WHOLE_PART = 16 << 20; // bytes asked for at a time by a download (the server's most)
const DRAW_MS = 2000; // while catching up with a log, it is drawn this often (drawing megabytes takes a while)

const byteLength = (text) => new TextEncoder().encode(text).length;

/** "3.2 MB" */
export function bytesText(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

/** The whole log of `runId`, read a part at a time (a Blob). */
async function wholeLog(runId) {
  const parts = [];
  let offset = 0;
  for (;;) {
    const { text, next, size } = await getLogChunk(runId, { offset, limit: WHOLE_PART });
    parts.push(text);
    if (next <= offset || next >= size) return new Blob(parts, { type: "text/plain" });
    offset = next;
  }
}

/** The Logs tab of one run. el() is its element; update(run) follows the run's state; stop() ends it (the part on
 * its way aborted; a download asked for goes on). */
export class LogView {
  constructor(run, resolution = null) {
    this.run = run;
    this.resolution = resolution; // its record: where its logs are kept (started.js noLogs)
    this.text = "";
    this.next = null; // the offset to ask for next (null: none asked yet: the log's last part first)
    this.skipped = 0; // bytes of the log before this.text, not shown
    this.drawnAt = 0;
    this.error = null;
    this.timer = null;
    this.idle = false; // the following has ended: no request on its way, none to come
    this.stopped = false;
    this.following = new AbortController(); // aborted by stop()
    this.query = "";
    this.pre = h("pre", { class: "logs", testid: "run-logs" });
    this.count = h("span", { class: "muted small", testid: "logs-count" });
    this.search = h("input", {
      type: "search", placeholder: "search the log", testid: "logs-search", class: "search",
      oninput: (e) => { this.query = e.target.value; this.draw(); },
    });
    this.follow = h("span", { class: "muted small", testid: "logs-follow" });
    this.skippedLine = h("div", { class: "muted small", testid: "logs-skipped" });
    this.root = h("div", { class: "logview" },
      h("div", { class: "toolbar" }, this.search, this.count, h("span", { class: "spacer" }), this.follow,
        h("button", {
          type: "button", class: "btn tiny", testid: "logs-download",
          onclick: () => this.downloadWhole(),
        }, "download")),
      this.skippedLine,
      this.pre);
    this.draw();
    this.poll();
  }

  async downloadWhole() {
    const stem = `${short(this.run.id)}-${this.run.func_name}`;
    try {
      download(this.skipped ? await wholeLog(this.run.id) : new Blob([this.text], { type: "text/plain" }), stem, "log");
    } catch (e) {
      this.error = e.message;
      this.draw();
    }
  }

  el() {
    return this.root;
  }

  /** The run as now recorded: one that runs again after it ended (a retry) is followed again. (One request at a
   * time: two on their way from the same offset would show the same bytes twice.) */
  update(run, resolution = null) {
    this.run = run;
    if (resolution) this.resolution = resolution;
    if (this.idle && !TERMINAL.has(run.state)) this.poll();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.following.abort();
  }

  async poll() {
    this.timer = null;
    this.idle = false;
    if (this.stopped) return;
    const live = !TERMINAL.has(this.run.state);
    let behind = false;
    try {
      const first = this.next === null;
      const from = first ? { tail: PART } : { offset: this.next, limit: PART };
      const { text, start, next, size } = await getLogChunk(this.run.id, from, { signal: this.following.signal });
      if (!first && size < this.next) { // rewritten (a retry): start over
        this.text = "";
        this.next = null;
        this.skipped = 0;
        this.timer = setTimeout(() => this.poll(), 0);
        return;
      }
      if (first) this.skipped = start;
      this.text += text;
      this.next = next;
      this.error = null;
      if (this.text.length > SHOWN) this.forgetStart();
      behind = next < size; // more came than one part: the rest at once
    } catch (e) {
      if (this.stopped) return; // aborted: no error
      this.error = e.status === 404 ? null : e.message;
    }
    if (this.stopped) return;
    if (!behind || Date.now() - this.drawnAt > DRAW_MS) this.draw(); // catching up: drawn now and then
    const following = live || !TERMINAL.has(this.run.state); // it ran when asked (its last bytes next), or runs again
    if (behind) this.timer = setTimeout(() => this.poll(), 0);
    else if (following && !this.error) this.timer = setTimeout(() => this.poll(), FOLLOW_MS);
    else if (following) this.timer = setTimeout(() => this.poll(), FOLLOW_MS * 5);
    else this.idle = true;
  }

  /** Keep the last SHOWN characters of the text (from the start of a line): the rest is said, not shown. */
  forgetStart() {
    const cut = this.text.length - SHOWN;
    const newline = this.text.indexOf("\n", cut);
    const drop = newline === -1 ? cut : newline + 1;
    this.skipped += byteLength(this.text.slice(0, drop));
    this.text = this.text.slice(drop);
  }

  draw() {
    this.drawnAt = Date.now();
    const live = !TERMINAL.has(this.run.state);
    this.follow.textContent = live ? "following…" : "";
    this.skippedLine.textContent = this.skipped && !this.error
      ? `(${bytesText(this.skipped)} of earlier output not shown here: "download" has the whole log)` : "";
    this.pre.classList.toggle("error-box", !!this.error);
    if (this.error) {
      fill(this.pre, `(cannot show the logs: ${this.error})`);
      this.pre.dataset.error = "true";
      this.count.textContent = "";
      return;
    }
    delete this.pre.dataset.error;
    if (!this.text) {
      fill(this.pre, noLogs(this.run, this.resolution));
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
