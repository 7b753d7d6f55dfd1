//! `session-queue`: per-session FIFO lanes with one active run each, a global cap on
//! concurrent runs, bounded lanes, queue modes, aborts, waiters, and fan-out of run events
//! to the clients subscribed to a session. Every turn is in the store before it is acked;
//! at start, queued turns are recovered from the store and run, in order.

pub mod lane;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::agent::{AbortRun, AgentActor, RunOutcome, RunStatus, RunTurn};
use crate::messages::{QueueMode, SessionEvent, Shutdown, TurnEvent, TurnEventKind};
use crate::now_ms;
use crate::store::turns::{self, Acceptance, NewTurn, RunRecord};
use crate::store::{StoreActor, StoreError, StoreRead, StoreWrite};
use crate::supervisor::{
    ChildAction, ChildCommand, ChildHandle, ChildId, ChildLink, ChildSpec, CommandOutcome,
    ExitGuard, SupervisorActor,
};
use lane::{Active, Lane, Waiting};

/// Limits of the queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Runs in progress across all sessions.
    pub max_concurrent: usize,
    /// Turns that may wait in one session's lane.
    pub lane_capacity: usize,
    /// How long an idempotency key is remembered.
    pub dedupe_window: Duration,
    /// Transcript messages given to the agent as context.
    pub history_limit: usize,
}

/// Why a submission was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The session's lane is full; retry later.
    #[error("session {session_key} has {waiting} turns waiting (the limit); retry later")]
    LaneFull {
        /// Session.
        session_key: String,
        /// Waiting turns.
        waiting: usize,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The store failed; nothing was accepted.
    #[error("store unavailable: {0}")]
    Store(String),
    /// No such run.
    #[error("no run with id {0:?}")]
    UnknownRun(String),
}

/// A client submits a turn (WS `chat.send`, `agent`; REST; channels later).
#[derive(Message)]
#[rtype(result = "Result<TurnAccepted, QueueError>")]
pub struct SubmitTurn {
    /// Session key.
    pub session_key: String,
    /// Agent to run it.
    pub agent_id: String,
    /// The user's message.
    pub text: String,
    /// Dedupe key.
    pub idempotency_key: Option<String>,
    /// Queue mode.
    pub mode: QueueMode,
    /// Subscribe this client to the session's events.
    pub subscriber: Option<(String, Recipient<SessionEvent>)>,
}

/// The `accepted` acknowledgement.
#[derive(Debug, Clone)]
pub struct TurnAccepted {
    /// Run id.
    pub run_id: String,
    /// `accepted`, or the earlier run's status for a duplicate.
    pub status: String,
    /// When it was accepted (ms).
    pub accepted_at: i64,
    /// Runs ahead of it in its session.
    pub position: usize,
    /// True when the idempotency key matched an earlier run.
    pub duplicate: bool,
}

/// Waits for a run's end.
#[derive(Message)]
#[rtype(result = "Result<RunSummary, QueueError>")]
pub struct WaitRun {
    /// The run.
    pub run_id: String,
    /// Give up after this long (answers `timeout`).
    pub timeout: Duration,
}

/// A finished (or still pending, on timeout) run.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// ok | error | aborted | coalesced | timeout.
    pub status: String,
    /// The reply.
    pub summary: String,
    /// The error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Aborts the active run of a session (and optionally drops the waiting ones).
#[derive(Message)]
#[rtype(result = "AbortReport")]
pub struct AbortTurn {
    /// Session.
    pub session_key: String,
    /// Only this run (active or waiting).
    pub run_id: Option<String>,
    /// Also drop the waiting turns.
    pub clear_queued: bool,
}

/// What [`AbortTurn`] did.
#[derive(Debug, Clone, Default, serde::Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct AbortReport {
    /// The active run was told to abort.
    pub aborted: bool,
    /// Its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Waiting turns dropped.
    pub cleared: usize,
}

/// Clears (or deletes) a session, aborting its work first.
#[derive(Message)]
#[rtype(result = "Result<bool, QueueError>")]
pub struct ResetSession {
    /// Session.
    pub session_key: String,
    /// Delete the session itself too.
    pub delete: bool,
}

/// Subscribes a client to a session's events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// Session.
    pub session_key: String,
    /// Client connection id.
    pub conn_id: String,
    /// Where events go.
    pub recipient: Recipient<SessionEvent>,
}

/// A client went away: drop its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// Client connection id.
    pub conn_id: String,
}

