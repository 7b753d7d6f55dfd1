//! `ws:<connId>`: one actor per WebSocket connection, reading frames from the socket
//! ([`super::transport`]) and sending through actix-ws's session, living on the HTTP
//! worker that accepted it and adopted by the `clients` supervisor. Outbound frames go
//! through a byte-bounded outbox: a client that stops reading is closed (1008), never
//! allowed to grow the process.

mod chat;
mod frames;
mod handshake;
#[doc(hidden)]
pub mod methods;
mod queue_link;
#[doc(hidden)]
pub mod session_params;
#[doc(hidden)]
pub mod turn_params;

use std::collections::VecDeque;
use std::net::SocketAddr;

use actix::prelude::*;
use actix_web::web::Bytes;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use bytestring::ByteString;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::gateway::ws::protocol::{ErrorShape, EventFrame, RequestFrame, ResponseFrame, Scope};
use troupe_actors::messages::Shutdown;
use troupe_actors::supervisor::{
    AdoptChild, ChildHandle, ChildId, ChildLink, ExitGuard, Liveness, Roster, SupervisorActor,
};

/// How often a session proves its context still runs (the clients supervisor declares it
/// hung after the hang timeout, and never before three of these).
const WS_BEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a new session waits for the clients supervisor to adopt it before closing.
const ADOPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the connection is in its life.
enum Phase {
    /// Waiting for `connect`; the nonce was sent in `connect.challenge`.
    Handshake,
    /// Authenticated with these scopes.
    Connected { scope: Scope },
    /// Closing: nothing more is read.
    Closing,
}

enum Outbound {
    Text(ByteString),
    Pong(Bytes),
    Close(CloseReason),
}

/// One WebSocket connection.
pub struct WsSessionActor {
    conn_id: String,
    gateway: Gateway,
    session: Session,
    peer: Option<SocketAddr>,
    phase: Phase,
    nonce: String,
    seq: u64,
    outbox: VecDeque<Outbound>,
    outbox_bytes: usize,
    writing: bool,
    link: ChildLink,
    link_q: queue_link::QueueLink,
    owed: usize,
    /// Requests owed a run's final answer, by run id.
    awaiting: std::collections::HashMap<String, std::collections::HashSet<String>>,
    /// Listed in presence from its `connect` until it is dropped (however it ends).
    present: Option<Present>,
    _close_on_panic: CloseOnPanic,
    _guard: ExitGuard,
}

/// A connection listed in presence: removed (and every client told) when the session
/// actor is dropped, whether it closed, was killed, or panicked.
struct Present(String);

impl Drop for Present {
    fn drop(&mut self) {
        troupe_actors::presence::leave(&self.0);
    }
}

