// values.js: artifacts' tagged JSON read as plain values, and which values are tables of records.

import assert from "node:assert/strict";
import { test } from "node:test";

import { plain, recordsTable } from "../../../server/sematic_k8s_server/static/values.js";

test("tagged JSON reads as plain values: tuples and sets as lists, dataclasses as their fields", () => {
  const tree = {
    t: { __sk__: "tuple", v: [1, { __sk__: "set", v: [2, 3] }] },
    d: { __sk__: "dict", v: [[1, "one"], [[1, 2], "pair"]] },
    c: { __sk__: "dataclass", cls: "m:C", v: { lr: 0.1, when: { __sk__: "datetime", v: "2026-01-01T00:00:00" } } },
    b: { __sk__: "bytes", v: "iVBORw0KGgo=" },
  };
  assert.deepEqual(plain(tree), {
    t: [1, [2, 3]], d: { 1: "one", "[1,2]": "pair" }, c: { lr: 0.1, when: "2026-01-01T00:00:00" },
    b: { __sk__: "bytes", v: "iVBORw0KGgo=" },
  });
});

test("a list of records is a table with the union of their keys; anything else is not", () => {
  assert.deepEqual(recordsTable([{ a: 1 }, { a: 2, b: "x" }]), { columns: ["a", "b"], rows: [[1, undefined], [2, "x"]] });
  assert.equal(recordsTable([]), null);
  assert.equal(recordsTable([1, 2]), null);
  assert.equal(recordsTable([{ a: 1 }, [1]]), null);
  assert.equal(recordsTable({ a: 1 }), null);
});
