// The connection to this gateway's WebSocket, on the page's own origin only (never a URL
// or token from the query string or fragment). Speaks the gateway protocol:
// `connect.challenge` event -> `connect` request with auth -> `hello-ok`; requests by id;
// events with a per-connection `seq`, whose gaps are reported so views can refresh.
// Reconnects with exponential backoff, except after a refused credential.

const PROTOCOL = { min: 3, max: 4 };
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
const REQUEST_TIMEOUT_MS = 60000;

export class GatewayConnection extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.secret = null;
    this.state = "idle";
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.lastSeq = null;
    this.hello = null;
    this.timer = null;
  }

  /** Starts connecting with this token or password (and keeps reconnecting). */
  start(secret) {
    this.stop();
    this.secret = secret;
    this.attempt = 0;
    this.open();
  }

  /** Closes and stops reconnecting. */
  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.secret = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "closed by the page");
    }
    this.failAll("the connection was closed");
    this.setState("idle");
  }

  setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  open() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + window.location.host + "/ws");
    this.ws = ws;
    this.lastSeq = null;
    this.setState("connecting", { attempt: this.attempt });
    let refused = null;
    ws.onmessage = (msg) => {
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.type === "event") {
        this.onEvent(ws, frame);
      } else if (frame.type === "res") {
        if (frame.id === "connect") {
          refused = this.onHello(frame);
        } else {
          this.onResponse(frame);
        }
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll("the connection closed");
      if (refused && !refused.retryAfterMs) {
        this.setState("refused", { message: refused.message, code: refused.code });
        return;
      }
      const wait = refused && refused.retryAfterMs
        ? refused.retryAfterMs
        : Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt * (0.8 + Math.random() * 0.4));
      this.attempt += 1;
      const why = refused ? refused.message : ev.reason || "the gateway is not reachable";
      this.setState("down", { message: why, retryInMs: Math.round(wait), attempt: this.attempt });
      this.timer = setTimeout(() => { if (this.secret !== null) this.open(); }, wait);
    };
  }

  onEvent(ws, frame) {
    if (typeof frame.seq === "number") {
      const gap = this.lastSeq !== null && frame.seq > this.lastSeq + 1;
      this.lastSeq = frame.seq;
      if (gap && this.state === "connected") {
        this.dispatchEvent(new CustomEvent("gap", { detail: { seq: frame.seq } }));
      }
    }
    if (frame.event === "connect.challenge") {
      ws.send(JSON.stringify({
        type: "req",
        id: "connect",
        method: "connect",
        params: {
          minProtocol: PROTOCOL.min,
          maxProtocol: PROTOCOL.max,
          client: { id: "troupe-control-ui", version: "1", platform: "web", mode: "ui" },
          role: "operator",
          scopes: ["operator.read", "operator.write", "operator.admin"],
          auth: { token: this.secret, password: this.secret },
        },
      }));
      return;
    }
    if (frame.event === "shutdown") {
      this.setState("down", { message: "the gateway is shutting down" });
    }
    this.dispatchEvent(new CustomEvent("event", { detail: frame }));
  }

  onHello(frame) {
    if (frame.ok) {
      this.attempt = 0;
      this.hello = frame.payload;
      window.troupeConnectedAt = performance.now();
      this.setState("connected", { hello: frame.payload });
      return null;
    }
    const error = frame.error || {};
    const code = (error.details && error.details.code) || error.code || "ERROR";
    let message = error.message || "the gateway refused the connection";
    if (code === "AUTH_FAILED") {
      message = "Wrong token or password: the gateway refused it. Check ~/.troupe/token and paste it again.";
    } else if (code === "RATE_LIMITED") {
      message = "Too many wrong tokens from this address: " + message;
    }
    return { code, message, retryAfterMs: error.retryAfterMs || 0 };
  }

  onResponse(frame) {
    const waiting = this.pending.get(frame.id);
    if (!waiting) return;
    // `agent` answers twice on one id; this page only uses single-answer methods.
    this.pending.delete(frame.id);
    clearTimeout(waiting.timer);
    if (frame.ok) {
      waiting.resolve(frame.payload);
    } else {
      waiting.reject(new RequestError(frame.error || {}));
    }
  }

  failAll(why) {
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new RequestError({ code: "UNAVAILABLE", message: why }));
    }
    this.pending.clear();
  }

  /** Sends a request; resolves with its payload, rejects with a RequestError. */
  request(method, params) {
    if (!this.ws || this.state !== "connected") {
      return Promise.reject(new RequestError({ code: "UNAVAILABLE", message: "not connected to the gateway" }));
    }
    const id = "ui-" + this.nextId++;
    const frame = { type: "req", id, method };
    if (params !== undefined) frame.params = params;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestError({ code: "TIMEOUT", message: method + " got no answer in time" }));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify(frame));
    });
  }
}

/** A protocol error answer: `code`, `detail` (details.code) and `message`. */
export class RequestError extends Error {
  constructor(error) {
    super(error.message || "request failed");
    this.code = error.code || "ERROR";
    this.detail = (error.details && error.details.code) || null;
  }
}
