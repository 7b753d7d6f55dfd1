//! A connection's ordered link to the session-queue. Requests that arrive in order on one
//! connection reach the queue in that order, whatever the timing of address lookups and
//! restarts: while the address is unknown, work waits here in arrival order; a submission
//! lost with a crashed queue is sent again (same idempotency key, so never run twice)
//! before anything that arrived after it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;

use super::WsSessionActor;
use crate::gateway::ws::protocol::ErrorShape;
use troupe_actors::session_queue::{SessionQueueActor, SubmitTurn, Subscribe};
use troupe_actors::supervisor::lookup;

/// Work that needs the queue's address; `None` means the queue could not be reached.
pub(super) type QueueOp = Box<
    dyn FnOnce(&mut WsSessionActor, Option<Addr<SessionQueueActor>>, &mut Context<WsSessionActor>),
>;

/// Lookups tried before work waiting for the queue is answered `UNAVAILABLE` (~10 s).
const LOOKUP_ATTEMPTS: u32 = 100;
/// Pause between lookups while the queue restarts.
const LOOKUP_PAUSE: Duration = Duration::from_millis(100);
/// How long a submission may wait for the queue's answer before `UNAVAILABLE` (a queue
/// this far behind is overloaded; its mailbox is bounded, and a waiting sender is not).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Times one submission is sent to a queue that then died before answering.
pub(super) const SUBMIT_ATTEMPTS: u32 = 5;

/// A submission sent (or about to be) and not yet answered.
pub(super) struct PendingSubmit {
    /// Request id on the connection.
    pub id: String,
    /// The message (sent again, unchanged, if the queue dies before answering).
    pub submit: SubmitTurn,
    /// `agent`: answer twice (accepted, then the run's end).
    pub two_stage: bool,
    /// Sends so far; a reply to an older send is stale.
    pub attempt: u32,
    /// Sent to the current address (not waiting in `ops`).
    pub sent: bool,
}

/// The link's state, owned by the WS session.
#[derive(Default)]
pub(super) struct QueueLink {
    addr: Option<Addr<SessionQueueActor>>,
    looking_up: bool,
    ops: VecDeque<QueueOp>,
    /// Unanswered submissions by arrival number.
    pub submits: BTreeMap<u64, PendingSubmit>,
    next_submit: u64,
    /// Sessions this connection follows (subscribed again on a new queue).
    pub subscribed: HashSet<String>,
}

impl QueueLink {
    /// The current address, if known and alive.
    pub fn addr(&self) -> Option<&Addr<SessionQueueActor>> {
        self.addr.as_ref().filter(|a| a.connected())
    }
}

impl WsSessionActor {
    /// Runs `op` with the queue's address, after every earlier op of this connection.
    pub(super) fn with_queue(&mut self, op: QueueOp, ctx: &mut Context<Self>) {
        if self.link_q.ops.is_empty()
            && let Some(addr) = self.link_q.addr().cloned()
        {
            op(self, Some(addr), ctx);
            return;
        }
        self.link_q.ops.push_back(op);
        self.find_queue(ctx);
    }

    /// Sends a turn submission in arrival order; `on_reply` gets the queue's answer.
    pub(super) fn submit_turn(
        &mut self,
        id: String,
        submit: SubmitTurn,
        two_stage: bool,
        ctx: &mut Context<Self>,
    ) {
        self.link_q.next_submit += 1;
        let seq = self.link_q.next_submit;
        self.link_q.submits.insert(
            seq,
            PendingSubmit {
                id,
                submit,
                two_stage,
                attempt: 0,
                sent: false,
            },
        );
        self.with_queue(
            Box::new(move |act, addr, ctx| act.send_submit(seq, addr, ctx)),
            ctx,
        );
    }

