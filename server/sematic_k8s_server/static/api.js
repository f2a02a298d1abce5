/* The dashboard's API client: JSON and text requests to /api/v1 with the stored API key, readable errors,
 * immutable artifacts fetched once, and the live event stream (server-sent events read with fetch, so the
 * key header can be sent). No DOM: a 401 is reported through onUnauthorized().
 */

export const API = "/api/v1";
const KEY_STORAGE = "sematic_k8s_api_key";
const enc = encodeURIComponent;

/** An HTTP error with the server's message (its `detail` when it sent JSON). */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const UNREACHABLE = new Set([0, 502, 503, 504]); // the server (or the proxy before it) is down for now

/** True when error `e` says the server cannot be reached for now (so what was last seen is still worth showing). */
export const unreachable = (e) => UNREACHABLE.has(e.status);

// -- the API key -----------------------------------------------------------------------------------

export const apiKey = () => localStorage.getItem(KEY_STORAGE) || "";

export function saveApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  needKey = false;
}

export function forgetApiKey() {
  localStorage.removeItem(KEY_STORAGE);
}

let needKey = false; // the last request got 401: no polling or reconnecting until a key is saved
let unauthorized = () => {};

/** True while the server refuses us for want of a (valid) key. */
export const needsKey = () => needKey;

/** Call handler(message) whenever a request is refused with 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function authHeaders(extra) {
  const headers = { ...extra };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  return headers;
}

/** A validation error's details ([{loc, msg}]) as one readable line. */
export function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body" && x !== "query" && x !== "path").join(".") : "";
      return where ? `${where}: ${d.msg}` : String(d.msg || JSON.stringify(d));
    }).join("; ");
  }
  return JSON.stringify(detail);
}

/** fetch(), with a failure to connect (the server stopped, restarting, or out of reach) as an HttpError of
 * status 0 that says so; an abort is passed on as it is. */
async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new HttpError(0, "the server cannot be reached: it is stopped or restarting, or the network is down");
  }
}

const REASONS = { 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout" };
const EXCERPT = 120; // characters of a body that is not JSON shown after the status line

/** A body that is not JSON (say a proxy's HTML error page) as a short plain excerpt: no tags, scripts or
 * styles, whitespace collapsed, cut at EXCERPT characters. */
export function plainExcerpt(text) {
  const plain = String(text)
    .replace(/<(script|style)\b[\s\S]*?<\/\1\s*>/gi, " ")
    .replace(/<!--[\s\S]*?-->|<[^>]*>?/g, " ")
    .replace(/\s+/g, " ").trim();
  return plain.length > EXCERPT ? `${plain.slice(0, EXCERPT)}…` : plain;
}

/** The words for an error answer: the server's `detail` when it sent JSON; otherwise (a proxy before the
 * server, or a crash page) one plain line with the status and a short excerpt of the body. */
export function errorWords(status, statusText, text) {
  try {
    const body = JSON.parse(text);
    return detailText(body.detail !== undefined ? body.detail : body);
  } catch {
    const line = `the server (or a proxy before it) answered ${status} ${statusText || REASONS[status] || ""}`.trim();
    const excerpt = plainExcerpt(text);
    return excerpt && !line.endsWith(excerpt) ? `${line}: ${excerpt}` : line;
  }
}

async function errorMessage(resp) {
  return errorWords(resp.status, resp.statusText, await resp.text().catch(() => ""));
}

// -- what the key may do ------------------------------------------------------------------------------

let readOnlyWhy = ""; // why actions are disabled: "" unless the stored key is read-only

/** "" unless the stored key is read-only; then why an action that changes anything is disabled. */
export const readOnly = () => readOnlyWhy;

/** Ask the server what the stored key may do (GET /whoami): a read-only key's actions are disabled, saying why. */
export async function loadRole() {
  try {
    const me = await api("/whoami");
    readOnlyWhy = me.role === "read-only" ? `key '${me.name}' is read-only: use a user key to do this` : "";
  } catch {
    readOnlyWhy = ""; // not known: actions stay enabled, and the server refuses what the key may not do (403)
  }
}

// -- requests ----------------------------------------------------------------------------------------

/** fetch /api/v1 + path; JSON by default, text with {text: true}, the Response with {raw: true}; throws
 * HttpError, or the AbortError of `signal` (which aborts the request, and the reading of its answer). */
export async function api(path, { method = "GET", body, text = false, raw = false, signal } = {}) {
  const headers = authHeaders({ Accept: text ? "text/plain" : "application/json" });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await send(API + path, {
    method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body), signal,
  });
  if (!resp.ok) {
    const message = await errorMessage(resp);
    if (resp.status === 401) {
      needKey = true;
      unauthorized(message);
    }
    throw new HttpError(resp.status, message);
  }
  needKey = false;
  if (raw) return resp;
  return text ? resp.text() : resp.json();
}

