/* Whether a run started, in words: what its worker waits (or waited) for, why a canceled run (or resolution) ended,
 * and what its log lacks. A run's started_at is when it was handed to its executor, not when its code began: a worker pod
 * waiting for capacity or quota has one too. Pure: no DOM, no fetching. */

/** What the run's worker waits for (capacity, quota, its Job's creation), as last noted on the run; or null. */
export function waitingFor(run) {
  const why = (run.notes || {}).waiting;
  return typeof why === "string" && why ? why : null;
}

/** What the launch of a resolution the server claimed (a rerun its driver has not recorded yet) waits for, as noted on
 * the claim (`settings.waiting`: its driver's image); null for any other. As `claim_waiting` in
 * sematic_k8s/store/records.py reads it for the CLI. */
export function claimWaiting(res) {
  const why = res.state === "created" ? (res.settings || {}).waiting : null;
  return typeof why === "string" && why ? why : null;
}

/** True when the run's code never began: never handed to an executor, or its first attempt still waiting (or
 * canceled while waiting) for its worker to start, or failed as one whose worker never started (its image could not
 * be pulled, its pod not created: WorkerNeverStarted among the recorded error's classes). */
export function neverStarted(run) {
  const first = (run.attempts ?? 1) <= 1;
  const unstarted = ((run.error && run.error.mro) || []).includes("WorkerNeverStarted");
  return !run.started_at || (first && (waitingFor(run) !== null || unstarted));
}

const WAITING_LISTED = 20; // runs the server lists in an overview's `waiting`, at most

/** What the runs of a resolution that have not started wait for, in a line (as the CloudResolver's progress says
 * it): `waiting` is the overview's (run id -> why); null when none waits. */
export function notStartedText(waiting) {
  const whys = Object.values(waiting || {}).filter((why) => typeof why === "string" && why);
  if (!whys.length) return null;
  const n = whys.length >= WAITING_LISTED ? `${whys.length} or more runs` : `${whys.length} run${whys.length > 1 ? "s" : ""}`;
  return `${n} not started: ${whys[0]}`;
}

/** The first line of a resolution's error, cut short. */
const firstLine = (text) => {
  const line = String(text || "").split("\n", 1)[0];
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
};

/** Why a canceled run ended, in a line: before it started (and what it waited for) or while it ran, and what
 * became of its resolution (`resolution`: its record, or null). */
export function canceledText(run, resolution) {
  const waiting = waitingFor(run);
  const when = waiting && (run.attempts ?? 1) <= 1 ? `Canceled before it started, while ${waiting.replace(/\.+$/, "")}`
    : neverStarted(run) ? "Canceled before it started" : "Canceled while it ran";
  if (!resolution) return when;
  if (resolution.state === "failed") {
    return `${when}; its resolution failed${resolution.error ? `: ${firstLine(resolution.error)}` : ""}`;
  }
  if (resolution.state === "canceled" || resolution.state === "canceling") return `${when}; its resolution was canceled`;
  return when;
}

/** A canceled resolution's end as a notice, not an error: when (its end), and how, as its record says it (a cancel
 * asked of it, its resolving process interrupted, a func body interrupted by the cancel, the cancel landing after its
 * resolver went silent). Who asked is not recorded. `when` is the end's time as the page shows times. The CLI's copy
 * in Python is canceled_notice (sematic_k8s/store/records.py): a test holds the two to the same words. */
export function resolutionCanceledText(res, when) {
  const at = when ? ` at ${when}` : "";
  const error = String(res.error || "").trim();
  const asked = /^ResolutionCanceled: resolution \S+ was canceled(?:: ([\s\S]*))?$/.exec(error);
  if (!error || (asked && !asked[1])) return `Canceled${at}, as asked (sematic-k8s cancel, the dashboard or the API).`;
  if (asked) return `Canceled${at}, as asked: ${asked[1]}.`;
  if (/^KeyboardInterrupt\b/.test(error)) return `Canceled${at}: its resolving process was interrupted (Ctrl-C).`;
  return `Canceled${at}: ${error}`;
}

/** Whether a resolution records that its LocalResolver keeps its artifacts and logs in its own home, where it ran
 * (it recorded through a server: settings.storage "home", naming no path): none of them is in this server's storage. */
export function inResolverHome(resolution) {
  return ((resolution && resolution.settings) || {}).storage === "home";
}

/** What the Logs tab says when a run has no log (`resolution`: its resolution's record, or null). */
export function noLogs(run, resolution = null) {
  const notes = run.notes || {};
  if (notes.reused_from) return `(no logs here: its output was reused from run ${notes.reused_from})`;
  if (run.cached_from) return `(no logs: its output came from the cache, run ${run.cached_from})`;
  if (run.state === "failed" && neverStarted(run)) return "(no logs: it never started)";
  if (run.state === "canceled") {
    return neverStarted(run) ? "(no logs: it never started)"
      : "(no logs recorded: it was stopped before its attempt ended, and a run's output is recorded as each attempt ends)";
  }
  if (["created", "scheduled"].includes(run.state)) return "(no logs: it never ran)";
  if (run.state === "running") return neverStarted(run) ? "(no output yet: it has not started)" : "(no output yet)";
  if (inResolverHome(resolution)) {
    return "(no logs here: its resolution's LocalResolver recorded through a server and keeps its runs' logs in its own home, where it ran; this server's storage has none)";
  }
  return "(no logs: it printed nothing)";
}