impl WsSessionActor {
    /// Starts the session actor on the current (HTTP worker) arbiter under `clients`.
    pub fn start(
        gateway: Gateway,
        clients: Addr<SupervisorActor>,
        session: Session,
        stream: crate::gateway::ws::transport::Inbound,
        peer: Option<SocketAddr>,
    ) -> Addr<Self> {
        let conn_id = uuid::Uuid::new_v4().to_string();
        let link = ChildLink {
            id: ChildId::new(format!("ws:{conn_id}")),
            generation: 1,
            supervisor: clients,
            liveness: Liveness::new(WS_BEAT_EVERY),
            roster: Roster::default(),
        };
        let adopt_link = link.clone();
        let closer = session.clone();
        let mut ctx = Context::new();
        ctx.add_stream(stream);
        let addr = ctx.address();
        let actor = WsSessionActor {
            conn_id,
            gateway,
            session,
            peer,
            phase: Phase::Handshake,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            seq: 0,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            writing: false,
            _guard: link.guard(),
            link,
            link_q: queue_link::QueueLink::default(),
            owed: 0,
            awaiting: Default::default(),
            present: None,
            _close_on_panic: CloseOnPanic(closer.clone()),
        };
        // Run the context as a task of our own, so a hung session can be aborted; adopt
        // it before that task first runs, so its exit report cannot precede its adoption.
        let task = actix_rt::spawn(ctx.into_future(actor));
        let worker = actix_rt::Arbiter::current();
        let handle = ChildHandle::of(addr.clone())
            .abortable(task.abort_handle())
            .on_kill(move || {
                let session = closer.clone();
                worker.spawn(async move {
                    let reason = CloseReason {
                        code: CloseCode::Error,
                        description: Some("session stopped by its supervisor".into()),
                    };
                    let _ = session.close(Some(reason)).await;
                });
            });
        let abort = task.abort_handle();
        let kill = handle.on_kill.clone();
        let me = addr.clone();
        let adopted = adopt_link.supervisor.send(AdoptChild {
            id: adopt_link.id.clone(),
            kind: "ws",
            generation: adopt_link.generation,
            handle,
            liveness: adopt_link.liveness.clone(),
        });
        // A session `clients` never takes in would live outside the tree: close it instead.
        actix_rt::spawn(async move {
            match tokio::time::timeout(ADOPT_TIMEOUT, adopted).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // This `clients` is gone (stopped or killed, to be restarted) before it
                    // read the adoption: the session ends as a restart ends its adopted
                    // siblings, told to reconnect (1012; 1001 if the gateway is stopping).
                    tracing::debug!(child = %adopt_link.id, "clients stopped before adopting this session; closing");
                    me.do_send(Shutdown);
                }
                Err(_) => {
                    // It hangs with the message in its mailbox and was not replaced.
                    tracing::warn!(child = %adopt_link.id, "not adopted by the clients supervisor; closing");
                    if let Some(kill) = kill {
                        kill();
                    }
                    abort.abort();
                }
            }
        });
        addr
    }

    fn send_json(&mut self, value: &impl serde::Serialize, ctx: &mut Context<Self>) {
        match serde_json::to_string(value) {
            Ok(text) => self.enqueue(Outbound::Text(text.into()), ctx),
            Err(err) => {
                tracing::error!(conn_id = %self.conn_id, error = %err, "frame did not serialize")
            }
        }
    }

    /// Sends a request's final answer (the connection owes one answer less).
    fn respond(&mut self, id: String, result: Result<Value, ErrorShape>, ctx: &mut Context<Self>) {
        if !id.is_empty() && matches!(self.phase, Phase::Connected { .. }) {
            self.owed = self.owed.saturating_sub(1);
        }
        let frame = match result {
            Ok(payload) => ResponseFrame::ok(id, payload),
            Err(error) => ResponseFrame::err(id, error),
        };
        self.send_json(&frame, ctx);
    }

    /// Sends a first answer that a final one will follow (`agent`'s `accepted`).
    fn respond_interim(&mut self, id: String, payload: Value, ctx: &mut Context<Self>) {
        self.send_json(&ResponseFrame::ok(id, payload), ctx);
    }

    /// Sends an event with the next per-connection sequence number.
    fn event(&mut self, event: &str, payload: &Value, ctx: &mut Context<Self>) {
        self.seq += 1;
        let frame = EventFrame {
            kind: "event",
            event,
            payload: Some(payload),
            seq: Some(self.seq),
            state_version: None,
        };
        self.send_json(&frame, ctx);
    }

    /// Sends an event whose payload is already JSON text (serialized once for every
    /// connection that gets it); the frame is the one [`Self::event`] makes.
    fn event_serialized(&mut self, event: &'static str, payload: &str, ctx: &mut Context<Self>) {
        self.seq += 1;
        let frame = frames::event_frame(event, payload, self.seq);
        self.enqueue(Outbound::Text(frame.into()), ctx);
    }

    fn enqueue(&mut self, item: Outbound, ctx: &mut Context<Self>) {
        let bytes = match &item {
            Outbound::Text(t) => t.len(),
            Outbound::Pong(b) => b.len(),
            Outbound::Close(_) => 0,
        };
        let limit = self.gateway.edge.max_buffered_bytes;
        if self.outbox_bytes + bytes > limit {
            tracing::warn!(conn_id = %self.conn_id, buffered = self.outbox_bytes, limit, "slow consumer; closing");
            let why = format!("slow consumer: more than {limit} bytes of output unsent");
            self.outbox.clear();
            self.outbox_bytes = 0;
            self.close_now(CloseCode::Policy, why, ctx);
            return;
        }
        self.outbox_bytes += bytes;
        self.outbox.push_back(item);
        if !self.writing {
            self.flush(ctx);
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(item) = self.outbox.pop_front() else {
            return;
        };
        self.writing = true;
        let mut session = self.session.clone();
        let (bytes, closing) = match &item {
            Outbound::Text(t) => (t.len(), false),
            Outbound::Pong(b) => (b.len(), false),
            Outbound::Close(_) => (0, true),
        };
        let write = async move {
            match item {
                Outbound::Text(text) => session.text(text).await,
                Outbound::Pong(bytes) => session.pong(&bytes).await,
                Outbound::Close(reason) => session.close(Some(reason)).await,
            }
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            act.writing = false;
            act.outbox_bytes = act.outbox_bytes.saturating_sub(bytes);
            if written.is_err() || closing {
                ctx.stop();
            } else {
                act.flush(ctx);
            }
        }));
    }

    /// Queues a close frame after what is already queued; the actor stops once it is out.
    fn close_after_flush(
        &mut self,
        code: CloseCode,
        why: impl Into<String>,
        ctx: &mut Context<Self>,
    ) {
        self.phase = Phase::Closing;
        let reason = CloseReason {
            code,
            description: Some(why.into()),
        };
        self.enqueue(Outbound::Close(reason), ctx);
    }

    /// Closes at once, not waiting for queued output (slow consumer, shutdown timeout).
    fn close_now(&mut self, code: CloseCode, why: String, ctx: &mut Context<Self>) {
        self.phase = Phase::Closing;
        let session = self.session.clone();
        let reason = CloseReason {
            code,
            description: Some(why),
        };
        let close = async move {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                session.close(Some(reason)),
            )
            .await;
        };
        ctx.spawn(close.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let frame: RequestFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(err) => {
                let error = ErrorShape::invalid(format!("frame is not a valid request: {err}"))
                    .with_detail("INVALID_FRAME");
                self.respond(String::new(), Err(error), ctx);
                if matches!(self.phase, Phase::Handshake) {
                    self.close_after_flush(
                        CloseCode::Policy,
                        "first frame must be a connect request",
                        ctx,
                    );
                }
                return;
            }
        };
        if frame.kind != "req" {
            let error = ErrorShape::invalid(format!(
                "frame type {:?} is not accepted; send \"req\"",
                frame.kind
            ));
            self.respond(frame.id, Err(error), ctx);
            if matches!(self.phase, Phase::Handshake) {
                self.close_after_flush(
                    CloseCode::Policy,
                    "first frame must be a connect request",
                    ctx,
                );
            }
            return;
        }
        match self.phase {
            Phase::Handshake => self.on_connect(frame, ctx),
            Phase::Connected { scope } => self.on_request(frame, scope, ctx),
            Phase::Closing => {}
        }
    }
}

