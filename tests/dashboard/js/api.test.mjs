// The pure parts of the client side: the event-stream parser, routes and text formatting.

import assert from "node:assert/strict";
import { test } from "node:test";

import { detailText, errorWords, SseParser } from "../../../server/sematic_k8s_server/static/api.js";
import { fmtDuration, summaryText } from "../../../server/sematic_k8s_server/static/format.js";
import { parseRoute, resHref, runHref } from "../../../server/sematic_k8s_server/static/routes.js";

test("events split anywhere across chunks come out whole, once", () => {
  const stream = 'data: {"id":"a"}\n\n: keep-alive\n\ndata: {"id":"b"}\n\n';
  for (let cut = 0; cut <= stream.length; cut++) {
    const p = new SseParser();
    assert.deepEqual([...p.feed(stream.slice(0, cut)), ...p.feed(stream.slice(cut))], ['{"id":"a"}', '{"id":"b"}'], `cut at ${cut}`);
  }
});

test("CRLF and CR line ends, also a CRLF split between chunks", () => {
  const p = new SseParser();
  assert.deepEqual(p.feed("data: one\r"), []);
  assert.deepEqual(p.feed("\n\r\ndata: two\r\rdata: three\n"), ["one", "two"]);
  assert.deepEqual(p.feed("\n"), ["three"]);
});

test("multi-line data is joined with newlines; events without data and other fields are skipped", () => {
  const p = new SseParser();
  assert.deepEqual(p.feed("event: x\nid: 3\ndata: a\ndata:b\n\nretry: 10\n\n"), ["a\nb"]);
});

test("routes: links parse back to what they name; an id that cannot be one is a bad route at once", () => {
  for (const id of ["abc123", "0f".repeat(32)]) {
    assert.deepEqual(parseRoute(runHref(id)), { name: "run", id });
    assert.deepEqual(parseRoute(resHref(id)), { name: "resolution", id });
  }
  for (const id of ["a/b c", "ü%20", "ABC", "f".repeat(65), "<script>"]) {
    assert.deepEqual(parseRoute(runHref(id)), { name: "bad", what: "run", id });
    assert.deepEqual(parseRoute(resHref(id)), { name: "bad", what: "resolution", id });
  }
  assert.deepEqual(parseRoute(""), { name: "list" });
  assert.deepEqual(parseRoute("#/"), { name: "list" });
  assert.deepEqual(parseRoute("#/runs/%E0%A4"), { name: "bad", what: "run", id: "%E0%A4" }); // malformed escape
  assert.deepEqual(parseRoute("#/nothing/here"), { name: "unknown", path: "nothing/here" });
});

test("validation errors read as one line", () => {
  assert.equal(detailText("no run"), "no run");
  assert.equal(detailText([{ loc: ["query", "since"], msg: "Input should be a valid datetime" },
    { loc: ["body", "add", 0], msg: "bad tag" }]), "since: Input should be a valid datetime; add.0: bad tag");
});

test("an error answer that is not JSON reads as one plain line, tags and scripts left out", () => {
  const page = "<html><head><title>502 Bad Gateway</title><style>body{color:red}</style>"
    + "<script>alert(1)</script></head><body><center><h1>Bad <b>Gateway</b></h1></center><hr>nginx</body></html>";
  assert.equal(errorWords(502, "Bad Gateway", page),
    "the server (or a proxy before it) answered 502 Bad Gateway: 502 Bad Gateway Bad Gateway nginx");
  assert.equal(errorWords(504, "", ""), "the server (or a proxy before it) answered 504 Gateway Timeout");
  assert.equal(errorWords(500, "Internal Server Error", "Internal Server Error"),
    "the server (or a proxy before it) answered 500 Internal Server Error");
  const long = errorWords(503, "Service Unavailable", `<p>${"down ".repeat(100)}</p><unclosed`);
  assert.ok(long.length < 200 && long.endsWith("…") && !long.includes("<"), long);
  assert.equal(errorWords(409, "Conflict", '{"detail": "already resolved"}'), "already resolved");
});

test("durations and value summaries read as people write them", () => {
  assert.equal(fmtDuration(12.4), "12 ms");
  assert.equal(fmtDuration(3400), "3.4 s");
  assert.equal(fmtDuration(125000), "2m 05s");
  assert.equal(fmtDuration(3720000), "1h 02m");
  assert.equal(fmtDuration(null), "—");
  assert.equal(summaryText({ repr: "Foo(1)" }, "pickle"), "Foo(1)");
  assert.equal(summaryText({ repr: "x" }, "json"), '{"repr":"x"}');
  assert.equal(summaryText([1, 2], "json"), "[1,2]");
});
