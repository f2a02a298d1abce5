/* A resolution's tags and note: shown in the list, edited on its page (POST /resolutions/ID/labels). */

import { showBanner } from "./actions.js";
import { setLabels } from "./api.js";
import { fill, h } from "./dom.js";

/** Tag chips and the note, read only (the list). */
export function labelsLine(res) {
  const tags = res.tags || [];
  if (!tags.length && !res.note) return null;
  return h("span", { class: "labels" },
    tags.map((t) => h("span", { class: "chip", testid: "tag-chip", data: { tag: t } }, t)),
    res.note ? h("span", { class: "note muted", testid: "note-text", title: res.note }, res.note.length > 80 ? `${res.note.slice(0, 80)}…` : res.note) : null);
}

/** The tags and note of `res`, editable; `changed(res)` gets the resolution as the server returns it. */
export function labelsEditor(res, changed) {
  const el = h("div", { class: "labels-editor", testid: "labels-editor" });
  const save = async (body) => {
    try {
      changed(await setLabels(res.id, body));
    } catch (e) {
      showBanner(`Cannot change the labels of ${res.id.slice(0, 8)}: ${e.message}`);
    }
  };
  const input = h("input", {
    type: "text", class: "tag-input", placeholder: "add a tag", testid: "tag-input", maxlength: "64",
    onkeydown: (e) => { if (e.key === "Enter" && input.value.trim()) save({ add: [input.value.trim()] }); },
  });
  const noteView = () => fill(noteBox,
    h("span", { class: res.note ? "note" : "note muted", testid: "resolution-note" }, res.note || "no note"),
    h("button", { type: "button", class: "btn tiny", testid: "note-edit", onclick: noteEdit }, "edit note"));
  const noteEdit = () => {
    const area = h("textarea", { testid: "note-input", rows: "3", maxlength: "10000" }, res.note || "");
    fill(noteBox, area, h("button", { type: "button", class: "btn tiny", testid: "note-save", onclick: () => save({ note: area.value }) }, "save"),
      h("button", { type: "button", class: "btn tiny", onclick: noteView }, "cancel"));
    area.focus();
  };
  const noteBox = h("div", { class: "note-box" });
  noteView();
  return fill(el,
    h("div", { class: "tags" }, (res.tags || []).map((t) => h("span", { class: "chip", testid: "tag-chip", data: { tag: t } }, t,
      h("button", { type: "button", class: "chip-x", title: `remove ${t}`, testid: "tag-remove", onclick: () => save({ remove: [t] }) }, "×"))),
    input, h("button", { type: "button", class: "btn tiny", testid: "tag-add", onclick: () => input.value.trim() && save({ add: [input.value.trim()] }) }, "add")),
    noteBox);
}