// reads a view may supersede take {signal} (see Answers in live.js)
export const listResolutions = (query) => api(`/resolutions?${new URLSearchParams(query)}`);
export const getGraph = (resolutionId) => api(`/resolutions/${enc(resolutionId)}/graph`);
export const getRun = (runId, { signal } = {}) => api(`/runs/${enc(runId)}`, { signal });
export const getLogs = (runId) => api(`/runs/${enc(runId)}/logs`, { text: true });
export const rerunResolution = (resolutionId, body) =>
  api(`/resolutions/${enc(resolutionId)}/rerun`, { method: "POST", body });
// a JSON body: a local-mode server refuses state-changing requests without one (cross-site request defence)
export const cancelResolution = (resolutionId) =>
  api(`/resolutions/${enc(resolutionId)}/cancel`, { method: "POST", body: {} });
export const getResolution = (resolutionId) => api(`/resolutions/${enc(resolutionId)}`);
export const listPipelines = (query, { signal } = {}) => api(`/pipelines?${new URLSearchParams(query)}`, { signal });
export const getCounts = (resolutionId) => api(`/resolutions/${enc(resolutionId)}/counts`);
export const setLabels = (resolutionId, body) => api(`/resolutions/${enc(resolutionId)}/labels`, { method: "POST", body });

/** A resolution's overview; `expand`: Map group id -> offset of the page of its runs to show. */
export function getOverview(resolutionId, { expand = new Map(), page = 50, signal } = {}) {
  const q = new URLSearchParams({ page: String(page) });
  for (const [g, offset] of expand) q.append("expand", `${g}@${offset}`);
  return api(`/resolutions/${enc(resolutionId)}/overview?${q}`, { signal });
}

/** A part of a run's log: from byte `from.offset` (at most `from.limit` bytes), or its last `from.tail` bytes.
 * {text, start, next, size}: where the text starts, the offset to ask for next, the whole log's size. */
export async function getLogChunk(runId, from = { offset: 0 }, { signal } = {}) {
  const resp = await api(`/runs/${enc(runId)}/logs?${new URLSearchParams(from)}`, { raw: true, signal });
  const text = await resp.text();
  const header = (name, otherwise) => {
    const n = Number(resp.headers.get(name) ?? NaN);
    return Number.isFinite(n) ? n : otherwise;
  };
  const start = header("X-Log-Start", from.offset ?? 0);
  const next = header("X-Log-Next", start + new TextEncoder().encode(text).length);
  return { text, start, next, size: header("X-Log-Size", next) };
}

/** An artifact's serialized bytes (a Blob), read from the storage `resolutionId` recorded. */
export async function getArtifactData(id, resolutionId) {
  const q = resolutionId ? `?resolution_id=${enc(resolutionId)}` : "";
  return (await api(`/artifacts/${enc(id)}/data${q}`, { raw: true })).blob();
}

const artifactCache = new Map(); // artifacts are immutable: fetch each once

/** An artifact's record (with its summary); a failed fetch is not remembered. */
export function getArtifact(id) {
  if (!artifactCache.has(id)) {
    const p = api(`/artifacts/${enc(id)}`).catch((e) => {
      artifactCache.delete(id);
      throw e;
    });
    artifactCache.set(id, p);
  }
  return artifactCache.get(id);
}

// -- live events ---------------------------------------------------------------------------------

/** A server-sent events parser: feed() it text as it arrives, get back the data of each complete event.
 * Handles CR, LF and CRLF line ends, also when a CRLF is split across chunks. */
export class SseParser {
  constructor() {
    this.raw = "";
    this.text = "";
  }

  /** The `data` of each event completed by this chunk (multi-line data joined with "\n"). */
  feed(chunk) {
    this.raw += chunk;
    const cut = this.raw.endsWith("\r") ? this.raw.length - 1 : this.raw.length; // a CR LF may straddle chunks
    this.text += this.raw.slice(0, cut).replace(/\r\n?/g, "\n");
    this.raw = this.raw.slice(cut);
    const out = [];
    let i;
    while ((i = this.text.indexOf("\n\n")) >= 0) {
      const block = this.text.slice(0, i);
      this.text = this.text.slice(i + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) out.push(data);
    }
    return out;
  }
}

/**
 * Follow /api/v1/events until `signal` aborts: onOpen() once connected, then onEvent(event) for each JSON
 * object received. Rejects (HttpError, or Error when the stream ends) so the caller can fall back and retry (an
 * HttpError's `retryAfter`: the seconds the server asked it to wait, 0 if it said none).
 */
export async function followEvents({ signal, onOpen, onEvent }) {
  const resp = await send(`${API}/events`, {
    headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store", signal,
  });
  if (resp.status === 401) needKey = true;
  if (!resp.ok || !resp.body) {
    const err = new HttpError(resp.status, `events: HTTP ${resp.status}`);
    err.retryAfter = Number(resp.headers.get("Retry-After")) || 0; // seconds (429: the key's streams are all open)
    throw err;
  }
  onOpen();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const data of parser.feed(value)) {
      let ev;
      try {
        ev = JSON.parse(data);
      } catch {
        continue; // not an event of ours
      }
      if (ev && typeof ev === "object") onEvent(ev);
    }
  }
  throw new Error("events stream ended");
}
