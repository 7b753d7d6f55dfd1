//! `session-queue`: per-session FIFO lanes with one active run each, a global cap on
//! concurrent runs, bounded lanes, queue modes, aborts, waiters, and fan-out of run events
//! to the clients subscribed to a session. Every turn is in the store before it is acked;
//! at start, queued turns are recovered from the store and run, in order.

mod api;
mod drain;
mod handlers;
pub mod lane;
mod store_link;

pub use api::*;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use tokio::sync::oneshot;

use crate::agent::{AgentActor, RunOutcome, RunTurn};
use crate::messages::{
    AgentId, QueueMode, RenderCache, RunEvent, RunId, RunStatus, SessionEvent, SessionKey,
    TurnEvent,
};
use crate::now_ms;
use crate::store::turns::{self, RunRecord};
use crate::store::{
    CloseRuns, FinishRun, RecoverRuns, StartRun, StoreActor, StoreFailure, StoreOp,
};
use crate::supervisor::{
    ChildHandle, ChildLink, ChildSpec, ExitGuard, SupervisorActor, lookup_patiently,
};
use drain::Drain;
use lane::{Active, Lane, Waiting};

/// A store write that can be made again (for retries).
/// What runs once a durable write is done.
type AfterWrite = Box<dyn FnOnce(&mut SessionQueueActor, &mut Context<SessionQueueActor>)>;

/// Attempts of a store write that must not be lost (about 10 s of backoffs while the store
/// fails).
const WRITE_ATTEMPTS: u32 = 40;

/// The pause before trying a write again after the store failed it (a backoff: the store
/// is running but failing, or has not come back within a lookup's patience).
const WRITE_BACKOFF: Duration = Duration::from_millis(250);

/// The session-queue actor.
pub struct SessionQueueActor {
    settings: QueueSettings,
    root: Addr<SupervisorActor>,
    store: Option<Addr<StoreActor>>,
    agents: HashMap<AgentId, Addr<AgentActor>>,
    aborts: HashMap<RunId, oneshot::Sender<()>>,
    lanes: HashMap<SessionKey, Lane>,
    runnable: VecDeque<SessionKey>,
    runnable_set: HashSet<SessionKey>,
    active_runs: usize,
    next_ticket: u64,
    /// Clients following each session, by connection id.
    subscribers: HashMap<SessionKey, HashMap<String, Recipient<SessionEvent>>>,
    /// Events a client's full mailbox made it miss, told with the next one it gets.
    missed: HashMap<String, u64>,
    /// The sessions each connection follows.
    subscriptions: HashMap<String, HashSet<SessionKey>>,
    waiters: HashMap<RunId, Vec<oneshot::Sender<RunSummary>>>,
    generation: u64,
    draining: Option<Drain>,
    guard: ExitGuard,
}

