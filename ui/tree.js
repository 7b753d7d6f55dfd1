// The supervision tree view: `supervisor.tree` read at once on every `supervisor` event (a
// child exited or started) and every few seconds while the view is open (mailboxes,
// uptime), each node with its
// state, restarts, last exit and mailbox. An admin can restart a child
// (`supervisor.restart`); with fault injection on, crash one (`supervisor.crash`). A node
// that exited recently is marked, and shows when it runs again.

import { $, ago, h, say } from "./dom.js";

const POLL_MS = 3000;
const RECENT_MS = 15000;
const PROBE_ID = "control-ui-fault-injection-probe";

export class TreeView {
  constructor(conn) {
    this.conn = conn;
    this.timer = null;
    this.visible = false;
    this.faultInjection = false;
    this.admin = false;
    this.requested = new Map(); // id -> "crash" | "restart" asked, until the tree shows it
    this.inFlight = false;
    this.again = false;
  }

  /** After connecting: learn what this client may do, then draw. */
  async refresh(hello) {
    const scopes = (hello && hello.auth && hello.auth.scopes) || [];
    this.admin = scopes.includes("operator.admin");
    this.faultInjection = false;
    if (this.admin) {
      // Asking to crash a child that does not exist is harmless: the answer says whether
      // fault injection is on (NOT_FOUND) or off (FAULT_INJECTION_DISABLED).
      try {
        await this.conn.request("supervisor.crash", { id: PROBE_ID });
      } catch (err) {
        this.faultInjection = err.detail !== "FAULT_INJECTION_DISABLED" && err.code !== "UNAVAILABLE";
      }
    }
    say($("fault-note"), !this.admin
      ? "This connection is not admin: restart and crash are not available."
      : this.faultInjection
        ? "Fault injection is ON: each child has a Crash button (supervisor.crash)."
        : "Fault injection is off (debug.fault_injection), so there is no Crash button; Restart asks the supervisor to restart a child.");
    await this.poll();
  }

  show(visible) {
    this.visible = visible;
    clearInterval(this.timer);
    this.timer = visible ? setInterval(() => this.poll(), POLL_MS) : null;
    if (visible) this.poll();
  }

  async poll() {
    if (this.conn.state !== "connected") return;
    if (this.inFlight) {
      // A change announced while a read is on its way: read again after it.
      this.again = true;
      return;
    }
    this.inFlight = true;
    try {
      const status = await this.conn.request("supervisor.tree", {});
      this.draw(status);
      say($("tree-error"), "");
    } catch (err) {
      say($("tree-error"), "Could not read the tree: " + err.message);
    } finally {
      this.inFlight = false;
    }
    if (this.again) {
      this.again = false;
      this.poll();
    }
  }

  draw(status) {
    const focused = document.activeElement && document.activeElement.dataset.action
      ? document.activeElement.dataset.action + " " + document.activeElement.dataset.node : null;
    $("tree").replaceChildren(this.node(status.tree, true));
    $("tree-summary").textContent = (status.ready ? "Ready." : "Not ready: a permanent child is not running.")
      + " Uptime " + Math.round((status.uptimeMs || 0) / 1000) + " s.";
    if (focused) {
      const [action, id] = focused.split(" ");
      const again = [...$("tree").querySelectorAll("button")].find((b) => b.dataset.action === action && b.dataset.node === id);
      if (again) again.focus();
    }
  }

  node(n, root) {
    const exit = n.lastExit;
    const recent = exit && exit.at && Date.now() - exit.at < RECENT_MS;
    if (this.requested.has(n.id) && (recent || n.state !== "running")) this.requested.delete(n.id);
    const asked = this.requested.get(n.id);
    const classes = ["node", "state-" + n.state];
    if (recent) classes.push("recent-exit");
    if (recent && n.state === "running") classes.push("recovered");
    const facts = [
      h("span", { class: "state", "data-field": "state" }, n.state),
      h("span", {}, "restarts " + n.restarts),
      h("span", {}, "mailbox " + n.mailbox),
    ];
    if (n.childCount !== undefined && n.childCount !== null) facts.push(h("span", {}, n.childCount + " children"));
    if (exit) {
      facts.push(h("span", { class: "exit", "data-field": "last-exit" },
        "last exit: " + exit.reason + (exit.message ? " (" + exit.message + ")" : "") + ", " + ago(exit.at)));
    }
    if (n.nextAttemptAt) facts.push(h("span", {}, "next attempt " + ago(n.nextAttemptAt)));
    if (recent && n.state === "running") facts.push(h("span", { class: "badge ok" }, "recovered"));
    if (recent && n.state !== "running") facts.push(h("span", { class: "badge bad" }, "down"));
    if (asked) facts.push(h("span", { class: "badge" }, asked + " requested"));
    const actions = [];
    if (!root && this.admin && n.kind !== "ws") {
      actions.push(h("button", { type: "button", class: "quiet", "data-action": "restart", "data-node": n.id,
        "aria-label": "Restart " + n.id, onclick: () => this.act("supervisor.restart", n.id, "restart") }, "Restart"));
      if (this.faultInjection) {
        actions.push(h("button", { type: "button", class: "danger", "data-action": "crash", "data-node": n.id,
          "aria-label": "Crash " + n.id, onclick: () => this.act("supervisor.crash", n.id, "crash") }, "Crash"));
      }
    }
    const li = h("li", { class: classes.join(" "), "data-node": n.id, "data-state": n.state,
      "data-restarts": n.restarts, "data-last-exit": exit ? exit.reason : "" },
    h("div", { class: "row" },
      h("strong", { class: "id" }, n.id), h("span", { class: "kind" }, n.kind),
      h("span", { class: "facts" }, facts), h("span", { class: "actions" }, actions)));
    const kids = (n.children || []).filter((c) => c.kind !== "ws" || (n.children || []).length < 20);
    if (kids.length) li.append(h("ul", {}, kids.map((c) => this.node(c, false))));
    return li;
  }

  async act(method, id, what) {
    this.requested.set(id, what);
    try {
      await this.conn.request(method, { id });
    } catch (err) {
      this.requested.delete(id);
      say($("tree-error"), what + " " + id + " failed: " + err.message);
    }
    this.poll();
  }
}
