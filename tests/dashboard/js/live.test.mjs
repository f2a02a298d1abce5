// Answers that come back in another order than asked (live.js): an older one after a newer one is dropped; a request
// superseded (a newer one about something else, or drop()) is aborted, and whatever comes of it dropped.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Answers } from "../../../server/sematic_k8s_server/static/live.js";

/** A request whose answer (or error) the test gives when it chooses; ask(signal) makes it (as fetch would), and
 * `signal` is the one it was given. Given `abortable`, an abort rejects it with an AbortError, as fetch does. */
function held({ abortable = false } = {}) {
  const r = { signal: null };
  r.promise = new Promise((resolve, reject) => { r.answer = resolve; r.fail = reject; });
  r.ask = (signal) => {
    r.signal = signal;
    if (abortable) signal.addEventListener("abort", () => r.fail(new DOMException("aborted", "AbortError")));
    return r.promise;
  };
  return r;
}

/** An older and a newer request (about `olderAbout` and `newerAbout`), both taken, both on their way. */
function olderThenNewer(answers, olderAbout = "q", newerAbout = olderAbout, options = {}) {
  const older = held(options);
  const newer = held(options);
  return { older, newer, olderTaken: answers.take(olderAbout, older.ask), newerTaken: answers.take(newerAbout, newer.ask) };
}

test("an answer to an older request, come after a newer one's, is dropped; in order, each is taken", async () => {
  const answers = new Answers();
  const late = olderThenNewer(answers);
  late.newer.answer("canceled");
  assert.equal(await late.newerTaken, "canceled");
  late.older.answer("failed");
  assert.equal(await late.olderTaken, undefined);
  assert.equal(late.older.signal.aborted, false, "a request about the same thing is not aborted");

  const inOrder = olderThenNewer(answers);
  inOrder.older.answer(1); // in order: both shown, the older first (a slow server refreshed often still shows each)
  assert.equal(await inOrder.olderTaken, 1);
  inOrder.newer.answer(2);
  assert.equal(await inOrder.newerTaken, 2);
});

test("an error to an older request, come after a newer answer, is dropped; the newest error is thrown", async () => {
  const answers = new Answers();
  const late = olderThenNewer(answers);
  late.newer.answer("shown");
  await late.newerTaken;
  late.older.fail(new Error("connection reset"));
  assert.equal(await late.olderTaken, undefined);

  const latest = answers.take("q", () => Promise.reject(new Error("503")));
  await assert.rejects(latest, /503/);
});

test("a request about something else aborts the older one on its way: no error, no answer, the newer one shown", async () => {
  const answers = new Answers();
  const changed = olderThenNewer(answers, "state=failed", "state=canceled", { abortable: true });
  assert.equal(changed.older.signal.aborted, true, "the superseded request is aborted");
  assert.equal(changed.newer.signal.aborted, false);
  assert.equal(await changed.olderTaken, undefined, "the abort is dropped, not thrown");
  changed.newer.answer("canceled");
  assert.equal(await changed.newerTaken, "canceled");

  // the abort raced with an answer already arriving: the superseded answer is dropped all the same
  const raced = olderThenNewer(answers, "state=failed", "state=canceled");
  raced.older.answer("failed");
  assert.equal(await raced.olderTaken, undefined);
  raced.newer.fail(new Error("the server cannot be reached"));
  await assert.rejects(raced.newerTaken, /cannot be reached/, "the newest request's own failure is still said");
});

test("drop() aborts every request on its way and drops what comes of them; requests made after are taken", async () => {
  const answers = new Answers();
  const before = held({ abortable: true });
  const beforeTaken = answers.take("q", before.ask);
  answers.drop();
  assert.equal(before.signal.aborted, true);
  const after = held();
  const afterTaken = answers.take("q", after.ask);
  after.answer("after");
  assert.equal(await beforeTaken, undefined);
  assert.equal(await afterTaken, "after");
  assert.equal(after.signal.aborted, false);

  const answered = held(); // answers in spite of the abort (it was on its way back)
  const answeredTaken = answers.take("q", answered.ask);
  answers.drop();
  answered.answer("about the run shown before");
  assert.equal(await answeredTaken, undefined);
  const failed = held();
  const failedTaken = answers.take("q", failed.ask);
  answers.drop();
  failed.fail(new Error("about the run shown before"));
  assert.equal(await failedTaken, undefined);
});
