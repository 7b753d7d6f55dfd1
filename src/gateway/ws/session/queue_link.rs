//! A connection's ordered link to the session-queue. Requests that arrive in order on one
//! connection reach the queue in that order, whatever the timing of restarts: the
//! connection watches `session-queue` in the registry ([`WatchChild`]), which pushes each
//! new instance's address the moment it starts (no polling); while no live address is
//! known, work waits here in arrival order; a submission lost with a crashed queue is sent
//! again (same idempotency key, so never run twice) before anything that arrived after
//! it, after the connection's subscriptions are made again on the new instance.
//!
//! A submission's answer comes before its run's events: the queue may send a run's first
//! events together with its acceptance, and the two reach this connection by different
//! paths (the mailbox, the reply), so while a submission to a session is sent and not
//! answered, events of that session wait here ([`QueueLink::held`]), in order.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;

use super::WsSessionActor;
use crate::gateway::ws::protocol::ErrorShape;
use troupe_actors::messages::{SessionEvent, SessionKey};
use troupe_actors::session_queue::{SessionQueueActor, SubmitTurn, Subscribe};
use troupe_actors::supervisor::{ChildId, ChildStarted, WatchChild};

/// Work that needs the queue's address; `None` means the queue could not be reached.
pub(super) type QueueOp = Box<
    dyn FnOnce(&mut WsSessionActor, Option<Addr<SessionQueueActor>>, &mut Context<WsSessionActor>),
>;

/// How long work waits for a live queue (its address is pushed when it starts) before it
/// is answered `UNAVAILABLE`.
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long a submission may wait for the queue's answer before `UNAVAILABLE` (a queue
/// this far behind is overloaded; its mailbox is bounded, and a waiting sender is not).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Times one submission is sent to a queue that then died before answering.
pub(super) const SUBMIT_ATTEMPTS: u32 = 5;
/// Events held for unanswered submissions at most; past it they are shown at once (still
/// in order, but possibly before a submission's answer).
const MAX_HELD: usize = 1024;

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
    /// The queue instance it was last sent to (`None`: waiting in `ops`).
    pub sent_to: Option<Addr<SessionQueueActor>>,
}

/// The link's state, owned by the WS session.
#[derive(Default)]
pub(super) struct QueueLink {
    /// The newest instance's address pushed by the registry (it may have died since).
    addr: Option<Addr<SessionQueueActor>>,
    /// The registry was asked to push the queue's addresses here.
    watching: bool,
    /// Answers the waiting work `UNAVAILABLE` if no live queue comes in time.
    deadline: Option<SpawnHandle>,
    ops: VecDeque<QueueOp>,
    /// Unanswered submissions by arrival number.
    pub submits: BTreeMap<u64, PendingSubmit>,
    next_submit: u64,
    /// Sessions this connection follows (subscribed again on a new queue).
    pub subscribed: HashSet<String>,
    /// Events that wait for a submission's answer, in arrival order.
    held: VecDeque<SessionEvent>,
}

impl QueueLink {
    /// The current address, if known and alive.
    pub fn addr(&self) -> Option<&Addr<SessionQueueActor>> {
        self.addr.as_ref().filter(|a| a.connected())
    }

    /// Whether events of `session_key` wait: a submission to it is sent and unanswered,
    /// or earlier events of it wait already.
    fn holds(&self, session_key: &SessionKey) -> bool {
        self.submits
            .values()
            .any(|e| e.sent_to.is_some() && &e.submit.session_key == session_key)
            || self.held.iter().any(|e| &e.session_key == session_key)
    }
}

impl WsSessionActor {
    /// Shows a run event now, or holds it until the answer of a submission to its session
    /// (see the module's doc).
    pub(super) fn on_session_event(&mut self, event: SessionEvent, ctx: &mut Context<Self>) {
        self.release_held(ctx);
        if self.link_q.holds(&event.session_key) {
            if self.link_q.held.len() < MAX_HELD {
                self.link_q.held.push_back(event);
                return;
            }
            // Too many wait: show them all, in order, then this one.
            for held in std::mem::take(&mut self.link_q.held) {
                self.show_event(held, ctx);
            }
        }
        self.show_event(event, ctx);
    }