    fn send_submit(
        &mut self,
        seq: u64,
        addr: Option<Addr<SessionQueueActor>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.link_q.submits.get_mut(&seq) else {
            return;
        };
        let Some(addr) = addr else {
            if let Some(entry) = self.link_q.submits.remove(&seq) {
                self.respond(
                    entry.id,
                    Err(super::chat::unavailable("the session queue")),
                    ctx,
                );
            }
            return;
        };
        entry.attempt += 1;
        entry.sent = true;
        let attempt = entry.attempt;
        let sent = addr.send(entry.submit.clone()).timeout(SUBMIT_TIMEOUT);
        ctx.spawn(sent.into_actor(self).map(move |reply, act, ctx| {
            let current = act
                .link_q
                .submits
                .get(&seq)
                .is_some_and(|e| e.attempt == attempt && e.sent);
            if !current {
                return; // answered by a later send
            }
            match reply {
                Ok(result) => {
                    if let Some(entry) = act.link_q.submits.remove(&seq) {
                        act.on_submitted(entry, result, ctx);
                    }
                }
                Err(MailboxError::Timeout) => {
                    // The queue is alive but this long behind: say so rather than wait on.
                    // The turn may still be accepted; a retry with the same key is safe.
                    if let Some(entry) = act.link_q.submits.remove(&seq) {
                        let error = ErrorShape::unavailable(
                            "the session queue is overloaded; retry with the same idempotencyKey",
                            1000,
                        )
                        .with_detail("QUEUE_BUSY");
                        act.respond(entry.id, Err(error), ctx);
                    }
                }
                Err(_) if attempt >= SUBMIT_ATTEMPTS => {
                    if let Some(entry) = act.link_q.submits.remove(&seq) {
                        let error = super::chat::unavailable("the session queue");
                        act.respond(entry.id, Err(error), ctx);
                    }
                }
                Err(_) => act.queue_lost(ctx),
            }
        }));
    }

    /// The queue died: every submission sent to it and not answered is sent again, in
    /// order, before the work that arrived after it.
    pub(super) fn queue_lost(&mut self, ctx: &mut Context<Self>) {
        if self.link_q.addr().is_some() {
            return;
        }
        self.link_q.addr = None;
        let resend: Vec<u64> = self
            .link_q
            .submits
            .iter_mut()
            .filter(|(_, e)| e.sent)
            .map(|(seq, e)| {
                e.sent = false;
                *seq
            })
            .collect();
        for seq in resend.into_iter().rev() {
            self.link_q.ops.push_front(Box::new(move |act, addr, ctx| {
                act.send_submit(seq, addr, ctx)
            }));
        }
        let keys: Vec<String> = self.link_q.subscribed.iter().cloned().collect();
        let (conn_id, recipient) = (self.conn_id.clone(), ctx.address().recipient());
        self.link_q.ops.push_front(Box::new(move |_, addr, _| {
            if let Some(addr) = addr {
                for session_key in keys {
                    let (conn_id, recipient) = (conn_id.clone(), recipient.clone());
                    let _ = addr.try_send(Subscribe {
                        session_key: session_key.into(),
                        conn_id,
                        recipient,
                    });
                }
            }
        }));
        self.find_queue(ctx);
    }

    /// Looks the queue up (once at a time), then runs the waiting ops in order.
    fn find_queue(&mut self, ctx: &mut Context<Self>) {
        if self.link_q.looking_up {
            return;
        }
        self.link_q.looking_up = true;
        let root = self.gateway.root.clone();
        let find = async move {
            for _ in 0..LOOKUP_ATTEMPTS {
                if let Ok(addr) = lookup::<SessionQueueActor>(&root, "session-queue").await
                    && addr.connected()
                {
                    return Some(addr);
                }
                tokio::time::sleep(LOOKUP_PAUSE).await;
            }
            None
        };
        ctx.spawn(find.into_actor(self).map(|found, act, ctx| {
            act.link_q.looking_up = false;
            act.link_q.addr = found.clone();
            while let Some(op) = act.link_q.ops.pop_front() {
                op(act, found.clone(), ctx);
                if found.as_ref().is_some_and(|a| !a.connected()) {
                    // Died again while we were catching up: look again for the rest.
                    act.link_q.addr = None;
                    act.find_queue(ctx);
                    return;
                }
            }
        }));
    }
}
