// The cron view: jobs (`cron.list`) with Edit, Enable/Disable (`cron.update`), Run now
// (`cron.run`), Remove (`cron.remove`, asked twice) and their run ledger (`cron.runs`);
// and the add/edit form (`cron.add` / `cron.update`), where the gateway's validation error
// is shown at the field it names. Jobs from the config file ([[cron.jobs]]) are changed
// there, so they get Run now and Ledger only.

import { $, fillTable, h, say, when } from "./dom.js";

/** Which form field a `cron.add` / `cron.update` error is about, by how it starts. */
const FIELD_OF = [
  [/^(job id|a job with id)/, "id"],
  [/^schedule:/, "schedule"],
  [/^tz:/, "tz"],
  [/^agentId:/, "agent"],
  [/^message/, "message"],
];
const FIELDS = ["id", "name", "schedule", "tz", "agent", "message", "session"];

export class CronView {
  constructor(conn) {
    this.conn = conn;
    this.ledgerJob = null;
    this.editing = null;
    this.armed = null;
    $("cron-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    $("cron-cancel").addEventListener("click", () => this.edit(null));
  }

  async load() {
    say($("cron-error"), "");
    try {
      const agents = (await this.conn.request("agents.list", {})).agents || [];
      const pick = $("cron-agent");
      const chosen = pick.value;
      pick.replaceChildren(...agents.map((a) => h("option", { value: a.id }, a.id)));
      if (chosen) pick.value = chosen;
      const jobs = (await this.conn.request("cron.list", {})).jobs || [];
      this.jobs = jobs;
      fillTable($("cron-table"), jobs.map((j) => this.row(j)), $("cron-empty"));
      if (this.ledgerJob) await this.runs(this.ledgerJob);
    } catch (err) {
      say($("cron-error"), "Could not load cron jobs: " + err.message);
    }
  }

  row(j) {
    const own = j.source !== "config";
    const act = (label, action, fn, cls) => h("button", { type: "button", class: cls || "quiet",
      "data-action": action, "data-job": j.id, "aria-label": label + " " + j.id, onclick: fn }, label);
    return h("tr", { "data-job": j.id, "data-enabled": String(j.enabled) },
      h("td", {}, j.name || j.id, j.name && j.name !== j.id ? h("small", {}, " (" + j.id + ")") : null),
      h("td", {}, h("code", {}, j.schedule + (j.tz ? " " + j.tz : ""))),
      h("td", {}, j.agentId), h("td", {}, j.nextFireAt ? when(j.nextFireAt) : "-"),
      h("td", {}, j.enabled ? "yes" : "no", own ? null : h("small", {}, " (config file)")),
      h("td", { class: "actions" },
        act("Ledger", "ledger", () => this.runs(j.id)),
        act("Run now", "run", () => this.runNow(j.id), ""),
        own ? act("Edit", "edit", () => this.edit(j)) : null,
        own ? act(j.enabled ? "Disable" : "Enable", "toggle", () => this.toggle(j)) : null,
        own ? act(this.armed === j.id ? "Confirm remove" : "Remove", "remove", () => this.remove(j.id), "danger") : null));
  }

  /** Fills the form with a job to edit, or empties it for a new one (`null`). */
  edit(job) {
    this.editing = job ? job.id : null;
    this.clearErrors();
    $("cron-id").value = job ? job.id : "";
    $("cron-id").readOnly = !!job;
    $("cron-name").value = job && job.name !== job.id ? job.name : "";
    $("cron-schedule").value = job ? job.schedule : "";
    $("cron-tz").value = job && job.tz ? job.tz : "";
    if (job) $("cron-agent").value = job.agentId;
    $("cron-message").value = job ? job.message : "";
    $("cron-session").value = job && job.sessionKey && job.sessionKey !== "cron:" + job.id ? job.sessionKey : "";
    $("cron-enabled").checked = job ? job.enabled : true;
    $("cron-form-title").textContent = job ? "Edit job " + job.id : "Add a job";
    $("cron-submit").textContent = job ? "Save changes" : "Add job";
    $("cron-cancel").hidden = !job;
    if (job) $("cron-schedule").focus();
  }

  clearErrors() {
    for (const f of FIELDS) {
      say($("cron-err-" + f), "");
      $("cron-" + f).removeAttribute("aria-invalid");
    }
    say($("cron-form-error"), "");
    say($("cron-form-status"), "");
  }

  /** Shows an error at the field it names, else under the form. */
  fieldError(err) {
    const found = FIELD_OF.find(([re]) => re.test(err.message));
    if (found) {
      const field = found[1];
      say($("cron-err-" + field), err.message);
      $("cron-" + field).setAttribute("aria-invalid", "true");
      $("cron-" + field).focus();
    } else {
      say($("cron-form-error"), err.message);
    }
  }

  async save() {
    this.clearErrors();
    const v = (id) => $(id).value.trim();
    const job = {
      id: v("cron-id"), name: v("cron-name") || v("cron-id"), schedule: v("cron-schedule"),
      agentId: $("cron-agent").value, message: $("cron-message").value,
      enabled: $("cron-enabled").checked,
    };
    try {
      if (this.editing) {
        const patch = { ...job, tz: v("cron-tz") || null, sessionKey: v("cron-session") || null };
        delete patch.id;
        await this.conn.request("cron.update", { id: this.editing, patch });
        say($("cron-form-status"), "Saved job " + this.editing + ".");
      } else {
        if (v("cron-tz")) job.tz = v("cron-tz");
        if (v("cron-session")) job.sessionKey = v("cron-session");
        await this.conn.request("cron.add", { job });
        say($("cron-form-status"), "Added job " + job.id + ".");
      }
      const status = $("cron-form-status").textContent;
      this.edit(null);
      say($("cron-form-status"), status);
    } catch (err) {
      this.fieldError(err);
    }
    await this.load();
  }

  async toggle(j) {
    try {
      await this.conn.request("cron.update", { id: j.id, patch: { enabled: !j.enabled } });
    } catch (err) {
      say($("cron-error"), (j.enabled ? "Disable" : "Enable") + " failed: " + err.message);
    }
    this.load();
  }

  async remove(id) {
    if (this.armed !== id) {
      // First click: ask again on the same button.
      this.armed = id;
      fillTable($("cron-table"), (this.jobs || []).map((j) => this.row(j)), $("cron-empty"));
      return;
    }
    this.armed = null;
    try {
      await this.conn.request("cron.remove", { id });
      if (this.ledgerJob === id) this.ledgerJob = null;
      if (this.editing === id) this.edit(null);
    } catch (err) {
      say($("cron-error"), "Remove failed: " + err.message);
    }
    this.load();
  }

  async runs(id) {
    this.ledgerJob = id;
    $("runs-title").textContent = "Run ledger of " + id;
    try {
      const res = await this.conn.request("cron.runs", { id, limit: 50 });
      const empty = $("runs-empty");
      empty.textContent = "No runs of " + id + " yet.";
      fillTable($("runs-table"), (res.runs || []).map((r) => h("tr", {},
        h("td", {}, when(r.scheduledAt)), h("td", {}, when(r.firedAt)),
        h("td", {}, r.outcome + (r.reason ? ": " + r.reason : "")), h("td", {}, r.manual ? "yes" : "no"),
        h("td", {}, r.durationMs !== undefined && r.durationMs !== null ? r.durationMs + " ms" : "-"))), empty);
    } catch (err) {
      say($("cron-error"), "Could not load the ledger: " + err.message);
    }
  }

  async runNow(id) {
    try {
      await this.conn.request("cron.run", { id });
      say($("cron-error"), "");
    } catch (err) {
      say($("cron-error"), "Run now failed: " + err.message);
    }
    this.runs(id);
  }
}