/// The session-queue actor.
pub struct SessionQueueActor {
    settings: QueueSettings,
    root: Addr<SupervisorActor>,
    store: Option<Addr<StoreActor>>,
    lanes: HashMap<String, Lane>,
    runnable: VecDeque<String>,
    runnable_set: HashSet<String>,
    active_runs: usize,
    next_ticket: u64,
    subscribers: HashMap<String, HashMap<String, Recipient<SessionEvent>>>,
    subscriptions: HashMap<String, HashSet<String>>,
    waiters: HashMap<String, Vec<oneshot::Sender<RunSummary>>>,
    guard: ExitGuard,
}

impl SessionQueueActor {
    /// The child spec of `session-queue` (own arbiter).
    pub fn spec(settings: QueueSettings) -> ChildSpec {
        ChildSpec::new("session-queue", "session-queue", move |link: ChildLink| {
            let arbiter = Arbiter::new();
            let settings = settings.clone();
            let addr = SessionQueueActor::start_in_arbiter(&arbiter.handle(), move |_| {
                SessionQueueActor {
                    settings,
                    root: link.supervisor.clone(),
                    store: None,
                    lanes: HashMap::new(),
                    runnable: VecDeque::new(),
                    runnable_set: HashSet::new(),
                    active_runs: 0,
                    next_ticket: 0,
                    subscribers: HashMap::new(),
                    subscriptions: HashMap::new(),
                    waiters: HashMap::new(),
                    guard: link.guard(),
                }
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
    }

    /// Sends a write now (so writes reach the store in the order they were made) and
    /// returns the future of its result.
    fn store_write<T: Send + 'static>(
        &self,
        op: StoreWrite<T>,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static {
        let sent = self
            .store
            .as_ref()
            .filter(|s| s.connected())
            .map(|s| s.send(op));
        async move {
            match sent {
                Some(reply) => reply.await.map_err(|_| StoreError::NotOpen)?,
                None => Err(StoreError::NotOpen),
            }
        }
    }

    fn store_read<T: Send + 'static>(
        &self,
        op: StoreRead<T>,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static {
        let sent = self
            .store
            .as_ref()
            .filter(|s| s.connected())
            .map(|s| s.send(op));
        async move {
            match sent {
                Some(reply) => reply.await.map_err(|_| StoreError::NotOpen)?,
                None => Err(StoreError::NotOpen),
            }
        }
    }

    /// Keeps the store's address current (it changes when the store restarts).
    fn refresh_store(&mut self, ctx: &mut Context<Self>) {
        if self.store.as_ref().is_some_and(|s| s.connected()) {
            return;
        }
        let root = self.root.clone();
        let find = async move { lookup_patiently::<StoreActor>(&root, "store").await };
        ctx.spawn(find.into_actor(self).map(|found, act, _| {
            if found.is_some() {
                act.store = found;
            }
        }));
    }

    fn broadcast(&mut self, session_key: &str, event: &'static str, payload: Value) {
        let Some(subs) = self.subscribers.get_mut(session_key) else {
            return;
        };
        let payload = Arc::new(payload);
        subs.retain(|_, r| r.connected());
        for recipient in subs.values() {
            recipient.do_send(SessionEvent {
                event,
                payload: payload.clone(),
            });
        }
    }

    fn subscribe(
        &mut self,
        session_key: &str,
        conn_id: String,
        recipient: Recipient<SessionEvent>,
    ) {
        self.subscriptions
            .entry(conn_id.clone())
            .or_default()
            .insert(session_key.to_string());
        self.subscribers
            .entry(session_key.to_string())
            .or_default()
            .insert(conn_id, recipient);
    }

    fn mark_runnable(&mut self, key: &str) {
        let ready = self.lanes.get(key).is_some_and(Lane::can_start);
        if ready && self.runnable_set.insert(key.to_string()) {
            self.runnable.push_back(key.to_string());
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.active_runs < self.settings.max_concurrent {
            let Some(key) = self.runnable.pop_front() else {
                break;
            };
            self.runnable_set.remove(&key);
            self.start_next(key, ctx);
        }
    }

    fn start_next(&mut self, key: String, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get_mut(&key) else {
            return;
        };
        let Some((turn, carried)) = lane.take_next() else {
            return;
        };
        let Some(run_id) = turn.run_id.clone() else {
            return;
        };
        lane.active = Some(Active {
            run_id: run_id.clone(),
            carried: carried.clone(),
            agent_id: turn.agent_id.clone(),
            text: String::new(),
            seq: 0,
        });
        self.active_runs += 1;
        let id = run_id.clone();
        let into = run_id.clone();
        let mark = self.store_write(StoreWrite::new(move |pool| {
            Box::pin(async move {
                turns::mark_running(&pool, &id).await?;
                if !carried.is_empty() {
                    turns::close_runs(
                        &pool,
                        &carried,
                        "coalesced",
                        Some("coalesced into a collect turn"),
                        Some(&into),
                    )
                    .await?;
                }
                Ok(())
            })
        }));
        ctx.spawn(mark.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                tracing::error!(error = %e, "could not mark a run as running");
            }
        }));
        let root = self.root.clone();
        let events = ctx.address().recipient::<TurnEvent>();
        let queue = ctx.address().recipient::<SubmitTurn>();
        let (history_key, limit, this_run) = (
            key.clone(),
            self.settings.history_limit as i64,
            run_id.clone(),
        );
        let history = self.store_read(StoreRead::new(move |pool| {
            Box::pin(async move { turns::history(&pool, &history_key, limit, None).await })
        }));
        let (input, agent_id) = (turn.input, turn.agent_id);
        let session_key = key.clone();
        let execute = async move {
            let history = match history.await {
                Ok(h) => h
                    .into_iter()
                    .filter(|m| m.run_id.as_deref() != Some(this_run.as_str()))
                    .collect(),
                Err(e) => return RunOutcome::failed(format!("cannot read the transcript: {e}")),
            };
            let Some(agent) =
                lookup_patiently::<AgentActor>(&root, &format!("agent:{agent_id}")).await
            else {
                return RunOutcome::failed(format!("agent {agent_id:?} is not running"));
            };
            let run = RunTurn {
                run_id: this_run,
                session_key,
                input,
                history,
                events,
                queue: Some(queue),
            };
            match agent.send(run).await {
                Ok(outcome) => outcome,
                Err(_) => RunOutcome::failed(format!(
                    "agent {agent_id:?} crashed or was restarted during the run"
                )),
            }
        };
        ctx.spawn(
            execute
                .into_actor(self)
                .map(move |outcome, act, ctx| act.finish(key, run_id, outcome, ctx)),
        );
    }

    fn finish(
        &mut self,
        key: String,
        run_id: String,
        outcome: RunOutcome,
        ctx: &mut Context<Self>,
    ) {
        let end = turns::RunEnd {
            status: outcome.status.name().into(),
            output: outcome.text.clone(),
            error: outcome.error.clone(),
            input_tokens: outcome.usage.input_tokens,
            output_tokens: outcome.usage.output_tokens,
            cost_usd: outcome.cost_usd,
        };
        let id = run_id.clone();
        let write = self.store_write(StoreWrite::new(move |pool| {
            Box::pin(async move { turns::finish_run(&pool, &id, &end).await })
        }));
        ctx.spawn(write.into_actor(self).map(move |stored, act, ctx| {
            if let Err(e) = stored {
                tracing::error!(error = %e, run_id = %run_id, "could not record a run's end");
            }
            let carried = act
                .lanes
                .get_mut(&key)
                .and_then(|l| l.active.take())
                .map(|a| a.carried)
                .unwrap_or_default();
            act.active_runs = act.active_runs.saturating_sub(1);
            act.announce_end(&key, &run_id, &outcome);
            let summary = RunSummary {
                run_id: run_id.clone(),
                status: outcome.status.name().into(),
                summary: outcome.text.clone(),
                error: outcome.error.clone(),
            };
            act.resolve(&run_id, summary.clone());
            for other in carried {
                act.resolve(
                    &other,
                    RunSummary {
                        run_id: other.clone(),
                        status: "coalesced".into(),
                        ..summary.clone()
                    },
                );
            }
            act.after_change(&key, ctx);
        }));
    }

    fn announce_end(&mut self, key: &str, run_id: &str, outcome: &RunOutcome) {
        let ts = now_ms();
        let phase = if outcome.status == RunStatus::Ok {
            "end"
        } else {
            "error"
        };
        self.broadcast(key, "agent", json!({
            "runId": run_id, "sessionKey": key, "stream": "lifecycle",
            "data": { "phase": phase, "status": outcome.status.name(), "error": outcome.error }, "ts": ts,
        }));
        let chat = match outcome.status {
            RunStatus::Ok => {
                json!({ "runId": run_id, "sessionKey": key, "state": "final", "message": { "role": "assistant", "text": outcome.text }, "ts": ts })
            }
            RunStatus::Aborted => {
                json!({ "runId": run_id, "sessionKey": key, "state": "aborted", "message": { "role": "assistant", "text": outcome.text }, "ts": ts })
            }
            RunStatus::Error => {
                json!({ "runId": run_id, "sessionKey": key, "state": "error", "errorMessage": outcome.error, "ts": ts })
            }
        };
        self.broadcast(key, "chat", chat);
    }

    fn resolve(&mut self, run_id: &str, summary: RunSummary) {
        for tx in self.waiters.remove(run_id).unwrap_or_default() {
            let _ = tx.send(summary.clone());
        }
    }

    /// After a lane changed: start what can start, forget idle lanes.
    fn after_change(&mut self, key: &str, ctx: &mut Context<Self>) {
        if self.lanes.get(key).is_some_and(Lane::is_idle) {
            self.lanes.remove(key);
        }
        self.mark_runnable(key);
        self.pump(ctx);
    }

    fn drop_runs(&mut self, run_ids: Vec<String>, note: &'static str, ctx: &mut Context<Self>) {
        if run_ids.is_empty() {
            return;
        }
        for id in &run_ids {
            self.resolve(
                id,
                RunSummary {
                    run_id: id.clone(),
                    status: "aborted".into(),
                    summary: String::new(),
                    error: Some(note.into()),
                },
            );
        }
        let write = self.store_write(StoreWrite::new(move |pool| {
            Box::pin(async move {
                turns::close_runs(&pool, &run_ids, "aborted", Some(note), None).await
            })
        }));
        ctx.spawn(write.into_actor(self).map(|res, _, _| {
            if let Err(e) = res {
                tracing::error!(error = %e, "could not record dropped runs");
            }
        }));
    }

    fn abort_active(&mut self, key: &str, only: Option<&str>) -> Option<String> {
        let active = self.lanes.get(key)?.active.as_ref()?;
        if only.is_some_and(|id| id != active.run_id) {
            return None;
        }
        let (run_id, agent_id) = (active.run_id.clone(), active.agent_id.clone());
        let root = self.root.clone();
        let id = run_id.clone();
        actix::spawn(async move {
            if let Some(agent) = lookup::<AgentActor>(&root, &format!("agent:{agent_id}")).await {
                let _ = agent.send(AbortRun { run_id: id }).await;
            }
        });
        Some(run_id)
    }

    fn recover(&mut self, ctx: &mut Context<Self>) {
        let recover = self.store_write(StoreWrite::new(|pool| {
            Box::pin(async move { turns::recover_runs(&pool).await })
        }));
        ctx.wait(recover.into_actor(self).map(|res, act, ctx| match res {
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
                let keys: Vec<String> = act.lanes.keys().cloned().collect();
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
        }));
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
            });
    }
}

