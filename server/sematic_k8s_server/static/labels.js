/* A resolution's tags and note: shown in the list, edited on its page (POST /resolutions/ID/labels). */

import { showBanner } from "./actions.js";
import { getResolution, readOnly, setLabels } from "./api.js";
import { fill, fillInPlace, h } from "./dom.js";

/** Tag chips and the note, read only (the list). */
export function labelsLine(res) {
  const tags = res.tags || [];
  if (!tags.length && !res.note) return null;
  return h("span", { class: "labels" },
    tags.map((t) => h("span", { class: "chip", testid: "tag-chip", data: { tag: t } }, t)),
    res.note ? h("span", { class: "note muted", testid: "note-text", title: res.note }, res.note.length > 80 ? `${res.note.slice(0, 80)}…` : res.note) : null);
}

/** The tags and note of `res`, editable; `changed(res)` gets the resolution as the server returns it. Its page
 * keeps it while showing that resolution and gives it each fresher record (`el.update(res)`): what is being typed
 * in it (a tag, the note) stays as it is. With a read-only key its inputs are disabled, their titles saying why; so
 * they are when `refused` says why the key may not label this resolution (another key's: --actions-by owner). */
export function labelsEditor(res, changed, refused = "") {
  const el = h("div", { class: "labels-editor", testid: "labels-editor" });
  const why = readOnly() || refused;
  const ro = why ? { disabled: true, title: why } : {}; // a read-only key, another key's resolution: nothing to change
  // while the note is edited: the note it began from and the labels' version it is made to (null: not edited)
  let editedFrom = null;
  const failed = (e) => showBanner(`Cannot change the labels of ${res.id.slice(0, 8)}: ${e.message}`);
  // a change saved is drawn here at once (its note shown, the editor closed), from the newer of the server's answer
  // and the record the page last gave (its own event's, drawn before this answer came, or a later change's): the
  // page redraws the editor only when the resolution it shows changed, which it may already have drawn
  const shown = (saved) => {
    el.update(saved.labels_version >= res.labels_version ? saved : res);
    changed(saved);
  };
  // a tag change is made to the labels shown (labels_version): when they changed meanwhile it is refused (409),
  // and the page redraws them as they are, the tag typed kept in its box
  const save = async (body) => {
    try {
      const saved = await setLabels(res.id, { ...body, labels_version: res.labels_version });
      input.value = "";
      shown(saved);
    } catch (e) {
      if (e.status !== 409) return failed(e);
      showBanner(`Cannot change the tags of ${res.id.slice(0, 8)}: ${e.message} (the page now shows them as they are)`);
      changed(null);
    }
  };
  // saved as an edit of the note it began from: a note replaced meanwhile is not overwritten unseen (409)
  const saveNote = async (area) => {
    try {
      const saved = await setLabels(res.id, { note: area.value, labels_version: editedFrom.version });
      editedFrom = null;
      shown(saved);
    } catch (e) {
      if (e.status !== 409) return failed(e);
      const now = await getResolution(res.id).catch(() => res);
      editedFrom = { note: now.note || "", version: now.labels_version }; // a second save replaces that one
      showBanner(`${e.message} (your text is kept in the box: save it again to replace that note)`);
    }
  };
  const input = h("input", {
    type: "text", class: "tag-input", placeholder: "add a tag", testid: "tag-input", maxlength: "64", ...ro,
    onkeydown: (e) => { if (e.key === "Enter" && input.value.trim()) save({ add: [input.value.trim()] }); },
  });
  const add = h("button", { type: "button", class: "btn tiny", testid: "tag-add", ...ro, onclick: () => input.value.trim() && save({ add: [input.value.trim()] }) }, "add");
  const tags = h("div", { class: "tags" });
  let tagsShown = null; // the tags drawn, as JSON
  const noteBox = h("div", { class: "note-box" });
  const noteView = () => {
    editedFrom = null;
    fill(noteBox,
      h("span", { class: res.note ? "note" : "note muted", testid: "resolution-note" }, res.note || "no note"),
      h("button", { type: "button", class: "btn tiny", testid: "note-edit", ...ro, onclick: noteEdit }, "edit note"));
  };
  const noteEdit = () => {
    editedFrom = { note: res.note || "", version: res.labels_version };
    const area = h("textarea", { testid: "note-input", rows: "3", maxlength: "10000" }, res.note || "");
    fill(noteBox, area, h("button", { type: "button", class: "btn tiny", testid: "note-save", onclick: () => saveNote(area) }, "save"),
      h("button", { type: "button", class: "btn tiny", onclick: noteView }, "cancel"));
    area.focus();
  };
  el.update = (fresh) => {
    // only the tags changed: the edit is still made to the note it began from, now at this version
    if (editedFrom !== null && (fresh.note || "") === editedFrom.note) editedFrom.version = fresh.labels_version;
    res = fresh;
    const shown = JSON.stringify(res.tags || []);
    if (shown !== tagsShown) { // drawn again only when they changed: a chip being clicked stays (see fillInPlace)
      tagsShown = shown;
      fillInPlace(tags, (res.tags || []).map((t) => h("span", { class: "chip", testid: "tag-chip", data: { tag: t } }, t,
        h("button", { type: "button", class: "chip-x", title: `remove ${t}`, testid: "tag-remove", ...ro, onclick: () => save({ remove: [t] }) }, "×"))),
      input, add);
    }
    if (editedFrom === null) noteView();
    return el;
  };
  el.resolutionId = res.id;
  return fill(el, tags, noteBox).update(res);
}

/** The labels editor `shown` given the record `res` of a page redrawn (an event came), or a new one for another
 * resolution. */
export function labelsFor(shown, res, changed, refused = "") {
  return shown?.resolutionId === res.id ? shown.update(res) : labelsEditor(res, changed, refused);
}
