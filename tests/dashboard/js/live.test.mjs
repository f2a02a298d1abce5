// Answers that come back in another order than asked (live.js): an older one after a newer one is dropped.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Answers } from "../../../server/sematic_k8s_server/static/live.js";

/** A request whose answer (or error) the test gives when it chooses. */
function held() {
  let answer;
  let fail;
  const promise = new Promise((resolve, reject) => { answer = resolve; fail = reject; });
  return { promise, answer, fail };
}

test("an answer to an older request, come after a newer one's, is dropped; in order, each is taken", async () => {
  const answers = new Answers();
  const old = held();
  const newer = held();
  const oldTaken = answers.take(old.promise);
  const newerTaken = answers.take(newer.promise);
  newer.answer("canceled");
  assert.equal(await newerTaken, "canceled");
  old.answer("failed");
  assert.equal(await oldTaken, undefined);

  const first = held();
  const second = held();
  const firstTaken = answers.take(first.promise);
  const secondTaken = answers.take(second.promise);
  first.answer(1); // in order: both shown, the older first (a slow server refreshed often still shows each)
  assert.equal(await firstTaken, 1);
  second.answer(2);
  assert.equal(await secondTaken, 2);
});

test("an error to an older request, come after a newer answer, is dropped; the newest error is thrown", async () => {
  const answers = new Answers();
  const old = held();
  const newer = held();
  const oldTaken = answers.take(old.promise);
  const newerTaken = answers.take(newer.promise);
  newer.answer("shown");
  await newerTaken;
  old.fail(new Error("connection reset"));
  assert.equal(await oldTaken, undefined);

  const latest = answers.take(Promise.reject(new Error("503")));
  await assert.rejects(latest, /503/);
});

test("drop() drops every answer on its way; requests made after are taken", async () => {
  const answers = new Answers();
  const before = held();
  const beforeTaken = answers.take(before.promise);
  answers.drop();
  const after = answers.take(Promise.resolve("after"));
  before.answer("before");
  assert.equal(await beforeTaken, undefined);
  assert.equal(await after, "after");
  const failed = held();
  const failedTaken = answers.take(failed.promise);
  answers.drop();
  failed.fail(new Error("about the run shown before"));
  assert.equal(await failedTaken, undefined);
});
