// The dashboard's modules as a whole: each links (its imports exist), and the pure ones stay pure.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import { STATIC } from "./graphs.mjs";

const MODULES = readdirSync(STATIC).filter((f) => f.endsWith(".js"));
// no DOM, no fetching, no storage: runnable and testable anywhere
const PURE = new Set(["layout.js", "model.js", "format.js", "routes.js", "grouping.js", "critical.js", "started.js",
  "vendor/dagre.esm.js"]);
const VENDORED = /^\.\/vendor\/[a-z.]+\.js$/; // libraries from the npm registry, as published (see vendor/README.md)
const BROWSER = /\b(document|window|location|localStorage|fetch|getComputedStyle|HTMLElement|Node|setTimeout|setInterval)\b/;

const source = (f) => readFileSync(join(STATIC, f), "utf8");
const code = (f) => source(f).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "").replace(/`[^`]*`|"[^"\n]*"/g, '""');
const imports = (f) => [...source(f).matchAll(/^import\s[^;]*?from\s+"([^"]+)";/gm)].map((m) => m[1]);

test("the page's modules are all there", () => {
  for (const f of ["app.js", "api.js", "list.js", "graph.js", "layout.js", "panel.js", "model.js", "timeline.js",
    "grouping.js", "critical.js", "values.js", "logs.js"]) {
    assert.ok(MODULES.includes(f), f);
  }
});

test("every module but the entry point links in Node: the files and names it imports exist", async () => {
  for (const f of MODULES.filter((m) => m !== "app.js")) { // app.js starts the page as it loads
    await import(pathToFileURL(join(STATIC, f)).href);
  }
});

test("every import is a sibling module or a vendored one, and each module is imported by some other (app.js is the root)", () => {
  const imported = new Set();
  for (const f of MODULES) {
    for (const spec of imports(f)) {
      if (VENDORED.test(spec)) {
        assert.ok(existsSync(join(STATIC, spec)), `${f} imports missing ${spec}`);
        continue;
      }
      assert.match(spec, /^\.\/[a-z]+\.js$/, `${f} imports ${spec}`);
      assert.ok(MODULES.includes(spec.slice(2)), `${f} imports missing ${spec}`);
      imported.add(spec.slice(2));
    }
  }
  assert.deepEqual(MODULES.filter((f) => !imported.has(f)), ["app.js"]);
});

test("the layout and the other pure modules import only pure modules and touch no browser API", () => {
  for (const f of [...PURE].filter((p) => !p.startsWith("vendor/"))) {
    for (const spec of imports(f)) assert.ok(PURE.has(spec.slice(2)), `${f} imports ${spec}, which is not pure`);
    const m = code(f).match(BROWSER);
    assert.equal(m, null, `${f} uses ${m && m[0]}`);
  }
});
