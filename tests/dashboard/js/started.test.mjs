// started.js: whether a run started, why a canceled one ended, and what its missing log means.

import assert from "node:assert/strict";
import { test } from "node:test";

import { canceledText, neverStarted, noLogs, notStartedText } from "../../../server/sematic_k8s_server/static/started.js";

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
