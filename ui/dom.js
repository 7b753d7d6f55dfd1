// Small DOM helpers shared by the views: element building (text only, never HTML strings),
// formatting of times and numbers, and showing a message in a hidden paragraph.

/** Builds an element: h("td", {class: "x"}, "text", child...). Attributes set as given. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.className = v;
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Shorthand for document.getElementById. */
export const $ = (id) => document.getElementById(id);

/** Shows `text` in the element (or hides it when text is empty). */
export function say(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}

/** A time (ms since the epoch) as local date and time, or "-". */
export function when(ms) {
  if (!ms) return "-";
  const d = new Date(ms);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

/** How long ago (or ahead) `ms` is, in words. */
export function ago(ms) {
  if (!ms) return "-";
  const s = Math.round((Date.now() - ms) / 1000);
  const abs = Math.abs(s);
  const text = abs < 60 ? abs + " s" : abs < 3600 ? Math.round(abs / 60) + " min" : Math.round(abs / 3600) + " h";
  return s >= 0 ? text + " ago" : "in " + text;
}

/** A number with thousands separators. */
export const num = (n) => Number(n || 0).toLocaleString();

/** A fresh random id for idempotency keys. */
export function uid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

/** Replaces a table body's rows; shows `empty` when there are none. */
export function fillTable(table, rows, empty) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
  if (empty) empty.hidden = rows.length > 0;
  table.hidden = rows.length === 0;
}
