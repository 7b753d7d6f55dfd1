// The chat view: pick an agent and a session (or start one), send with an idempotency key,
// watch the reply stream in from `chat` / `agent` events (deltas, tool calls and results),
// abort, page back through history, and see waiting messages marked queued.

import { $, h, say, uid, when } from "./dom.js";

const PAGE = 50;
const SESSION_KEY_STORE = "troupe.ui.session";

export class ChatView {
  constructor(conn) {
    this.conn = conn;
    this.agents = [];
    this.agentId = null;
    this.sessionKey = null;
    this.nextBefore = null;
    this.runs = new Map(); // runId -> {user, reply, state}
    $("agent-select").addEventListener("change", (e) => this.pickAgent(e.target.value));
    $("session-select").addEventListener("change", (e) => this.pickSession(e.target.value));
    $("new-session").addEventListener("click", () => this.newSession());
    $("older").addEventListener("click", () => this.loadOlder());
    $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    $("chat-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.send(); }
    });
    $("abort").addEventListener("click", () => this.abort());
  }

  /** Reloads agents, sessions and the current session's history (after connect or a gap). */
  async refresh(hello) {
    try {
      const list = await this.conn.request("agents.list", {});
      this.agents = list.agents || [];
      const saved = localStorage.getItem(SESSION_KEY_STORE);
      const defaults = (hello && hello.snapshot && hello.snapshot.sessionDefaults) || {};
      const savedAgent = saved && saved.startsWith("agent:") ? saved.split(":")[1] : null;
      const agentId = [this.agentId, savedAgent, defaults.agentId, list.defaultId]
        .find((a) => a && this.agents.some((x) => x.id === a)) || (this.agents[0] && this.agents[0].id);
      $("agent-select").replaceChildren(...this.agents.map((a) =>
        h("option", { value: a.id, selected: a.id === agentId }, a.id + " (" + a.provider + ")")));
      if (!agentId) {
        say($("chat-error"), "No agent is configured on this gateway: add one under [[agents]] in the config.");
        return;
      }
      const key = this.sessionKey || (saved && saved.startsWith("agent:" + agentId + ":") ? saved : null);
      await this.pickAgent(agentId, key);
    } catch (err) {
      say($("chat-error"), "Could not load agents: " + err.message);
    }
  }

  async pickAgent(agentId, key) {
    this.agentId = agentId;
    const agent = this.agents.find((a) => a.id === agentId) || {};
    const note = agent.provider === "echo"
      ? "Agent " + agentId + " uses the echo provider: it repeats your message. Configure a real provider for it in the gateway config."
      : "";
    say($("provider-note"), note);
    let sessions = [];
    try {
      sessions = ((await this.conn.request("sessions.list", { limit: 200 })).sessions || [])
        .filter((s) => s.agentId === agentId);
    } catch (err) {
      say($("chat-error"), "Could not list sessions: " + err.message);
    }
    const main = "agent:" + agentId + ":main";
    const keys = [main, ...sessions.map((s) => s.key).filter((k) => k !== main)];
    const current = key && key.startsWith("agent:" + agentId + ":") ? key : main;
    if (!keys.includes(current)) keys.push(current);
    this.fillSessions(keys, current);
    await this.pickSession(current);
  }

  fillSessions(keys, current) {
    $("session-select").replaceChildren(...keys.map((k) =>
      h("option", { value: k, selected: k === current }, k.split(":").slice(2).join(":") || k)));
  }

  newSession() {
    if (!this.agentId) return;
    const stamp = new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14);
    const key = "agent:" + this.agentId + ":ui-" + stamp;
    const keys = [...$("session-select").options].map((o) => o.value);
    this.fillSessions([...keys, key], key);
    this.pickSession(key);
    $("chat-input").focus();
  }

  async pickSession(key) {
    this.sessionKey = key;
    localStorage.setItem(SESSION_KEY_STORE, key);
    this.runs.clear();
    $("messages").replaceChildren();
    say($("chat-error"), "");
    this.nextBefore = null;
    await this.loadPage(null);
    this.updateAbort();
  }

  async loadPage(before) {
    const params = { sessionKey: this.sessionKey, limit: PAGE };
    if (before) params.before = before;
    try {
      const page = await this.conn.request("chat.history", params);
      if (page.sessionKey !== this.sessionKey && !before) return;
      const items = (page.messages || []).map((m) =>
        m.role === "tool" ? this.toolItem(m) : this.messageItem(m.role, m.text, m.ts, m.runId));
      if (before) {
        $("messages").prepend(...items);
      } else {
        $("messages").replaceChildren(...items);
        this.scrollDown();
      }
      this.nextBefore = page.hasMore ? page.nextBefore : null;
      $("older").hidden = !this.nextBefore;
      $("chat-empty").hidden = $("messages").children.length > 0;
    } catch (err) {
      say($("chat-error"), "Could not load the history: " + err.message);
    }
  }

  loadOlder() {
    if (this.nextBefore) this.loadPage(this.nextBefore);
  }

  messageItem(role, text, ts, runId) {
    const body = h("div", { class: "text" }, text || "");
    const li = h("li", { class: "msg " + role, "data-role": role, "data-run": runId || "" },
      h("span", { class: "who" }, role === "user" ? "You" : role === "assistant" ? "Agent" : role),
      h("span", { class: "ts" }, ts ? when(ts) : ""),
      h("span", { class: "badge" }, ""),
      body);
    return li;
  }

  // A stored tool step, compact: one collapsed line (the tool and its arguments) that
  // opens on the result.
  toolItem(m) {
    const tool = m.tool || {};
    const text = m.text || "";
    const nl = text.indexOf("\n");
    const call = nl < 0 ? text : text.slice(0, nl);
    const result = (nl < 0 ? "" : text.slice(nl + 1)) +
      (m.truncated ? "\n… cut (" + m.bytes + " bytes in all)" : "");
    return h("li", { class: "msg step" + (tool.isError ? " failed" : ""), "data-role": "tool",
      "data-run": m.runId || "", "data-call": tool.callId || "" },
      h("details", {},
        h("summary", {}, h("span", { class: "tool-name" }, (tool.isError ? "tool error " : "tool ") + (tool.name || "")),
          " ", h("code", {}, call)),
        h("div", { class: "text" }, result)));
  }

  scrollDown() {
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
  }

  async send() {
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || !this.sessionKey) return;
    input.value = "";
    say($("chat-error"), "");
    $("chat-empty").hidden = true;
    const user = this.messageItem("user", text, Date.now(), "");
    this.mark(user, "sending");
    $("messages").append(user);
    this.scrollDown();
    try {
      const res = await this.conn.request("chat.send", {
        sessionKey: this.sessionKey, message: text, idempotencyKey: uid(),
      });
      user.dataset.run = res.runId;
      const run = this.run(res.runId);
      run.user = user;
      const queued = res.runStatus === "queued" || (res.queued && res.queued.position > 0);
      if (run.state === "new") run.state = queued ? "queued" : "accepted";
      this.mark(user, run.state === "queued" ? "queued" : "");
      this.updateAbort();
    } catch (err) {
      this.mark(user, "failed");
      input.value = input.value || text;
      say($("chat-error"), this.explain(err));
    }
  }

  explain(err) {
    if (err.detail === "LANE_FULL" || err.detail === "QUEUE_FULL") return "The gateway is busy: " + err.message;
    return "Not sent: " + err.message;
  }

  run(runId) {
    if (!this.runs.has(runId)) this.runs.set(runId, { user: null, reply: null, state: "new" });
    return this.runs.get(runId);
  }

  mark(li, badge) {
    li.dataset.state = badge || "";
    li.querySelector(".badge").textContent = badge ? badge : "";
  }

  reply(runId) {
    const run = this.run(runId);
    if (!run.reply) {
      run.reply = this.messageItem("assistant", "", Date.now(), runId);
      this.mark(run.reply, "streaming");
      $("messages").append(run.reply);
    }
    return run.reply;
  }

  /** A `chat` or `agent` event from the gateway. */
  onEvent(name, p) {
    if (!p || p.sessionKey !== this.sessionKey) return;
    const run = this.run(p.runId);
    if (name === "agent" && p.stream === "lifecycle" && p.data && p.data.phase === "start") {
      run.state = "running";
      if (run.user) this.mark(run.user, "");
    } else if (name === "agent" && p.stream === "tool") {
      this.tool(p.runId, p.data || {});
    } else if (name === "chat" && p.state === "delta") {
      if (window.troupeFirstDeltaAt === undefined) window.troupeFirstDeltaAt = performance.now();
      run.state = "running";
      if (run.user) this.mark(run.user, "");
      const text = this.reply(p.runId).querySelector(".text");
      text.append(p.delta || "");
    } else if (name === "chat" && (p.state === "final" || p.state === "aborted" || p.state === "error")) {
      run.state = p.state;
      if (run.user) this.mark(run.user, "");
      const li = this.reply(p.runId);
      if (p.state === "error") {
        li.classList.add("failed");
        li.querySelector(".text").textContent = p.errorMessage || "the run failed";
        this.mark(li, "error");
      } else {
        const text = p.message && p.message.text;
        if (text) li.querySelector(".text").textContent = text;
        this.mark(li, p.state === "aborted" ? "aborted" : "");
      }
    } else {
      return;
    }
    this.scrollDown();
    this.updateAbort();
  }

  tool(runId, data) {
    const li = this.reply(runId);
    if (data.phase === "call") {
      const args = typeof data.arguments === "string" ? data.arguments : JSON.stringify(data.arguments || {});
      li.append(h("div", { class: "tool", "data-call": data.callId || "" },
        h("span", { class: "tool-name" }, "tool " + (data.name || "?")), " ", h("code", {}, args)));
    } else if (data.phase === "result") {
      const result = typeof data.result === "string" ? data.result : JSON.stringify(data.result);
      li.append(h("div", { class: "tool result" + (data.isError ? " failed" : "") },
        h("span", { class: "tool-name" }, (data.isError ? "tool error " : "tool result ") + (data.name || "")),
        " ", h("code", {}, String(result || "").slice(0, 2000))));
    }
  }

  updateAbort() {
    const live = [...this.runs.values()].some((r) => ["accepted", "queued", "running"].includes(r.state));
    $("abort").disabled = !live;
  }

  async abort() {
    try {
      const res = await this.conn.request("chat.abort", { sessionKey: this.sessionKey, clearQueued: true });
      if (!res.aborted && !res.cleared) say($("chat-error"), "Nothing was running in this session.");
      for (const r of this.runs.values()) {
        if (r.state === "queued" && r.user) { r.state = "aborted"; this.mark(r.user, "dropped"); }
      }
      this.updateAbort();
    } catch (err) {
      say($("chat-error"), "Abort failed: " + err.message);
    }
  }
}
