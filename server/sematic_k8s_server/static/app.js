/* sematic-k8s dashboard: one page, hash routes (routes.js), plain DOM, ES modules served as they are.
 *
 *   app.js         this: the router, the API key form, and wiring the rest together
 *   api.js         requests to /api/v1, errors, artifacts, the live event stream
 *   live.js        views that refresh on events; the event connection (polling while it is down)
 *   list.js        the pipelines index: resolutions grouped by root func, search and filters
 *   labels.js      a resolution's tags and note
 *   resolution.js  a resolution's page: header (progress, labels, Actions), graph or timeline, Run panel
 *   grouping.js    what is shown of a resolution's overview (pure): groups, folded compositions, edges
 *   graph.js       the graph drawn; where boxes go comes from layout.js (pure, dagre from vendor/)
 *   boxes.js       the graph's boxes: a run's or a group's content, kept and updated in place on redraws
 *   timeline.js    the Gantt view; its critical path from critical.js (pure)
 *   panel.js       the Run panel and its tabs; values.js draws artifacts, logs.js follows logs
 *   actions.js     Actions drop-downs, rerun (or how to re-run a local resolution) and cancel, the banner
 *   dom.js, format.js, routes.js, model.js   building elements, formatting text, route links, run states
 */

import { closeDialogs, closeMenus, hideBanner } from "./actions.js";
import { apiKey, forgetApiKey, getRun, loadRole, onUnauthorized, saveApiKey, unreachable } from "./api.js";
import { $, fill, problem, tickDurations } from "./dom.js";
import { ListView } from "./list.js";
import { Answers, Live, Staleness } from "./live.js";
import { ResolutionView } from "./resolution.js";
import { parseRoute } from "./routes.js";

let view = null; // the view shown
const listView = new ListView(); // kept across visits: its filter and page stay
const live = new Live($('[data-testid="live-status"]'), () => view);

function show(next) {
  if (view && view !== next) view.leave();
  view = next;
  if (view) view.active = true;
}

const lookups = new Answers(); // the resolution of a run a route names: a newer route aborts the lookup
const lookupAgain = new Staleness(null, null, () => route()); // a lookup failed for an outage: tried again

/** Show what the location hash names; `force` rebuilds the view even when it already shows that. */
async function route(force = false) {
  lookups.drop();
  lookupAgain.stop();
  const r = parseRoute(location.hash);
  const main = $("#app");
  closeMenus();
  closeDialogs();
  if (r.name === "bad") {
    show(null);
    fill(main, problem(`No ${r.what} “${r.id.slice(0, 80)}”`, `That cannot be a ${r.what} id: ids are 1 to 64 lowercase hex ` +
      "characters (0-9, a-f), as shown in the lists and in `sematic-k8s resolutions list`.", "bad-id"));
    return;
  }
  if (r.name === "unknown") {
    show(null);
    fill(main, problem("Nothing here", `The dashboard has no page at #/${r.path.slice(0, 80)}.`, "unknown-page"));
    return;
  }
  if (r.name === "list") {
    show(listView);
    await listView.mount(main);
    return;
  }
  if (r.name === "resolution") {
    if (!force && view instanceof ResolutionView && view.id === r.id) {
      await view.select(null);
      return;
    }
    show(new ResolutionView(r.id));
    await view.mount(main, null);
    return;
  }
  // a run: show it inside its resolution
  let rootId = view instanceof ResolutionView && view.hasRun(r.id) ? view.id : null;
  if (!rootId) {
    let run;
    try {
      run = await lookups.take(r.id, (signal) => getRun(r.id, { signal }));
    } catch (e) {
      show(null);
      fill(main, e.status === 404
        ? problem(`No run ${r.id}`, "It may have been typed wrong, or be on another server.", "run-missing")
        : problem(`Cannot load run ${r.id}`, unreachable(e) ? Staleness.retrying(e.message) : e.message, "load-error"));
      if (unreachable(e)) lookupAgain.again(); // an outage: the run shown once it answers
      return;
    }
    if (run === undefined) return; // another route was taken meanwhile
    rootId = run.root_id;
  }
  if (!force && view instanceof ResolutionView && view.id === rootId) {
    await view.select(r.id);
    return;
  }
  show(new ResolutionView(rootId));
  await view.mount(main, r.id);
}

// -- the API key form --------------------------------------------------------------------------------

const keyForm = $('[data-testid="api-key-form"]');
const keyInput = $('[data-testid="api-key-input"]');

function showKeyForm(message) {
  $('[data-testid="api-key-message"]').textContent = message || "This server needs an API key.";
  if (keyForm.hidden) {
    keyForm.hidden = false;
    keyInput.focus();
  }
}

keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  saveApiKey(keyInput.value.trim());
  keyInput.value = "";
  keyForm.hidden = true;
  hideBanner();
  live.restart();
  loadRole().finally(() => route(true)); // a read-only key's actions drawn disabled
});
$('[data-testid="api-key-forget"]').addEventListener("click", () => {
  forgetApiKey();
  keyInput.value = "";
  showKeyForm(apiKey() ? "" : "No API key stored. Paste one, or leave it empty for a local-mode server.");
});
$('[data-testid="api-key-button"]').addEventListener("click", () => {
  if (keyForm.hidden) showKeyForm(apiKey() ? "An API key is stored; paste a new one to replace it." : "");
  else keyForm.hidden = true;
});
onUnauthorized(showKeyForm);

// -- start -----------------------------------------------------------------------------------------------

document.addEventListener("click", closeMenus);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    closeMenus();
    closeDialogs();
  }
});
$('[data-testid="error-banner"]').addEventListener("click", hideBanner);
window.addEventListener("hashchange", () => route());
setInterval(tickDurations, 1000);
live.status("connecting…", "connecting");
live.connect();
loadRole().finally(() => route()); // a read-only key's actions drawn disabled
