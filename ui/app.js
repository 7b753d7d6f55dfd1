// The control UI's entry: the token form (the token kept in this origin's localStorage,
// with a Forget button; never read from the URL), the connection state, the tabs, and the
// refresh of every view after connecting and after a `seq` gap.

import { GatewayConnection } from "./conn.js";
import { $, say } from "./dom.js";
import { ChatView } from "./chat.js";
import { TreeView } from "./tree.js";
import { Panels } from "./panels.js";
import { CronView } from "./cron.js";
import { ConfigView } from "./config.js";
import { LogsView } from "./logs.js";

const TOKEN_STORE = "troupe.ui.token";
const VIEWS = ["chat", "tree", "sessions", "usage", "channels", "cron", "config", "logs"];

const conn = new GatewayConnection();
const chat = new ChatView(conn);
const tree = new TreeView(conn);
const panels = new Panels(conn, chat);
const cron = new CronView(conn);
const config = new ConfigView(conn);
const logs = new LogsView(conn);
let current = "chat";
let everConnected = false;

function showTab(name) {
  current = name;
  for (const v of VIEWS) {
    const on = v === name;
    $("tab-" + v).setAttribute("aria-selected", String(on));
    $("tab-" + v).tabIndex = on ? 0 : -1;
    $("view-" + v).hidden = !on;
  }
  tree.show(name === "tree");
  logs.show(name === "logs" && conn.state === "connected");
  if (conn.state === "connected") load(name);
}

/** Loads a view's data (the tree and the logs load themselves while shown). */
function load(name) {
  if (name === "cron") return cron.load();
  if (name === "config") return config.load(false);
  return panels.load(name);
}

function setupTabs() {
  for (const v of VIEWS) {
    $("tab-" + v).addEventListener("click", () => showTab(v));
  }
  $("tabs").addEventListener("keydown", (e) => {
    const i = VIEWS.indexOf(current);
    const next = e.key === "ArrowRight" ? (i + 1) % VIEWS.length
      : e.key === "ArrowLeft" ? (i + VIEWS.length - 1) % VIEWS.length
        : e.key === "Home" ? 0 : e.key === "End" ? VIEWS.length - 1 : -1;
    if (next < 0) return;
    e.preventDefault();
    showTab(VIEWS[next]);
    $("tab-" + VIEWS[next]).focus();
  });
  $("tabs").setAttribute("role", "tablist");
  document.addEventListener("troupe:tab", (e) => showTab(e.detail));
}

function pill(state, text) {
  const el = $("conn-status");
  el.dataset.state = state;
  el.textContent = text;
}

function showLogin(error) {
  $("login").hidden = false;
  $("tabs").hidden = true;
  $("main").hidden = true;
  $("forget").hidden = !localStorage.getItem(TOKEN_STORE);
  say($("login-error"), error || "");
  if (error) $("secret").focus();
}

function showApp() {
  $("login").hidden = true;
  $("tabs").hidden = false;
  $("main").hidden = false;
  $("forget").hidden = false;
  say($("login-error"), "");
}

async function refreshAll(hello) {
  await chat.refresh(hello);
  await tree.refresh(hello);
  await load(current);
  logs.show(current === "logs");
}

conn.addEventListener("state", (e) => {
  const d = e.detail;
  if (d.state === "connecting") {
    pill("connecting", d.attempt ? "Reconnecting (attempt " + (d.attempt + 1) + ")" : "Connecting");
  } else if (d.state === "connected") {
    everConnected = true;
    pill("connected", "Connected to " + window.location.host + " (Troupe " + d.hello.server.version + ")");
    say($("banner"), "");
    showApp();
    refreshAll(d.hello);
  } else if (d.state === "refused") {
    pill("refused", "Not connected: credential refused");
    // A refused token is not tried again on reload (the gateway rate-limits wrong ones).
    localStorage.removeItem(TOKEN_STORE);
    showLogin(d.message);
  } else if (d.state === "down") {
    const secs = d.retryInMs ? Math.ceil(d.retryInMs / 1000) : 0;
    const text = "Gateway unreachable: " + d.message
      + (secs ? "; retry " + d.attempt + " in " + secs + " s" : "");
    pill("down", "Disconnected");
    if (everConnected) {
      say($("banner"), text);
    } else {
      showLogin(text);
    }
  } else {
    pill("idle", "Not connected");
  }
});

conn.addEventListener("gap", () => refreshAll(conn.hello));

conn.addEventListener("event", (e) => {
  const f = e.detail;
  if (f.event === "chat" || f.event === "agent") {
    chat.onEvent(f.event, f.payload);
  } else if (f.event === "supervisor") {
    tree.poll();
  } else if (f.event === "cron" && current === "cron") {
    cron.load();
  } else if (f.event === "config") {
    config.onChanged(f.payload || {});
  }
});

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const secret = $("secret").value.trim();
  if (!secret) return;
  localStorage.setItem(TOKEN_STORE, secret);
  $("secret").value = "";
  say($("login-error"), "");
  conn.start(secret);
});

$("forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_STORE);
  localStorage.removeItem("troupe.ui.session");
  everConnected = false;
  conn.stop();
  showLogin("The token was removed from this browser.");
});

setupTabs();
const saved = localStorage.getItem(TOKEN_STORE);
if (saved) {
  conn.start(saved);
} else {
  showLogin("");
  $("secret").focus();
}