/// Finds a child's current address anywhere in the tree.
pub async fn lookup<A: Actor>(root: &Addr<SupervisorActor>, id: &str) -> Option<Addr<A>> {
    match root
        .send(ChildCommand {
            id: ChildId::new(id),
            action: ChildAction::Lookup,
        })
        .await
    {
        Ok(Ok(CommandOutcome::Found(addr))) => addr.downcast_ref::<Addr<A>>().cloned(),
        _ => None,
    }
}

/// [`lookup`], retried for a few seconds while the child is (re)starting.
pub async fn lookup_patiently<A: Actor>(root: &Addr<SupervisorActor>, id: &str) -> Option<Addr<A>> {
    for _ in 0..100 {
        if let Some(addr) = lookup::<A>(root, id).await {
            return Some(addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

impl Actor for SessionQueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let root = self.root.clone();
        let find = async move { lookup_patiently::<StoreActor>(&root, "store").await };
        ctx.wait(find.into_actor(self).map(|found, act, ctx| {
            act.store = found;
            act.recover(ctx);
        }));
        ctx.run_interval(Duration::from_millis(500), |act, ctx| {
            act.refresh_store(ctx)
        });
    }
}

crate::child_controls!(SessionQueueActor, |this| this.active_runs
    + this.lanes.values().map(|l| l.waiting.len()).sum::<usize>());

impl Handler<Shutdown> for SessionQueueActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SubmitTurn> for SessionQueueActor {
    type Result = ResponseActFuture<Self, Result<TurnAccepted, QueueError>>;
    fn handle(&mut self, msg: SubmitTurn, _: &mut Self::Context) -> Self::Result {
        let key = msg.session_key.clone();
        if let Some((conn_id, recipient)) = msg.subscriber {
            self.subscribe(&key, conn_id, recipient);
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let lane = self.lanes.entry(key.clone()).or_default();
        let waiting = lane.waiting.len();
        let lane_full = waiting >= self.settings.lane_capacity && msg.mode != QueueMode::Interrupt;
        if !lane_full {
            lane.waiting.push_back(Waiting {
                ticket,
                run_id: None,
                agent_id: msg.agent_id.clone(),
                input: msg.text.clone(),
                mode: msg.mode,
            });
        }
        let turn = NewTurn {
            session_key: key.clone(),
            agent_id: msg.agent_id,
            text: msg.text,
            idempotency_key: msg.idempotency_key,
            mode: msg.mode.name().into(),
            dedupe_window_ms: self.settings.dedupe_window.as_millis() as i64,
            lane_full,
        };
        let mode = msg.mode;
        let accept = self.store_write(StoreWrite::new(move |pool| {
            Box::pin(async move { turns::accept_turn(&pool, turn).await })
        }));
        Box::pin(accept.into_actor(self).map(move |accepted, act, ctx| {
            let result = act.accepted(&key, ticket, mode, waiting, accepted, ctx);
            act.after_change(&key, ctx);
            result
        }))
    }
}

impl SessionQueueActor {
    fn accepted(
        &mut self,
        key: &str,
        ticket: u64,
        mode: QueueMode,
        waiting: usize,
        accepted: Result<Acceptance, StoreError>,
        ctx: &mut Context<Self>,
    ) -> Result<TurnAccepted, QueueError> {
        let remove_ticket = |act: &mut Self| {
            if let Some(lane) = act.lanes.get_mut(key) {
                lane.waiting.retain(|w| w.ticket != ticket);
            }
        };
        match accepted {
            Ok(Acceptance::New(run)) => {
                if mode == QueueMode::Interrupt {
                    self.abort_active(key, None);
                    let dropped = self
                        .lanes
                        .get_mut(key)
                        .map(|l| l.clear_waiting(Some(ticket)))
                        .unwrap_or_default();
                    self.drop_runs(dropped, "superseded by an interrupt", ctx);
                }
                let lane = self.lanes.entry(key.to_string()).or_default();
                if let Some(w) = lane.waiting.iter_mut().find(|w| w.ticket == ticket) {
                    w.run_id = Some(run.id.clone());
                }
                let position = lane.position(ticket);
                Ok(TurnAccepted {
                    run_id: run.id,
                    status: "accepted".into(),
                    accepted_at: run.accepted_at,
                    position,
                    duplicate: false,
                })
            }
            Ok(Acceptance::Duplicate(run)) => {
                remove_ticket(self);
                Ok(TurnAccepted {
                    run_id: run.id,
                    status: run.status,
                    accepted_at: run.accepted_at,
                    position: 0,
                    duplicate: true,
                })
            }
            Ok(Acceptance::Refused) => Err(QueueError::LaneFull {
                session_key: key.to_string(),
                waiting,
                retry_after_ms: 1000,
            }),
            Err(e) => {
                remove_ticket(self);
                Err(QueueError::Store(e.to_string()))
            }
        }
    }
}

impl Handler<TurnEvent> for SessionQueueActor {
    type Result = ();
    fn handle(&mut self, msg: TurnEvent, _: &mut Self::Context) {
        let Some(active) = self
            .lanes
            .get_mut(&msg.session_key)
            .and_then(|l| l.active.as_mut())
        else {
            return;
        };
        if active.run_id != msg.run_id {
            return;
        }
        active.seq += 1;
        let seq = active.seq;
        let ts = now_ms();
        let (run_id, key) = (msg.run_id, msg.session_key);
        match msg.kind {
            TurnEventKind::Started => {
                let payload = json!({ "runId": run_id, "sessionKey": key, "stream": "lifecycle", "data": { "phase": "start" }, "seq": seq, "ts": ts });
                self.broadcast(&key, "agent", payload);
            }
            TurnEventKind::Delta(delta) => {
                active.text.push_str(&delta);
                let agent = json!({ "runId": run_id, "sessionKey": key, "stream": "assistant", "data": { "delta": delta }, "seq": seq, "ts": ts });
                let chat = json!({ "runId": run_id, "sessionKey": key, "state": "delta", "delta": delta, "seq": seq, "ts": ts });
                self.broadcast(&key, "agent", agent);
                self.broadcast(&key, "chat", chat);
            }
            TurnEventKind::Tool(data) => {
                let payload = json!({ "runId": run_id, "sessionKey": key, "stream": "tool", "data": data, "seq": seq, "ts": ts });
                self.broadcast(&key, "agent", payload);
            }
        }
    }
}

impl Handler<WaitRun> for SessionQueueActor {
    type Result = ResponseActFuture<Self, Result<RunSummary, QueueError>>;
    fn handle(&mut self, msg: WaitRun, _: &mut Self::Context) -> Self::Result {
        let id = msg.run_id.clone();
        let lookup = self.store_read(StoreRead::new(move |pool| {
            Box::pin(async move { turns::get_run(&pool, &id).await })
        }));
        let timeout = msg.timeout;
        let run_id = msg.run_id;
        Box::pin(lookup.into_actor(self).then(move |found, act, _| {
            let pending = match found {
                Err(e) => {
                    return futures_util::future::Either::Left(fut::ready(Err(QueueError::Store(
                        e.to_string(),
                    ))));
                }
                Ok(None) => {
                    return futures_util::future::Either::Left(fut::ready(Err(
                        QueueError::UnknownRun(run_id),
                    )));
                }
                Ok(Some(run)) if !matches!(run.status.as_str(), "queued" | "running") => {
                    let summary = RunSummary {
                        run_id: run.id,
                        status: run.status,
                        summary: run.output.unwrap_or_default(),
                        error: run.error,
                    };
                    return futures_util::future::Either::Left(fut::ready(Ok(summary)));
                }
                Ok(Some(run)) => run,
            };
            let (tx, rx) = oneshot::channel();
            act.waiters.entry(pending.id.clone()).or_default().push(tx);
            let wait = async move {
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(summary)) => Ok(summary),
                    _ => Ok(RunSummary {
                        run_id: pending.id,
                        status: "timeout".into(),
                        summary: String::new(),
                        error: None,
                    }),
                }
            };
            futures_util::future::Either::Right(wait.into_actor(act))
        }))
    }
}

impl Handler<AbortTurn> for SessionQueueActor {
    type Result = AbortReport;
    fn handle(&mut self, msg: AbortTurn, ctx: &mut Self::Context) -> AbortReport {
        let key = msg.session_key;
        let mut report = AbortReport::default();
        if let Some(run_id) = self.abort_active(&key, msg.run_id.as_deref()) {
            report.aborted = true;
            report.run_id = Some(run_id);
        } else if let Some(only) = &msg.run_id
            && self.lanes.get_mut(&key).is_some_and(|l| l.remove_run(only))
        {
            report.cleared = 1;
            self.drop_runs(vec![only.clone()], "aborted while queued", ctx);
        }
        if msg.clear_queued {
            let dropped = self
                .lanes
                .get_mut(&key)
                .map(|l| l.clear_waiting(None))
                .unwrap_or_default();
            report.cleared += dropped.len();
            self.drop_runs(dropped, "cleared by chat.abort", ctx);
        }
        self.after_change(&key, ctx);
        report
    }
}

impl Handler<ResetSession> for SessionQueueActor {
    type Result = ResponseActFuture<Self, Result<bool, QueueError>>;
    fn handle(&mut self, msg: ResetSession, ctx: &mut Self::Context) -> Self::Result {
        let key = msg.session_key.clone();
        self.abort_active(&key, None);
        let dropped = self
            .lanes
            .get_mut(&key)
            .map(|l| l.clear_waiting(None))
            .unwrap_or_default();
        self.drop_runs(dropped, "session reset", ctx);
        let delete = msg.delete;
        let write = self.store_write(StoreWrite::new(move |pool| {
            Box::pin(async move { turns::clear_session(&pool, &key, delete).await })
        }));
        Box::pin(
            write
                .into_actor(self)
                .map(|res, _, _| res.map_err(|e| QueueError::Store(e.to_string()))),
        )
    }
}

impl Handler<Subscribe> for SessionQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.subscribe(&msg.session_key, msg.conn_id, msg.recipient);
    }
}

impl Handler<Unsubscribe> for SessionQueueActor {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        for key in self.subscriptions.remove(&msg.conn_id).unwrap_or_default() {
            if let Some(subs) = self.subscribers.get_mut(&key) {
                subs.remove(&msg.conn_id);
                if subs.is_empty() {
                    self.subscribers.remove(&key);
                }
            }
        }
    }
}
