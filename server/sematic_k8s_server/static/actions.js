/* The Actions drop-downs, the rerun and cancel requests they make, and the banner that reports how those
 * went. */

import { cancelResolution, rerunResolution } from "./api.js";
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

/** An "Actions ▾" button and its menu. items: [{label, testid, disabled, title, run: async () => {}}] */
export function actionsMenu(testid, items) {
  const open = openMenu === testid;
  const menu = h("div", { class: "menu", role: "menu", hidden: !open, testid: `${testid}-menu` },
    items.map((it) => h("button", {
      type: "button", role: "menuitem", testid: it.testid, disabled: !!it.disabled, title: it.title,
      onclick: async (e) => {
        e.stopPropagation();
        closeMenus();
        await it.run();
      },
    }, it.label)));
  const button = h("button", {
    type: "button", class: "btn", testid, "aria-haspopup": "menu", "aria-expanded": String(open),
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
  return h("div", { class: "dropdown" }, button, menu);
}

// -- what the menu items do ----------------------------------------------------------------------------

/** Ask for a rerun (body: {rerun_from, mode}) and go to the new resolution. */
export async function rerun(resolutionId, body) {
  try {
    const r = await rerunResolution(resolutionId, body);
    showBanner(`Rerun accepted: new resolution ${short(r.resolution_id)}`, "info");
    location.hash = resHref(r.resolution_id);
  } catch (e) {
    showBanner(`Rerun of ${short(resolutionId)} failed: ${e.message}`);
  }
}

/** Ask for a resolution to be canceled, then refresh the view showing it. */
export async function cancel(resolutionId, view) {
  try {
    await cancelResolution(resolutionId);
    showBanner(`Cancel requested for ${short(resolutionId)}`, "info");
    view.refresh();
  } catch (e) {
    showBanner(`Cancel of ${short(resolutionId)} failed: ${e.message}`);
  }
}
