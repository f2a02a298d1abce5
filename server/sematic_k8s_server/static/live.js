/* Keeping the page current: views that refresh on events (an answer come after a newer one's dropped, a request
 * superseded aborted), and the connection that brings the events (the server's event stream; while it is
 * unavailable, the current view is polled every 2 s). */

import { followEvents, needsKey } from "./api.js";

const POLL_MS = 2000;
const RETRY_MS = 5000;
const MAX_RETRY_MS = 300_000; // the longest wait a Retry-After may ask of a stream tried again (polling meanwhile)
const COALESCE_MS = 150;

/**
 * Answers to a view's requests, which may come back in another order than they were made. take(about, ask) makes
 * the request ask(signal) (a promise) and resolves to its answer, or throws its error, unless it is dropped
 * (resolves to undefined):
 *  - the answer (or error) to a newer request was taken first: the older one is stale;
 *  - it was superseded: a newer request is about something else (`about`: a filter, a page of a group, a run), or
 *    drop() was called. Then it is also aborted (through `signal`: its connection closed, no answer carried), and
 *    whatever came of it is dropped: the abort is no error to show, and an answer that raced the abort is stale.
 * A newer request about the same thing neither aborts nor drops an older one on its way: a view refreshed more
 * often than its server answers (events, polling) still shows each answer as it comes.
 */
export class Answers {
  constructor() {
    this.asked = 0; // requests made
    this.taken = 0; // the newest of them whose answer was taken
    this.onTheirWay = new Map(); // request number -> {about, ctrl}
  }

  async take(about, ask) {
    const ticket = ++this.asked;
    for (const [t, req] of this.onTheirWay) if (req.about !== about) this.#abort(t);
    const ctrl = new AbortController();
    this.onTheirWay.set(ticket, { about, ctrl });
    let answer;
    let failed = null;
    try {
      answer = await ask(ctrl.signal);
    } catch (e) {
      failed = { error: e };
    } finally {
      this.onTheirWay.delete(ticket);
    }
    if (ctrl.signal.aborted || ticket < this.taken) return undefined;
    this.taken = ticket;
    if (failed) throw failed.error;
    return answer;
  }

  /** Abort every request on its way, and drop the answers (and errors) to every request made so far. */
  drop() {
    for (const t of [...this.onTheirWay.keys()]) this.#abort(t);
    this.asked += 1;
    this.taken = this.asked;
  }

  #abort(ticket) {
    this.onTheirWay.get(ticket).ctrl.abort();
    this.onTheirWay.delete(ticket);
  }
}

/**
 * What a view shows while its last load failed for an outage (no answer, 502/503/504): `el` greyed (its class
 * "stale", data-stale) under `notice` saying why, and the load tried again every POLL_MS, retry(), until mark(null)
 * says it is current. A page following live events asks nothing else meanwhile: no event comes of a failed load.
 * A page with nothing seen yet says the outage its own way (with retrying(why)) and calls again(); `el` and `notice`
 * are null where only that is done (a run's page whose run cannot be looked up).
 */
export class Staleness {
  constructor(el, notice, retry) {
    this.el = el;
    this.notice = notice;
    this.retry = retry;
    this.timer = null;
  }

  /** Keep what was last seen on screen, greyed, under `why` and a word that it is retried; null: it is current. */
  mark(why) {
    this.stop();
    this.el.classList.toggle("stale", why !== null);
    this.el.dataset.stale = String(why !== null);
    this.notice.hidden = why === null;
    this.notice.textContent = why === null ? "" : `${why}; showing what was last seen, retrying`;
    if (why !== null) this.again();
  }

  /** What a page with nothing seen yet says of outage `why` while it tries again(). */
  static retrying(why) {
    return `${why}; retrying every ${POLL_MS / 1000} s`;
  }

  /** Try the load again in POLL_MS (nothing seen yet to grey: the view says the outage its own way). */
  again() {
    this.stop();
    this.timer = setTimeout(() => { this.timer = null; this.retry(); }, POLL_MS);
  }

  /** No more tries (the view left, or it shows something else). */
  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * A page the router shows. Subclasses define refresh() and onEvent(event); `active` is true while shown. A
 * refresh takes its answer through `answers` (an answer older than the one shown is dropped, a request about
 * something else than the newest aborted); leave() aborts those still on their way.
 */
export class View {
  constructor() {
    this.active = false;
    this.timer = null;
    this.answers = new Answers();
  }

  /** The router shows another page: this one's requests still on their way are aborted, their answers dropped. */
  leave() {
    this.active = false;
    this.answers.drop();
  }

  /** Refresh soon: a burst of events makes one refresh. */
  soon() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.active) this.refresh();
    }, COALESCE_MS);
  }
}

/**
 * The live connection. currentView() is the view shown (or null); statusEl shows "live", "polling",
 * "no API key" or "connecting…" and carries the mode in data-mode.
 */
export class Live {
  constructor(statusEl, currentView) {
    this.statusEl = statusEl;
    this.currentView = currentView;
    this.ctrl = null;
    this.pollTimer = null;
    this.retryTimer = null;
  }

  status(text, kind) {
    this.statusEl.textContent = text;
    this.statusEl.className = `live ${kind}`;
    this.statusEl.dataset.mode = kind;
  }

  startPolling() {
    if (this.pollTimer) return;
    this.pollTimer = setInterval(() => {
      const view = this.currentView();
      if (view && !needsKey()) view.refresh();
    }, POLL_MS);
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  /** Drop the connection and open a new one (e.g. after a new API key is saved). */
  restart() {
    if (this.ctrl) this.ctrl.abort();
    clearTimeout(this.retryTimer);
    this.connect();
  }

  async connect() {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    try {
      await followEvents({
        signal: ctrl.signal,
        onOpen: () => {
          this.status("live", "live");
          this.stopPolling();
          const view = this.currentView();
          if (view) view.refresh(); // catch up on what happened while disconnected
        },
        onEvent: (ev) => {
          const view = this.currentView();
          if (!view) return;
          if (ev.type === "overflow") view.soon(); // events were dropped: refetch
          else view.onEvent(ev);
        },
      });
    } catch (e) {
      if (ctrl.signal.aborted) return;
      this.status(needsKey() ? "no API key" : "polling", "polling");
      this.startPolling();
      const retry = () => {
        if (this.ctrl !== ctrl) return;
        if (needsKey()) this.retryTimer = setTimeout(retry, RETRY_MS); // saving a key restarts the stream
        else this.connect();
      };
      // not before the server said (a 429: the key holds all the streams it may; polling meanwhile)
      this.retryTimer = setTimeout(retry, Math.min(MAX_RETRY_MS, Math.max(RETRY_MS, (e.retryAfter || 0) * 1000)));
    }
  }
}