impl SessionQueueActor {
    /// The child spec of `session-queue` (own arbiter).
    pub fn spec(settings: QueueSettings) -> ChildSpec {
        ChildSpec::new("session-queue", "session-queue", move |link: ChildLink| {
            let arbiter = crate::supervisor::child_arbiter("session-queue");
            let settings = settings.clone();
            let addr = SessionQueueActor::start_in_arbiter(&arbiter.handle(), move |_| {
                SessionQueueActor {
                    settings,
                    root: link.supervisor.clone(),
                    store: None,
                    agents: HashMap::new(),
                    aborts: HashMap::new(),
                    lanes: HashMap::new(),
                    runnable: VecDeque::new(),
                    runnable_set: HashSet::new(),
                    active_runs: 0,
                    next_ticket: 0,
                    subscribers: HashMap::new(),
                    missed: HashMap::new(),
                    subscriptions: HashMap::new(),
                    waiters: HashMap::new(),
                    generation: link.generation,
                    draining: None,
                    guard: link.guard(),
                }
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
    }

    /// Sends a store operation now (so writes reach the store in the order they were made)
    /// and returns the future of its result.
    fn to_store<O: StoreOp>(
        &self,
        op: O,
    ) -> impl Future<Output = Result<O::Output, StoreFailure>> + 'static {
        let sent = self
            .store
            .as_ref()
            .filter(|s| s.connected())
            .map(|s| s.send(op));
        async move {
            match sent {
                Some(reply) => StoreFailure::answer::<O>(reply.await),
                None => Err(StoreFailure::not_running::<O>()),
            }
        }
    }

    /// Writes with retries while the store is restarting (its new address is pushed by the
    /// registry); `then` runs once the write is stored, or after the last attempt failed.
    fn write_durably<O: StoreOp<Output = ()>>(
        &mut self,
        what: &'static str,
        op: std::rc::Rc<dyn Fn() -> O>,
        attempt: u32,
        then: AfterWrite,
        ctx: &mut Context<Self>,
    ) {
        let tried = self.store.clone();
        let write = self.to_store(op());
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |stored, act, ctx| match stored {
                    Err(e) if attempt < WRITE_ATTEMPTS && e.is_not_running() => {
                        // The store is restarting: go again as soon as its new instance
                        // runs (its supervisor answers the moment it starts).
                        tracing::warn!(error = %e, what, attempt, "store restarting; the write waits for it");
                        let root = act.root.clone();
                        let back = async move { lookup_patiently::<StoreActor>(&root, "store").await.ok() };
                        ctx.spawn(back.into_actor(act).map(move |found, act, ctx| {
                            match found.filter(|s| s.connected() && Some(s) != tried.as_ref()) {
                                Some(store) => {
                                    act.store = Some(store);
                                    act.write_durably(what, op, attempt + 1, then, ctx);
                                }
                                // Not back within the lookup's patience, or still the old
                                // instance: a backoff before the next attempt.
                                None => {
                                    ctx.run_later(WRITE_BACKOFF, move |act, ctx| {
                                        act.write_durably(what, op, attempt + 1, then, ctx)
                                    });
                                }
                            }
                        }));
                    }
                    Err(e) if attempt < WRITE_ATTEMPTS => {
                        // The store ran it and failed (busy, disk full): a backoff.
                        tracing::warn!(error = %e, what, attempt, "store write failed; retrying");
                        ctx.run_later(WRITE_BACKOFF, move |act, ctx| {
                            act.write_durably(what, op, attempt + 1, then, ctx)
                        });
                    }
                    other => {
                        if let Err(e) = other {
                            tracing::error!(error = %e, what, "store write failed; giving up");
                        }
                        then(act, ctx);
                    }
                }),
        );
    }

    /// Sends a run event to every subscriber of its session. `try_send`: a client whose
    /// mailbox is full misses events rather than growing it; the next event it gets says
    /// how many it missed, so it sees a `seq` gap.
    fn deliver(&mut self, session_key: &SessionKey, run_id: &RunId, seq: u64, event: RunEvent) {
        let Some(subs) = self.subscribers.get_mut(session_key) else {
            return;
        };
        let ts = now_ms();
        let rendered = RenderCache::default();
        subs.retain(|conn_id, recipient| {
            let missed = self.missed.remove(conn_id).unwrap_or(0);
            let sent = recipient.try_send(SessionEvent {
                run_id: run_id.clone(),
                session_key: session_key.clone(),
                seq,
                ts,
                event: event.clone(),
                missed,
                rendered: rendered.clone(),
            });
            match sent {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    self.missed.insert(conn_id.clone(), missed + 1);
                    true
                }
                Err(SendError::Closed(_)) => false,
            }
        });
    }

    /// Makes `conn_id` follow `session_key`, unless it already follows
    /// `max_subscriptions` other sessions. The WS edge refuses the request that would pass
    /// the limit before it gets here (with a retryable error), so this is only a backstop.
    fn subscribe(
        &mut self,
        session_key: &SessionKey,
        conn_id: String,
        recipient: Recipient<SessionEvent>,
    ) {
        let limit = self.settings.max_subscriptions;
        let keys = self.subscriptions.entry(conn_id.clone()).or_default();
        if keys.len() >= limit && !keys.contains(session_key) {
            tracing::warn!(conn_id = %conn_id, session_key = %session_key, limit, "subscription limit reached; not subscribing");
            return;
        }
        keys.insert(session_key.clone());
        self.subscribers
            .entry(session_key.clone())
            .or_default()
            .insert(conn_id, recipient);
    }

