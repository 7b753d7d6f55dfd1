// The read-mostly views: sessions and agents, usage (tokens and cost per agent and per day,
// with a small inline SVG chart) and channels (status, probe, pairing approvals, and a
// form that sends a message through an account with `send`). Each loads when shown and
// after a `seq` gap.

import { $, ago, fillTable, h, num, say, uid, when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

const usd = (n) => "$" + Number(n || 0).toFixed(4);

export class Panels {
  constructor(conn, chat) {
    this.conn = conn;
    this.chat = chat;
    $("probe").addEventListener("click", () => this.channels(true));
    // One idempotency key per message: clicking Send again on the same text (a double
    // click, a retry after a timeout) is answered as a duplicate, not sent twice.
    this.sendKey = null;
    $("send-form").addEventListener("input", () => { this.sendKey = null; });
    $("send-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
  }

  /** Loads the view with this name ("sessions", "usage", "channels"). */
  load(view) {
    const run = { sessions: () => this.sessions(), usage: () => this.usage(),
      channels: () => this.channels(false) }[view];
    return run ? run() : Promise.resolve();
  }

  async sessions() {
    try {
      const agents = (await this.conn.request("agents.list", {})).agents || [];
      fillTable($("agents-table"), agents.map((a) => h("tr", {},
        h("td", {}, a.id), h("td", {}, a.provider + (a.provider === "echo" ? " (echo: repeats messages)" : "")),
        h("td", {}, a.model + (a.realModel ? "" : " (not a real model)")))), null);
      const list = (await this.conn.request("sessions.list", { limit: 200 })).sessions || [];
      fillTable($("sessions-table"), list.map((s) => h("tr", {},
        h("td", {}, h("code", {}, s.key)), h("td", {}, s.agentId), h("td", {}, num(s.messages)),
        h("td", {}, ago(s.updatedAt)),
        h("td", {},
          h("button", { type: "button", class: "quiet", onclick: () => this.openSession(s) }, "Open"),
          h("button", { type: "button", class: "danger", "aria-label": "Reset " + s.key,
            onclick: () => this.reset(s.key) }, "Reset")))), $("sessions-empty"));
    } catch (err) {
      say($("sessions-empty"), "Could not load sessions: " + err.message);
    }
  }

  async openSession(s) {
    document.dispatchEvent(new CustomEvent("troupe:tab", { detail: "chat" }));
    await this.chat.pickAgent(s.agentId, s.key);
    $("agent-select").value = s.agentId;
  }

  async reset(key) {
    if (!window.confirm("Reset session " + key + "? Its transcript is cleared.")) return;
    try {
      await this.conn.request("sessions.reset", { sessionKey: key });
    } catch (err) {
      say($("sessions-empty"), "Reset failed: " + err.message);
    }
    this.sessions();
  }

  async usage() {
    try {
      const res = await this.conn.request("usage.status", { days: 30 });
      const u = res.usage || {};
      const t = u.total || {};
      $("usage-total").textContent = num(t.runs) + " runs, " + num(t.inputTokens) + " input and "
        + num(t.outputTokens) + " output tokens, " + usd(t.costUsd) + " since " + when(res.sinceMs) + ".";
      const row = (r) => h("tr", {}, h("td", {}, r.key), h("td", {}, num(r.runs)), h("td", {}, num(r.inputTokens)),
        h("td", {}, num(r.outputTokens)), h("td", {}, usd(r.costUsd)));
      const most = Math.max(1, ...(u.byAgent || []).map((r) => r.inputTokens + r.outputTokens));
      const agentRow = (r) => {
        const tr = row(r);
        // A CSS bar of the agent's share of tokens (width set through the CSSOM, which the
        // page's CSP allows; no inline style attribute).
        const fill = h("span", { class: "share-fill" });
        fill.style.width = (100 * (r.inputTokens + r.outputTokens)) / most + "%";
        tr.append(h("td", { "aria-hidden": "true" }, h("span", { class: "share" }, fill)));
        return tr;
      };
      fillTable($("usage-agents"), (u.byAgent || []).map(agentRow), null);
      fillTable($("usage-days"), (u.byDay || []).map(row), $("usage-empty"));
      $("usage-chart").replaceChildren(this.chart(u.byDay || []));
    } catch (err) {
      say($("usage-empty"), "Could not load usage: " + err.message);
    }
  }

  chart(days) {
    const width = 600;
    const height = 160;
    if (!days.length) return h("p", { class: "empty" }, "No data to chart yet.");
    const sorted = [...days].sort((a, b) => (a.key < b.key ? -1 : 1)).slice(-30);
    const max = Math.max(1, ...sorted.map((d) => d.inputTokens + d.outputTokens));
    const bar = Math.min(48, width / sorted.length);
    const bars = sorted.flatMap((d, i) => {
      const hin = (d.inputTokens / max) * (height - 20);
      const hout = (d.outputTokens / max) * (height - 20);
      const x = i * bar + 2;
      const w = Math.max(2, bar - 4);
      const label = d.key + ": " + num(d.inputTokens) + " input, " + num(d.outputTokens) + " output tokens, " + usd(d.costUsd);
      return [svg("g", {}, svg("title", {}, label),
        svg("rect", { x, y: height - 20 - hin - hout, width: w, height: Math.max(hout, 0), class: "bar-out" }),
        svg("rect", { x, y: height - 20 - hin, width: w, height: Math.max(hin, 0.5), class: "bar-in" }))];
    });
    const first = svg("text", { x: 2, y: height - 4, class: "axis" }, sorted[0].key);
    const last = svg("text", { x: width - 2, y: height - 4, class: "axis", "text-anchor": "end" }, sorted[sorted.length - 1].key);
    return svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "Tokens per day, " + sorted.length + " days, at most " + num(max) + " tokens in a day" },
    ...bars, first, last);
  }

  async channels(probe) {
    say($("channels-error"), "");
    try {
      const status = await this.conn.request("channels.status", { probe });
      fillTable($("channels-table"), (status.channels || []).map((c) => h("tr", { "data-state": c.state },
        h("td", {}, c.channel + ":" + c.account), h("td", { class: "state-" + c.state }, c.state + (c.conflict ? " (conflict)" : "")),
        h("td", {}, c.bot ? (c.bot.username || c.bot.name || JSON.stringify(c.bot)) : "-"),
        h("td", {}, c.restarts), h("td", {}, c.lastError || "-"),
        h("td", {}, c.probe ? (c.probe.ok ? "ok" : "failed: " + (c.probe.error || JSON.stringify(c.probe))) : "-"))),
      $("channels-empty"));
      const accounts = (status.channels || []).map((c) => c.channel + ":" + c.account);
      const pick = $("send-account");
      const chosen = pick.value;
      pick.replaceChildren(...accounts.map((a) => h("option", { value: a }, a)));
      if (accounts.includes(chosen)) pick.value = chosen;
      $("send-form").hidden = accounts.length === 0;
      const pairing = (await this.conn.request("pairing.list", {})).pending || [];
      fillTable($("pairing-table"), pairing.map((p) => h("tr", {},
        h("td", {}, p.channel + ":" + p.account), h("td", {}, (p.name || "") + " (" + p.senderId + ")"),
        h("td", {}, h("code", {}, p.code)), h("td", {}, ago(p.expiresAt)),
        h("td", {}, h("button", { type: "button", "aria-label": "Approve " + p.code,
          onclick: () => this.approve(p.code) }, "Approve")))), $("pairing-empty"));
    } catch (err) {
      say($("channels-error"), "Could not load channels: " + err.message);
    }
  }

  async approve(code) {
    try {
      await this.conn.request("pairing.approve", { code });
    } catch (err) {
      say($("channels-error"), "Approval failed: " + err.message);
    }
    this.channels(false);
  }

  async send() {
    const [channel, account] = $("send-account").value.split(/:(.*)/s);
    const to = $("send-to").value.trim();
    const message = $("send-message").value;
    say($("send-error"), "");
    say($("send-status"), "");
    if (!to || !message.trim()) {
      say($("send-error"), "Give the chat or channel id and a message.");
      return;
    }
    if (!this.sendKey) this.sendKey = uid();
    $("send-submit").disabled = true;
    try {
      const res = await this.conn.request("send", { channel, account, to, message, idempotencyKey: this.sendKey });
      const where = res.channel + ":" + res.account + " to " + res.to;
      if (res.duplicate) {
        say($("send-status"), "Already sent to " + where + " (same message, not sent again): " + res.state + ".");
      } else if (res.state === "sent") {
        say($("send-status"), "Sent through " + where + " (message " + (res.messageIds || []).join(", ") + ").");
      } else {
        say($("send-status"), "Owed through " + where + " (" + res.state + "): the account cannot take it now; it goes out when it is back.");
      }
      if (!res.duplicate) $("send-message").value = "";
    } catch (err) {
      say($("send-error"), "Not sent: " + err.message);
    } finally {
      $("send-submit").disabled = false;
    }
  }
}
