// The config editor: the config file as TOML from `config.get` (secrets shown as
// "<redacted>", which `config.patch` turns back into the stored secret), saved whole with
// `config.patch {raw, baseHash}`. A file changed on disk since it was read is refused
// (STALE_BASE_HASH) and the operator's text stays; an invalid file is refused with the
// gateway's reasons and the file stays untouched; a save says what was reloaded.

import { $, say } from "./dom.js";

export class ConfigView {
  constructor(conn) {
    this.conn = conn;
    this.baseHash = null;
    this.loaded = null;
    this.saving = false;
    $("config-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.save();
    });
    $("config-reload").addEventListener("click", () => this.load(true));
    $("config-text").addEventListener("input", () => this.mark());
  }

  /** Whether the editor holds text the file does not. */
  dirty() {
    return this.loaded !== null && $("config-text").value !== this.loaded;
  }

  mark() {
    $("config-dirty").hidden = !this.dirty();
  }

  /** Reads the file; unsaved edits are kept unless `force`. */
  async load(force) {
    if (!force && this.dirty()) return;
    say($("config-error"), "");
    try {
      const res = await this.conn.request("config.get", {});
      this.baseHash = res.hash;
      $("config-file").textContent = res.file;
      if (res.parseError) {
        // No text comes back then (its secrets could not be hidden): saving replaces it all.
        say($("config-error"), "The config file cannot be read: " + res.parseError
          + ". Fix it on disk and \"Reload from disk\", or write the whole file here.");
      }
      const text = typeof res.raw === "string" ? res.raw : res.rawRedacted || "";
      this.loaded = text;
      $("config-text").value = text;
      const keys = res.redacted || [];
      say($("config-note"), typeof res.rawRedacted === "string"
        ? "Secrets" + (keys.length ? " (" + keys.join(", ") + ")" : " in comments")
          + " are shown as \"<redacted>\": leave them so to keep the stored value, or replace them."
        : "");
      say($("config-changed"), "");
      if (force) say($("config-status"), "Read from disk.");
      this.mark();
    } catch (err) {
      say($("config-error"), "Could not read the config: " + err.message);
    }
  }

  async save() {
    const raw = $("config-text").value;
    say($("config-error"), "");
    say($("config-status"), "Saving...");
    $("config-save").disabled = true;
    this.saving = true;
    try {
      const res = await this.conn.request("config.patch", { raw, baseHash: this.baseHash });
      this.baseHash = res.hash;
      this.loaded = raw;
      const applied = (res.applied || []).length ? "reloaded " + res.applied.join(", ") : "nothing to reload";
      const pending = (res.pendingRestart || []).length
        ? "; needs a gateway restart: " + res.pendingRestart.join(", ") : "";
      say($("config-status"), "Saved: " + applied + pending + ".");
      say($("config-changed"), "");
      this.mark();
    } catch (err) {
      say($("config-status"), "");
      if (err.detail === "STALE_BASE_HASH") {
        say($("config-error"), "The config file changed on disk since it was read, so nothing was saved. "
          + "Your text is still here: copy your edits, then \"Reload from disk\" and apply them again.");
      } else if (err.detail === "INVALID_CONFIG") {
        say($("config-error"), "Not saved, the file is unchanged. " + err.message);
      } else {
        say($("config-error"), "Not saved: " + err.message);
      }
    } finally {
      this.saving = false;
      $("config-save").disabled = false;
    }
  }

  /** A `config` event: a reload was applied (from this page, the file, or elsewhere). */
  onChanged(payload) {
    // This page's own save announces itself too (its answer brings the new hash).
    if (this.loaded === null || this.saving || payload.hash === this.baseHash) return;
    if (this.dirty()) {
      say($("config-changed"), "The config file changed (" + (payload.source || "on disk")
        + ") while you were editing; saving will be refused until you reload it.");
    } else {
      this.load(false);
    }
  }
}
