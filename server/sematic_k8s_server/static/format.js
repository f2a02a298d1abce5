/* Text formatting for the dashboard: ids, times, durations, value summaries. Pure: no DOM. */

/** The first 8 characters of an id (how ids are shown in lists and links). */
export const short = (id) => (id ? String(id).slice(0, 8) : "");

/** A string safe to use in a CSS class name (states, keys). */
export const cssToken = (s) => String(s || "unknown").toLowerCase().replace(/[^a-z0-9_-]/g, "");

/** A Date from an API timestamp (UTC, with or without an explicit offset), or null. */
export function parseTime(s) {
  if (!s) return null;
  const d = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`); // the API speaks UTC
  return Number.isNaN(d.getTime()) ? null : d;
}

/** An API timestamp as local "YYYY-MM-DD HH:MM:SS", or "—". */
export function fmtTime(s) {
  const d = parseTime(s);
  if (!d) return "—";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Milliseconds as "12 ms", "3.4 s", "2m 05s" or "1h 02m". */
export function fmtDuration(ms) {
  if (ms == null || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** An artifact's summary as one line of text: its repr when that is all there is, else JSON. */
export function summaryText(summary, format) {
  if (summary === undefined) return "";
  const keys = summary && typeof summary === "object" ? Object.keys(summary) : [];
  if (format !== "json" && keys.length === 1 && typeof summary.repr === "string") return summary.repr;
  try {
    return JSON.stringify(summary);
  } catch {
    return String(summary);
  }
}

/** The settings that differ from a plain func, on one line. */
export function settingsLine(settings) {
  const set = Object.entries(settings).filter(([, v]) => v !== null && v !== false && v !== 0 &&
    !(Array.isArray(v) && v.length === 0));
  return set.length ? set.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ")
    : "defaults";
}