    /// `conn_id` stops following `session_key` (its other subscriptions stay).
    fn unsubscribe_one(&mut self, session_key: &SessionKey, conn_id: &str) {
        if let Some(keys) = self.subscriptions.get_mut(conn_id) {
            keys.remove(session_key);
            if keys.is_empty() {
                self.subscriptions.remove(conn_id);
            }
        }
        if let Some(subs) = self.subscribers.get_mut(session_key) {
            subs.remove(conn_id);
            if subs.is_empty() {
                self.subscribers.remove(session_key);
            }
        }
    }

    /// Drops subscriptions of clients that went away without saying so (a panicked session).
    fn sweep_subscribers(&mut self) {
        self.subscribers.retain(|_, subs| {
            subs.retain(|_, r| r.connected());
            !subs.is_empty()
        });
        let live: HashSet<&String> = self.subscribers.values().flat_map(|s| s.keys()).collect();
        self.subscriptions.retain(|conn, _| live.contains(conn));
        self.missed.retain(|conn, _| live.contains(conn));
    }

    fn mark_runnable(&mut self, key: &SessionKey) {
        let ready = self.lanes.get(key).is_some_and(Lane::can_start);
        if ready && self.runnable_set.insert(key.clone()) {
            self.runnable.push_back(key.clone());
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.draining.is_some() {
            // Stopping: what waits stays queued in the store for the next start.
            self.check_drained();
            return;
        }
        while self.active_runs < self.settings.max_concurrent {
            let Some(key) = self.runnable.pop_front() else {
                break;
            };
            self.runnable_set.remove(&key);
            self.start_next(key, ctx);
        }
    }

    /// Transcript messages a run of `agent_id` gets as context (none for stateless agents).
    fn context_limit(&self, agent_id: &AgentId) -> i64 {
        if self.settings.stateless_agents.contains(agent_id.as_str()) {
            0
        } else {
            self.settings.history_limit as i64
        }
    }

    /// Whether a turn submitted now to the lane `key` may be accepted and started in one
    /// store operation: the lane is idle and a run slot is free.
    fn can_start_at_once(&self, key: &SessionKey) -> bool {
        self.draining.is_none()
            && self.active_runs < self.settings.max_concurrent
            && self.lanes.get(key).is_none_or(Lane::is_idle)
    }

    fn start_next(&mut self, key: SessionKey, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        let Some((turn, carried)) = lane.take_next() else {
            return;
        };
        let Some(run_id) = turn.run_id.clone() else {
            return;
        };
        self.active_runs += 1;
        // One store round trip: mark running, close coalesced runs, read the context.
        let limit = self.context_limit(&turn.agent_id);
        let started = self.to_store(StartRun {
            run_id: run_id.clone(),
            carried: carried.clone(),
            context_limit: limit,
        });
        let again = (run_id.clone(), carried.clone(), limit);
        let root = self.root.clone();
        let history = async move {
            match started.await {
                Ok(h) => Ok(h),
                Err(e) => match start_when_store_is_back(&root, again).await {
                    Some(h) => Ok(h),
                    None => Err(format!("cannot start the run in the store: {e}")),
                },
            }
        };
        self.launch(key, turn, run_id, carried, Box::pin(history), ctx);
    }

    /// Runs the turn with `ticket`, accepted and started in the store by one
    /// [`AcceptAndStart`](crate::store::AcceptAndStart), taking a run slot: `history` is its
    /// context. False if it is not next in its lane after all (it then starts in turn, and
    /// `StartRun` finds it already running).
    fn start_accepted(
        &mut self,
        key: &SessionKey,
        ticket: u64,
        history: Vec<turns::StoredMessage>,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(lane) = self.lanes.get_mut(key) else {
            return false;
        };
        let first = lane
            .waiting
            .front()
            .is_some_and(|w| w.ticket == ticket && w.run_id.is_some());
        if lane.active.is_some() || !first {
            return false;
        }
        let Some(turn) = lane.waiting.pop_front() else {
            return false;
        };
        let Some(run_id) = turn.run_id.clone() else {
            return false;
        };
        self.active_runs += 1;
        let history = std::future::ready(Ok(history));
        self.launch(
            key.clone(),
            turn,
            run_id,
            Vec::new(),
            Box::pin(history),
            ctx,
        );
        true
    }

    /// Makes `turn` the lane's active run (its slot counted) and runs it once `history`
    /// (the store's start of the run) is there.
    fn launch(
        &mut self,
        key: SessionKey,
        turn: Waiting,
        run_id: RunId,
        carried: Vec<RunId>,
        history: std::pin::Pin<Box<dyn Future<Output = Result<Vec<turns::StoredMessage>, String>>>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(lane) = self.lanes.get_mut(&key) {
            lane.active = Some(Active {
                run_id: run_id.clone(),
                carried,
                agent_id: turn.agent_id.clone(),
                seq: 1,
            });
            // Sent here, with the run handed to its agent, not by the agent: a turn accepted
            // and started at once reaches its clients together with its acceptance.
            self.deliver(&key, &run_id, 1, RunEvent::Started);
        }
        let (abort_tx, abort_rx) = oneshot::channel();
        self.aborts.insert(run_id.clone(), abort_tx);
        let root = self.root.clone();
        let cached = self
            .agents
            .get(&turn.agent_id)
            .filter(|a| a.connected())
            .cloned();
        let events = ctx.address().recipient::<TurnEvent>();
        let queue = ctx.address().recipient::<SubmitTurn>();
        let (input, agent_id, this_run, session_key, options) = (
            turn.input,
            turn.agent_id,
            run_id.clone(),
            key.clone(),
            turn.options,
        );
        let execute = async move {
            let history = match history.await {
                Ok(h) => h,
                Err(e) => return (RunOutcome::failed(e), None),
            };
            let agent = match cached {
                Some(a) => a,
                None => match lookup_patiently::<AgentActor>(&root, &format!("agent:{agent_id}"))
                    .await
                {
                    Ok(a) => a,
                    Err(e) => {
                        return (RunOutcome::failed(format!("agent {agent_id:?}: {e}")), None);
                    }
                },
            };
            let run = RunTurn {
                run_id: this_run,
                session_key,
                input,
                history,
                events,
                queue: Some(queue),
                abort: abort_rx,
                options,
            };
            let outcome = match agent.send(run).await {
                Ok(outcome) => outcome,
                Err(_) => RunOutcome::failed(format!(
                    "agent {agent_id:?} crashed or was restarted during the run"
                )),
            };
            (outcome, Some((agent_id, agent)))
        };
        ctx.spawn(
            execute
                .into_actor(self)
                .map(move |(outcome, agent), act, ctx| {
                    if let Some((id, addr)) = agent {
                        act.agents.insert(id, addr);
                    }
                    act.finish(key, run_id, outcome, ctx)
                }),
        );
    }

    fn finish(
        &mut self,
        key: SessionKey,
        run_id: RunId,
        mut outcome: RunOutcome,
        ctx: &mut Context<Self>,
    ) {
        self.aborts.remove(&run_id);
        if let Some(reason) = self
            .draining
            .as_mut()
            .and_then(|d| d.aborted.remove(&run_id))
        {
            outcome.error = Some(reason.into());
        }
        let end = turns::RunEnd {
            status: outcome.status,
            output: outcome.text.clone(),
            error: outcome.error.clone(),
            input_tokens: outcome.usage.input_tokens,
            output_tokens: outcome.usage.output_tokens,
            cost_usd: outcome.cost_usd,
            attachments: outcome.attachments.clone(),
        };
        let tool_steps = std::mem::take(&mut outcome.tool_steps);
        // The run's last streamed text is sent, as deltas, together with the end (one
        // wake-up of each client instead of two).
        let unsent = std::mem::take(&mut outcome.unsent_deltas);
        let id = run_id.clone();
        let op = std::rc::Rc::new(move || FinishRun {
            run_id: id.clone(),
            end: end.clone(),
            tool_steps: tool_steps.clone(),
        });
        // The lane moves on only once the run's end is stored (or the store stayed away).
        let then = Box::new(move |act: &mut Self, ctx: &mut Context<Self>| {
            act.deliver_unsent(&key, &run_id, unsent);
            let carried = act
                .lanes
                .get_mut(&key)
                .and_then(|l| l.active.take())
                .map(|a| a.carried)
                .unwrap_or_default();
            act.active_runs = act.active_runs.saturating_sub(1);
            let summary = act.announce_end(&key, &run_id, &outcome);
            act.resolve(&run_id, summary.clone());
            for other in carried {
                act.resolve(
                    &other,
                    RunSummary {
                        run_id: other.clone(),
                        status: RunStatus::Coalesced,
                        ..summary.clone()
                    },
                );
            }
            act.after_change(&key, ctx);
        });
        self.write_durably("a run's end", op, 1, then, ctx);
    }

    /// Sends a run's last deltas (those its outcome carried), right before its end.
    fn deliver_unsent(&mut self, key: &SessionKey, run_id: &RunId, unsent: Vec<String>) {
        let Some(active) = self
            .lanes
            .get_mut(key)
            .and_then(|l| l.active.as_mut())
            .filter(|a| &a.run_id == run_id)
        else {
            return;
        };
        let first = active.seq + 1;
        active.seq += unsent.len() as u64;
        for (seq, text) in (first..).zip(unsent) {
            self.deliver(key, run_id, seq, RunEvent::Delta(text.into()));
        }
    }

    /// Tells the session's subscribers how a run ended; returns that summary.
    fn announce_end(
        &mut self,
        key: &SessionKey,
        run_id: &RunId,
        outcome: &RunOutcome,
    ) -> RunSummary {
        let summary = RunSummary {
            run_id: run_id.clone(),
            status: outcome.status,
            summary: outcome.text.clone(),
            error: outcome.error.clone(),
            attachments: outcome.attachments.clone(),
        };
        let ended = RunEvent::Ended(Arc::new(summary.clone()));
        self.deliver(key, run_id, 0, ended);
        summary
    }

    fn resolve(&mut self, run_id: &RunId, summary: RunSummary) {
        for tx in self.waiters.remove(run_id).unwrap_or_default() {
            let _ = tx.send(summary.clone());
        }
    }

    /// After a lane changed: start what can start, forget idle lanes.
    fn after_change(&mut self, key: &SessionKey, ctx: &mut Context<Self>) {
        if self.lanes.get(key).is_some_and(Lane::is_idle) {
            self.lanes.remove(key);
        }
        self.mark_runnable(key);
        self.pump(ctx);
    }

    fn drop_runs(&mut self, run_ids: Vec<RunId>, note: &'static str, ctx: &mut Context<Self>) {
        if run_ids.is_empty() {
            return;
        }
        for id in &run_ids {
            self.resolve(
                id,
                RunSummary {
                    run_id: id.clone(),
                    status: RunStatus::Aborted,
                    summary: String::new(),
                    error: Some(note.into()),
                    attachments: Vec::new(),
                },
            );
        }
        let op = std::rc::Rc::new(move || CloseRuns {
            run_ids: run_ids.clone(),
            status: "aborted",
            note: Some(note.into()),
        });
        self.write_durably("dropped runs", op, 1, Box::new(|_, _| {}), ctx);
    }

    /// Fires the active run's abort signal (the agent stops at its next step, or at once if
    /// the run has not reached it yet).
    fn abort_active(&mut self, key: &SessionKey, only: Option<&RunId>) -> Option<RunId> {
        let active = self.lanes.get(key)?.active.as_ref()?;
        if only.is_some_and(|id| *id != active.run_id) {
            return None;
        }
        let run_id = active.run_id.clone();
        if let Some(abort) = self.aborts.remove(&run_id) {
            let _ = abort.send(());
        }
        Some(run_id)
    }

    fn recover(&mut self, ctx: &mut Context<Self>) {
        // A first start follows a stop of the whole gateway; a later one, a crash or a
        // restart of this queue alone.
        let reason = if self.generation > 1 {
            "the session queue crashed or was restarted"
        } else {
            "the gateway stopped"
        };
        let recover = self.to_store(RecoverRuns { reason });
        let busy = self.guard.liveness().busy();
        ctx.wait(recover.into_actor(self).map(move |res, act, ctx| {
            drop(busy);
            match res {
            Ok((interrupted, queued)) => {
                for run in &interrupted {
                    tracing::warn!(run_id = %run.id, session_key = %run.session_key, "run interrupted by the last stop marked failed");
                }
                if !queued.is_empty() {
                    tracing::info!(count = queued.len(), "resuming queued turns from the store");
                }
                for run in queued {
                    act.requeue(run);
                }
                let keys: Vec<SessionKey> = act.lanes.keys().cloned().collect();
                for key in keys {
                    act.mark_runnable(&key);
                }
                act.pump(ctx);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot recover queued turns");
                act.guard.fail(format!("cannot recover queued turns: {e}"));
                ctx.stop();
            }
        }
        }));
    }

    pub(crate) fn knows_run(&self, run_id: &RunId) -> bool {
        self.lanes.values().any(|l| {
            l.active.as_ref().is_some_and(|a| a.run_id == *run_id)
                || l.waiting.iter().any(|w| w.run_id.as_ref() == Some(run_id))
        })
    }

    fn requeue(&mut self, run: RunRecord) {
        self.next_ticket += 1;
        let mode = match run.mode.as_str() {
            "collect" => QueueMode::Collect,
            _ => QueueMode::Followup,
        };
        self.lanes
            .entry(run.session_key.clone())
            .or_default()
            .waiting
            .push_back(Waiting {
                ticket: self.next_ticket,
                run_id: Some(run.id),
                agent_id: run.agent_id,
                input: run.input,
                mode,
                // The turn runs with the options it was accepted with (stored with the
                // run) and its message's files (stored with the message).
                options: run.options.with_attachments(run.input_attachments),
            });
    }
}

/// Makes [`StartRun`] again (it is idempotent) while the store restarts, for about as long
/// as [`WRITE_ATTEMPTS`] of a durable write: an accepted turn is not failed because the
/// store was restarting at the moment it came up. A restarting store is waited for (its
/// supervisor answers the lookup the moment it runs); a store that answers with a failure,
/// or the same instance again, gets a backoff before the next attempt.
async fn start_when_store_is_back(
    root: &Addr<SupervisorActor>,
    (run_id, carried, context_limit): (RunId, Vec<RunId>, i64),
) -> Option<Vec<turns::StoredMessage>> {
    let mut tried: Option<Addr<StoreActor>> = None;
    for _ in 0..WRITE_ATTEMPTS {
        let store = match lookup_patiently::<StoreActor>(root, "store").await {
            Ok(store) if store.connected() && Some(&store) != tried.as_ref() => store,
            _ => {
                tokio::time::sleep(WRITE_BACKOFF).await;
                tried = None;
                continue;
            }
        };
        let op = StartRun {
            run_id: run_id.clone(),
            carried: carried.clone(),
            context_limit,
        };
        match store.send(op).await {
            Ok(Ok(history)) => return Some(history),
            // It died before answering: its next instance is waited for by the lookup.
            Err(_) => tried = Some(store),
            Ok(Err(_)) => {
                tokio::time::sleep(WRITE_BACKOFF).await;
                tried = None;
            }
        }
    }
    None
}

impl Actor for SessionQueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.guard.liveness().attach(ctx);
        let root = self.root.clone();
        let busy = self.guard.liveness().busy();
        let find = async move { lookup_patiently::<StoreActor>(&root, "store").await.ok() };
        ctx.wait(find.into_actor(self).map(move |found, act, ctx| {
            drop(busy);
            act.store = found;
            act.recover(ctx);
        }));
        ctx.run_interval(Duration::from_secs(30), |act, _| act.sweep_subscribers());
        self.watch_store(ctx);
    }
}

crate::child_controls!(SessionQueueActor, |this| this.active_runs
    + this.lanes.values().map(|l| l.waiting.len()).sum::<usize>());