impl Actor for WsSessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Run events arrive here in bursts (a fast stream); past this, events are missed
        // (told to the client as a `seq` gap), never queued without bound.
        ctx.set_mailbox_capacity(1024);
        self.link.liveness.attach(ctx);
        ctx.add_message_stream(troupe_actors::event_bus::subscribe());
        tracing::debug!(conn_id = %self.conn_id, peer = ?self.peer, "ws connected");
        let challenge = json!({ "nonce": self.nonce, "ts": troupe_actors::now_ms() });
        self.event("connect.challenge", &challenge, ctx);
        ctx.run_later(self.gateway.edge.handshake_timeout, |act, ctx| {
            if matches!(act.phase, Phase::Handshake) {
                let error = ErrorShape::invalid("no connect request before the handshake timeout")
                    .with_detail("HANDSHAKE_TIMEOUT");
                act.respond(String::new(), Err(error), ctx);
                act.close_after_flush(CloseCode::Policy, "handshake timeout", ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.unsubscribe_all();
        self.present = None;
        tracing::debug!(conn_id = %self.conn_id, "ws closed");
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for WsSessionActor {
    fn handle(&mut self, msg: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        match msg {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => {
                let error =
                    ErrorShape::invalid("binary frames are not accepted; send JSON text frames");
                self.respond(String::new(), Err(error), ctx);
            }
            Ok(AggregatedMessage::Ping(bytes)) => self.enqueue(Outbound::Pong(bytes), ctx),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => {
                self.close_after_flush(CloseCode::Normal, "bye", ctx)
            }
            Err(ProtocolError::Overflow) => {
                let limit = self.gateway.edge.max_payload;
                let error =
                    ErrorShape::invalid(format!("frame exceeds maxPayload ({limit} bytes)"))
                        .with_detail("PAYLOAD_TOO_LARGE");
                self.respond(String::new(), Err(error), ctx);
                self.close_after_flush(
                    CloseCode::Size,
                    format!("frame exceeds {limit} bytes"),
                    ctx,
                );
            }
            Err(err) => {
                tracing::debug!(conn_id = %self.conn_id, error = %err, "ws protocol error");
                self.close_after_flush(CloseCode::Protocol, format!("protocol error: {err}"), ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.writing || !matches!(self.phase, Phase::Closing) {
            ctx.stop();
        }
    }
}

troupe_actors::child_controls!(WsSessionActor, |this| this.outbox.len());

impl Handler<troupe_actors::event_bus::GatewayEvent> for WsSessionActor {
    type Result = ();
    /// Gateway-wide events go to authenticated clients only.
    fn handle(&mut self, msg: troupe_actors::event_bus::GatewayEvent, ctx: &mut Self::Context) {
        if matches!(self.phase, Phase::Connected { .. }) {
            self.seq += 1;
            let payload = msg.payload_text();
            let frame = match msg.state_version {
                Some(version) => {
                    frames::event_frame_versioned(msg.event, payload, self.seq, version)
                }
                None => frames::event_frame(msg.event, payload, self.seq),
            };
            self.enqueue(Outbound::Text(frame.into()), ctx);
        }
    }
}

impl Handler<Shutdown> for WsSessionActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        let stopping = self
            .gateway
            .settings
            .stopping
            .load(std::sync::atomic::Ordering::Relaxed);
        if stopping {
            if matches!(self.phase, Phase::Connected { .. }) {
                self.event("shutdown", &json!({ "reason": "gateway stopping" }), ctx);
            }
            self.close_after_flush(CloseCode::Away, "gateway shutting down", ctx);
        } else {
            // The `clients` subtree restarts; the gateway runs on: reconnect.
            self.close_after_flush(
                CloseCode::Restart,
                "connection handler restarting; reconnect",
                ctx,
            );
        }
        ctx.run_later(std::time::Duration::from_secs(2), |_, ctx| ctx.stop());
    }
}

/// Closes the socket with 1011 if the session's actor dies in a panic (a plain drop would
/// cut TCP without a close frame, which clients see as 1006).
struct CloseOnPanic(Session);

impl Drop for CloseOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let session = self.0.clone();
            let reason = CloseReason {
                code: CloseCode::Error,
                description: Some("internal error in the connection handler".into()),
            };
            runtime.spawn(async move {
                let _ = session.close(Some(reason)).await;
            });
        }
    }
}
