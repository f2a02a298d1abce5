// The pipelines list and live events (list.js): an event saying only that runs' notes, inputs, output or error
// changed re-reads nothing (no row shows them: a pull's progress, noted once a second, would re-read the list each
// second); any other event re-reads it, once a second at most.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ListView } from "../../../server/sematic_k8s_server/static/list.js";

test("the list is re-read for a run's state, not for runs' notes changed alone", () => {
  const view = { timer: null, active: false }; // the list's state onEvent reads (no page: nothing drawn)
  const onEvent = ListView.prototype.onEvent;
  onEvent.call(view, { type: "run", id: null, root_id: "ab", state: null, changed: ["notes"] });
  assert.equal(view.timer, null);
  onEvent.call(view, { type: "run", id: "cd", root_id: "ab", state: null, attempts: 2 });
  assert.notEqual(view.timer, null);
  clearTimeout(view.timer);
});
