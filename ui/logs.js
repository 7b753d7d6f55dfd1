// The log viewer: recent events of the gateway's log file from `GET /api/logs` (with the
// page's token as the bearer credential), filtered by level and target on the gateway,
// and a follow mode that asks every 2 s for what came since the newest event shown. The
// list keeps at most MAX_LINES rows (the oldest are dropped).

import { $, h, say } from "./dom.js";

const MAX_LINES = 500;
const FOLLOW_MS = 2000;

export class LogsView {
  constructor(conn) {
    this.conn = conn;
    this.visible = false;
    this.timer = null;
    this.lastTs = null;
    this.seenAtLast = new Set();
    this.gen = 0;
    $("logs-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.reload();
    });
    $("logs-level").addEventListener("change", () => this.reload());
    $("logs-follow").addEventListener("change", () => this.schedule());
  }

  /** Shows or hides the view; following polls only while it is shown. */
  show(on) {
    this.visible = on;
    if (on) {
      this.reload();
    } else {
      clearTimeout(this.timer);
    }
  }

  /** Clears the list and reads the newest events with the current filters. */
  async reload() {
    this.lastTs = null;
    this.seenAtLast = new Set();
    $("logs-list").replaceChildren();
    await this.fetch();
  }

  schedule() {
    clearTimeout(this.timer);
    if (this.visible && $("logs-follow").checked) {
      this.timer = setTimeout(() => this.fetch(), FOLLOW_MS);
    }
  }

  async fetch() {
    if (!this.conn.secret) return;
    clearTimeout(this.timer);
    // The newest call wins: an answer to an older one (other filters) is dropped.
    const gen = ++this.gen;
    const q = [];
    const add = (k, v) => q.push(k + "=" + encodeURIComponent(v));
    const level = $("logs-level").value;
    const target = $("logs-target").value.trim();
    if (level) add("level", level);
    if (target) add("target", target);
    add("limit", String(this.lastTs === null ? 200 : MAX_LINES));
    if (this.lastTs !== null) add("since", String(this.lastTs));
    try {
      const res = await window.fetch("/api/logs?" + q.join("&"), {
        headers: { Authorization: "Bearer " + this.conn.secret },
        cache: "no-store",
      });
      const body = await res.json().catch(() => ({}));
      if (gen !== this.gen) return;
      if (!res.ok) {
        const err = body.error || {};
        say($("logs-error"), "Could not read the log: " + (err.message || res.status + " " + res.statusText));
      } else {
        say($("logs-error"), "");
        this.append(body.events || []);
        $("logs-file").textContent = body.file || "";
      }
    } catch (err) {
      if (gen === this.gen) say($("logs-error"), "Could not read the log: " + err.message);
    } finally {
      if (gen === this.gen) this.schedule();
    }
  }

  append(events) {
    const list = $("logs-list");
    const box = $("logs-box");
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
    for (const e of events) {
      // `since` is inclusive: events at the newest time shown come again.
      const key = e.ts + " " + e.level + " " + e.target + " " + e.message;
      if (e.tsMs === this.lastTs && this.seenAtLast.has(key)) continue;
      if (e.tsMs !== this.lastTs) {
        this.lastTs = e.tsMs;
        this.seenAtLast = new Set();
      }
      this.seenAtLast.add(key);
      const level = String(e.level).toLowerCase();
      list.append(h("li", { "data-level": level },
        h("time", { datetime: e.ts }, e.ts.replace("T", " ").replace(/\.\d+Z$/, "Z")), " ",
        h("span", { class: "level level-" + level }, e.level), " ",
        h("span", { class: "target" }, e.target), " ",
        h("span", { class: "log-msg" }, e.message)));
    }
    while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
    $("logs-empty").hidden = list.childElementCount > 0;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
}
