// started.js: whether a run started, why a canceled one ended, and what its missing log means.

import assert from "node:assert/strict";
import { test } from "node:test";

import { canceledText, inResolverHome, neverStarted, noLogs, notStartedText, resolutionCanceledText } from "../../../server/sematic_k8s_server/static/started.js";

const T = "2026-12-04T09:00:00";
const WAIT = "waiting for capacity: 0/1 nodes are available";

test("a run handed to its executor whose first attempt still waits (or was canceled waiting) never started", () => {
  assert.equal(neverStarted({ state: "running", started_at: T, attempts: 1, notes: { waiting: WAIT } }), true);
  assert.equal(neverStarted({ state: "canceled", started_at: T, attempts: 1, notes: { waiting: WAIT } }), true);
  assert.equal(neverStarted({ state: "canceled", started_at: null, notes: {} }), true);
  assert.equal(neverStarted({ state: "running", started_at: T, attempts: 1, notes: {} }), false);
  // a retry waiting: its first attempt ran
  assert.equal(neverStarted({ state: "running", started_at: T, attempts: 2, notes: { waiting: WAIT } }), false);
});

test("a canceled run says when it was stopped and what became of its resolution", () => {
  const waited = { state: "canceled", started_at: T, attempts: 1, notes: { waiting: WAIT } };
  assert.equal(canceledText(waited, { state: "canceled" }),
    `Canceled before it started, while ${WAIT}; its resolution was canceled`);
  const ran = { state: "canceled", started_at: T, attempts: 1, notes: {} };
  assert.equal(canceledText(ran, { state: "failed", error: "the resolver stopped responding at 09:01 UTC\nmore" }),
    "Canceled while it ran; its resolution failed: the resolver stopped responding at 09:01 UTC");
  assert.equal(canceledText({ state: "canceled", notes: {} }, null), "Canceled before it started");
});

test("a missing log is explained by whether the run started, never as 'never ran' for one that ran", () => {
  assert.match(noLogs({ state: "canceled", started_at: T, attempts: 1, notes: {} }), /stopped before its attempt ended/);
  assert.equal(noLogs({ state: "canceled", started_at: T, attempts: 1, notes: { waiting: WAIT } }),
    "(no logs: it never started)");
  assert.equal(noLogs({ state: "running", started_at: T, attempts: 1, notes: { waiting: WAIT } }),
    "(no output yet: it has not started)");
  assert.equal(noLogs({ state: "failed", started_at: T, attempts: 1, notes: {} }), "(no logs: it printed nothing)");
});

test("a resolution's runs not started are counted with the first one's reason", () => {
  assert.equal(notStartedText({}), null);
  assert.equal(notStartedText({ a: WAIT }), `1 run not started: ${WAIT}`);
  assert.equal(notStartedText({ a: WAIT, b: "waiting for quota" }), `2 runs not started: ${WAIT}`);
  const many = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`r${i}`, WAIT]));
  assert.equal(notStartedText(many), `20 or more runs not started: ${WAIT}`);
});

test("an overview's node carries what the rule reads, pruned: a waiting or never-started run never started", () => {
  // as the server's overview gives them: notes and error only when the rule needs them
  assert.equal(neverStarted({ kind: "run", state: "failed", started_at: T, attempts: 1, error: { mro: ["WorkerNeverStarted"] } }), true);
  assert.equal(neverStarted({ kind: "run", state: "canceled", started_at: T, attempts: 1, notes: { waiting: WAIT } }), true);
  assert.equal(neverStarted({ kind: "run", state: "failed", started_at: T, attempts: 1 }), false);
});

test("a run of a LocalResolver that recorded through a server: its log is where it ran, not 'printed nothing'", () => {
  const res = { state: "resolved", settings: { kind: "local", storage: "home" } };
  assert.equal(inResolverHome(res), true);
  assert.equal(inResolverHome({ settings: { kind: "local" } }), false);
  assert.match(noLogs({ state: "resolved", started_at: T, attempts: 1, notes: {} }, res),
    /^\(no logs here: .*keeps its runs' logs in its own home, where it ran/);
  assert.equal(noLogs({ state: "resolved", started_at: T, attempts: 1, notes: {} }, { settings: {} }),
    "(no logs: it printed nothing)");
});

test("a canceled resolution's end is a notice of when and how, not an error", () => {
  const id = "a".repeat(32);
  assert.equal(resolutionCanceledText({ state: "canceled", error: `ResolutionCanceled: resolution ${id} was canceled` },
    "2026-12-04 10:00:00"), "Canceled at 2026-12-04 10:00:00, as asked (sematic-k8s cancel, the dashboard or the API).");
  assert.equal(resolutionCanceledText({ error: `ResolutionCanceled: resolution ${id} was canceled: f (run b) was interrupted` }, null),
    "Canceled, as asked: f (run b) was interrupted.");
  assert.equal(resolutionCanceledText({ error: "KeyboardInterrupt: " }, null),
    "Canceled: its resolving process was interrupted (Ctrl-C).");
  assert.equal(resolutionCanceledText({ error: "the resolver stopped responding at 2026-12-04 09:00:00 UTC; canceled as asked" }, null),
    "Canceled: the resolver stopped responding at 2026-12-04 09:00:00 UTC; canceled as asked");
});