    /// Shows the held events whose sessions no longer wait for an answer, in order.
    pub(super) fn release_held(&mut self, ctx: &mut Context<Self>) {
        if self.link_q.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.link_q.held);
        for event in held {
            if self.link_q.holds(&event.session_key) {
                self.link_q.held.push_back(event);
            } else {
                self.show_event(event, ctx);
            }
        }
    }

    /// Runs `op` with the queue's address, after every earlier op of this connection.
    pub(super) fn with_queue(&mut self, op: QueueOp, ctx: &mut Context<Self>) {
        if self.link_q.ops.is_empty()
            && let Some(addr) = self.link_q.addr().cloned()
        {
            op(self, Some(addr), ctx);
            return;
        }
        self.link_q.ops.push_back(op);
        self.wait_for_queue(ctx);
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
                sent_to: None,
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
        entry.sent_to = Some(addr.clone());
        let attempt = entry.attempt;
        let sent = addr.send(entry.submit.clone()).timeout(SUBMIT_TIMEOUT);
        ctx.spawn(sent.into_actor(self).map(move |reply, act, ctx| {
            let current = act
                .link_q
                .submits
                .get(&seq)
                .is_some_and(|e| e.attempt == attempt && e.sent_to.is_some());
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
            act.release_held(ctx);
        }));
    }

    /// A send to the queue failed (the instance died): unless the registry already pushed
    /// a new instance (which re-sent what was lost), wait for it.
    pub(super) fn queue_lost(&mut self, ctx: &mut Context<Self>) {
        if let Some(live) = self.link_q.addr().cloned() {
            self.requeue_lost(&live);
            self.drain_ops(ctx);
            return;
        }
        self.wait_for_queue(ctx);
        self.release_held(ctx);
    }

    /// Submissions sent to another instance than `live` and not answered go back to the
    /// front of `ops`, in their original order.
    fn requeue_lost(&mut self, live: &Addr<SessionQueueActor>) {
        let lost: Vec<u64> = self
            .link_q
            .submits
            .iter_mut()
            .filter(|(_, e)| e.sent_to.as_ref().is_some_and(|a| a != live))
            .map(|(seq, e)| {
                e.sent_to = None;
                *seq
            })
            .collect();
        for seq in lost.into_iter().rev() {
            self.link_q.ops.push_front(Box::new(move |act, addr, ctx| {
                act.send_submit(seq, addr, ctx)
            }));
        }
    }

    /// Makes sure the registry pushes the queue's address here, and bounds how long the
    /// waiting work waits for it.
    fn wait_for_queue(&mut self, ctx: &mut Context<Self>) {
        if !self.link_q.watching {
            self.link_q.watching = true;
            let watch = WatchChild {
                id: ChildId::new("session-queue"),
                watcher: ctx.address().recipient(),
            };
            let asked = self.gateway.root.send(watch);
            ctx.spawn(asked.into_actor(self).map(|answer, act, ctx| {
                let why = match answer {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(conn_id = %act.conn_id, error = %why, "cannot watch the session queue");
                act.link_q.watching = false;
                act.fail_waiting(ctx);
            }));
        }
        if self.link_q.addr().is_some() {
            self.drain_ops(ctx);
        } else if self.link_q.deadline.is_none() && !self.link_q.ops.is_empty() {
            let deadline = ctx.run_later(QUEUE_WAIT, |act, ctx| {
                act.link_q.deadline = None;
                if act.link_q.addr().is_none() {
                    act.fail_waiting(ctx);
                }
            });
            self.link_q.deadline = Some(deadline);
        }
    }

    /// Runs the waiting work in order while the queue is alive.
    fn drain_ops(&mut self, ctx: &mut Context<Self>) {
        while let Some(addr) = self.link_q.addr().cloned() {
            let Some(op) = self.link_q.ops.pop_front() else {
                break;
            };
            op(self, Some(addr), ctx);
        }
        if self.link_q.ops.is_empty()
            && let Some(deadline) = self.link_q.deadline.take()
        {
            ctx.cancel_future(deadline);
        }
    }

    /// Answers every waiting op as "the queue could not be reached".
    fn fail_waiting(&mut self, ctx: &mut Context<Self>) {
        if let Some(deadline) = self.link_q.deadline.take() {
            ctx.cancel_future(deadline);
        }
        while let Some(op) = self.link_q.ops.pop_front() {
            op(self, None, ctx);
        }
    }

    /// The registry pushed a (re)started queue: the connection's subscriptions are made on
    /// it, what was sent to an earlier instance and not answered is sent again, then the
    /// waiting work runs, all in order.
    fn queue_started(&mut self, addr: Addr<SessionQueueActor>, ctx: &mut Context<Self>) {
        let previous = self.link_q.addr.replace(addr.clone());
        if previous.as_ref() != Some(&addr) {
            self.requeue_lost(&addr);
            if previous.is_some() {
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
            }
        }
        self.drain_ops(ctx);
    }
}

impl Handler<ChildStarted> for WsSessionActor {
    type Result = ();
    fn handle(&mut self, msg: ChildStarted, ctx: &mut Self::Context) {
        match msg.addr::<SessionQueueActor>() {
            Ok(addr) => self.queue_started(addr, ctx),
            // A bug (logged by the registry): the waiting work is answered, not kept.
            Err(_) => self.fail_waiting(ctx),
        }
    }
}
