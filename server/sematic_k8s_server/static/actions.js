/* The Actions drop-downs, the rerun and cancel requests they make, and the banner that reports how those
 * went. */

import { cancelResolution, readOnly, rerunResolution } from "./api.js";
import { $, h } from "./dom.js";
import { short } from "./format.js";
import { resHref } from "./routes.js";

// -- the banner ------------------------------------------------------------------------------------

let bannerTimer = null;

/** Show a message under the top bar; "info" messages go away by themselves, errors stay until clicked. */
export function showBanner(message, kind = "error") {
  const b = $('[data-testid="error-banner"]');
  b.textContent = message;
  b.className = `banner ${kind}`;
  b.hidden = false;
  clearTimeout(bannerTimer);
  if (kind !== "error") bannerTimer = setTimeout(() => { b.hidden = true; }, 6000);
}

export function hideBanner() {
  $('[data-testid="error-banner"]').hidden = true;
}

// -- drop-downs --------------------------------------------------------------------------------------

let openMenu = null; // the testid of the open drop-down, kept across re-renders

export function closeMenus() {
  openMenu = null;
  document.querySelectorAll(".dropdown .menu").forEach((m) => { m.hidden = true; });
  document.querySelectorAll(".dropdown > button").forEach((b) => b.setAttribute("aria-expanded", "false"));
}

/** Close any dialog (on Escape, and when the route changes). */
export function closeDialogs() {
  document.querySelectorAll(".modal").forEach((m) => m.remove());
}

/** An "Actions ▾" button and its menu. items: [{label, testid, disabled, title, refused, run: async () => {}}]; with a
 * read-only key, every item is disabled, its title saying why (api.readOnly); so is an item whose `refused` says why
 * the key may not take it (another key's resolution, on a server started with --actions-by owner).
 * The element's `update(items)` sets the items' labels, titles and enabled state (the same items, in the same order)
 * in place: a live event's redraw keeps the elements, so a click begun on one as it comes is not lost (see
 * dom.fillInPlace). */
export function actionsMenu(testid, items) {
  let current = items;
  const entries = items.map((it, i) => h("button", {
    type: "button", role: "menuitem", testid: it.testid,
    onclick: async (e) => {
      e.stopPropagation();
      closeMenus();
      await current[i].run();
    },
  }));
  const menu = h("div", { class: "menu", role: "menu", testid: `${testid}-menu` }, entries);
  const button = h("button", {
    type: "button", class: "btn", testid, "aria-haspopup": "menu",
    onclick: (e) => {
      e.stopPropagation();
      const wasOpen = openMenu === testid;
      closeMenus();
      if (!wasOpen) {
        openMenu = testid;
        menu.hidden = false;
        button.setAttribute("aria-expanded", "true");
      }
    },
  }, "Actions ▾");
  const el = h("div", { class: "dropdown" }, button, menu);
  el.update = (fresh) => {
    current = fresh;
    fresh.forEach((it, i) => {
      const why = readOnly() || it.refused || "";
      const b = entries[i];
      b.disabled = !!it.disabled || !!why;
      if (why) b.title = why;
      else if (it.title) b.title = it.title;
      else b.removeAttribute("title");
      if (b.textContent !== it.label) b.textContent = it.label;
    });
    const open = openMenu === testid;
    menu.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    return el;
  };
  return el.update(items);
}

// -- what the menu items do ----------------------------------------------------------------------------

const startedHere = new Set(); // resolutions this page asked for: recorded by a process that is starting

/** True for a resolution this page started (its record may take a while to appear). */
export const startedByUs = (id) => startedHere.has(id);

/** The commands that re-run a local resolution on the user's machine (where its code and data are). */
export function localRerunCommands(resolution, body) {
  const target = body.rerun_from || resolution.id;
  const path = String(resolution.root_func_path || "module:pipeline");
  const [module, func] = path.includes(":") ? path.split(":", 2) : ["module", path];
  const mode = body.mode === "continue" ? ' mode="continue",' : "";
  return {
    cli: `sematic-k8s rerun ${target}${body.mode === "continue" ? " --mode continue" : ""}`,
    python: `import sematic_k8s as sk\nfrom ${module} import ${func.split(".")[0]}\n\n` +
      `${func}(...).resolve(sk.LocalResolver(rerun_from="${target}",${mode}))  # the same inputs as before`,
  };
}

/** For a local resolution: show how to re-run it on the user's machine (the server does not run its code). */
function showLocalRerun(resolution, body) {
  const { cli, python } = localRerunCommands(resolution, body);
  closeDialogs();
  const close = () => modal.remove();
  const modal = h("div", {
    class: "modal", testid: "local-rerun", role: "dialog",
    onclick: (e) => { e.stopPropagation(); if (e.target === modal) close(); },
  },
    h("div", { class: "modal-box" },
      h("h2", {}, "Re-run it on your machine"),
      h("p", {}, `Resolution ${short(resolution.id)} ran locally, with code and data on the machine that ran it. ` +
        "Run this there (with the same SEMATIC_K8S_SERVER, to see it here):"),
      h("pre", { class: "command", testid: "local-rerun-cli" }, cli),
      h("p", { class: "muted" }, "or from Python:"),
      h("pre", { class: "command", testid: "local-rerun-python" }, python),
      h("div", { class: "toolbar" }, h("span", { class: "spacer" }),
        h("button", { type: "button", class: "btn", testid: "local-rerun-close", onclick: close }, "Close"))));
  document.body.append(modal);
}

/** Ask for a rerun of `resolution` (body: {rerun_from, mode}) and go to the new resolution; for a local
 * resolution, show the commands that re-run it where it ran instead. */
export async function rerun(resolution, body) {
  if ((resolution.settings || {}).kind !== "cloud") {
    showLocalRerun(resolution, body);
    return;
  }
  const resolutionId = resolution.id;
  try {
    const r = await rerunResolution(resolutionId, body);
    startedHere.add(r.resolution_id);
    showBanner(`Rerun accepted: new resolution ${short(r.resolution_id)}`, "info");
    location.hash = resHref(r.resolution_id);
  } catch (e) {
    showBanner(`Rerun of ${short(resolutionId)} failed: ${e.message}`);
  }
}

/** Ask for a resolution to be canceled, then refresh the view showing it (whatever the answer). */
export async function cancel(resolutionId, view) {
  try {
    await cancelResolution(resolutionId);
    showBanner(`Cancel requested for ${short(resolutionId)}`, "info");
  } catch (e) {
    showBanner(`Cancel of ${short(resolutionId)} failed: ${e.message}`);
  }
  view.refresh(); // its state as it is now (a refused cancel: it ended meanwhile)
}
