//! The session-queue's message handlers.

use actix::prelude::*;

use tokio::sync::oneshot;

use super::lane::Waiting;
use super::{
    AbortReport, AbortTurn, MAX_IDEMPOTENCY_KEY_BYTES, QueueError, ResetSession, RunSummary,
    SessionQueueActor, SubmitTurn, Subscribe, TurnAccepted, Unsubscribe, WaitRun,
};
use crate::messages::{
    QueueMode, RunEvent, RunStatus, SessionKey, Shutdown, TurnEvent, TurnEventKind,
};

use crate::store::turns::{Acceptance, NewTurn, RunOptions};
use crate::store::{AcceptAndStart, AcceptTurn, ClearSession, GetRun, StoreFailure};

impl Handler<Shutdown> for SessionQueueActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SubmitTurn> for SessionQueueActor {
    type Result = ResponseActFuture<Self, Result<TurnAccepted, QueueError>>;
    fn handle(&mut self, msg: SubmitTurn, _: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.refusal(&msg) {
            return Box::pin(fut::ready(Err(refusal)));
        }
        let key = msg.session_key;
        if let Some((conn_id, recipient)) = msg.subscriber {
            self.subscribe(&key, conn_id, recipient);
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        // A turn for an idle lane is accepted and started in one store operation; its run
        // slot is held meanwhile (so the cap holds), and the lane cannot start anything
        // else before it (its entry is first and not yet accepted).
        let at_once = self.can_start_at_once(&key);
        let context_limit = self.context_limit(&msg.agent_id);
        let lane = self.lanes.entry(key.clone()).or_default();
        let waiting = lane.waiting.len();
        let lane_full = waiting >= self.settings.lane_capacity && msg.mode != QueueMode::Interrupt;
        let at_once = at_once && !lane_full;
        let attachments = msg.options.attachments.clone();
        let options = RunOptions::of(&msg.options);
        if !lane_full {
            lane.waiting.push_back(Waiting {
                ticket,
                run_id: None,
                agent_id: msg.agent_id.clone(),
                input: msg.text.clone(),
                mode: msg.mode,
                options: msg.options,
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
            attachments,
            options,
        };
        let mode = msg.mode;
        if at_once {
            self.active_runs += 1;
            let accept = self.to_store(AcceptAndStart {
                turn,
                context_limit,
            });
            return Box::pin(accept.into_actor(self).map(move |stored, act, ctx| {
                act.active_runs = act.active_runs.saturating_sub(1);
                let (accepted, history) = match stored {
                    Ok((acceptance, history)) => (Ok(acceptance), Some(history)),
                    Err(e) => (Err(e), None),
                };
                let result = act.accepted(&key, ticket, mode, waiting, accepted, ctx);
                if let (Ok(ok), Some(history)) = (&result, history)
                    && !ok.duplicate
                    && ok.status == "accepted"
                {
                    act.start_accepted(&key, ticket, history, ctx);
                }
                act.after_change(&key, ctx);
                result
            }));
        }
        let accept = self.to_store(AcceptTurn { turn });
        Box::pin(accept.into_actor(self).map(move |accepted, act, ctx| {
            let result = act.accepted(&key, ticket, mode, waiting, accepted, ctx);
            act.after_change(&key, ctx);
            result
        }))
    }
}

impl SessionQueueActor {
    /// Why a submission is refused before it is stored, if it is.
    fn refusal(&self, msg: &SubmitTurn) -> Option<QueueError> {
        if self.draining.is_some() {
            return Some(QueueError::Stopping);
        }
        if let Some(key) = &msg.idempotency_key
            && key.len() > MAX_IDEMPOTENCY_KEY_BYTES
        {
            return Some(QueueError::Invalid(format!(
                "idempotencyKey is {} bytes long; the limit is {MAX_IDEMPOTENCY_KEY_BYTES}",
                key.len()
            )));
        }
        let waiting: usize = self.lanes.values().map(|l| l.waiting.len()).sum();
        (waiting >= self.settings.max_waiting && msg.mode != QueueMode::Interrupt).then_some(
            QueueError::QueueFull {
                waiting,
                retry_after_ms: 1000,
            },
        )
    }

    fn accepted(
        &mut self,
        key: &SessionKey,
        ticket: u64,
        mode: QueueMode,
        waiting: usize,
        accepted: Result<Acceptance, StoreFailure>,
        ctx: &mut Context<Self>,
    ) -> Result<TurnAccepted, QueueError> {
        let remove_ticket = |act: &mut Self| {
            if let Some(lane) = act.lanes.get_mut(key) {
                lane.waiting.retain(|w| w.ticket != ticket);
            }
        };
        match accepted {
            Ok(Acceptance::New(run)) => {
                let present = self
                    .lanes
                    .get(key)
                    .is_some_and(|l| l.waiting.iter().any(|w| w.ticket == ticket));
                if !present {
                    // Cleared (chat.abort with clearQueued, a reset, an interrupt) while the
                    // store was accepting it: it is stored, so it must be closed, not forgotten.
                    self.drop_runs(
                        vec![run.id.clone()],
                        "cleared while it was being accepted",
                        ctx,
                    );
                    return Ok(TurnAccepted {
                        run_id: run.id,
                        status: "aborted".into(),
                        accepted_at: run.accepted_at,
                        position: 0,
                        duplicate: false,
                    });
                }
                if mode == QueueMode::Interrupt {
                    self.abort_active(key, None);
                    let dropped = self
                        .lanes
                        .get_mut(key)
                        .map(|l| l.clear_before(ticket))
                        .unwrap_or_default();
                    self.drop_runs(dropped, "superseded by an interrupt", ctx);
                }
                let lane = self.lanes.entry(key.clone()).or_default();
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
                // A retry of a turn stored as queued that no lane holds (its first reply was
                // lost mid-restart): put it back in line rather than leave it stranded.
                if run.status == "queued" && !self.knows_run(&run.id) {
                    self.requeue(run.clone());
                }
                Ok(TurnAccepted {
                    run_id: run.id,
                    status: run.status,
                    accepted_at: run.accepted_at,
                    position: 0,
                    duplicate: true,
                })
            }
            Ok(Acceptance::Refused) => Err(QueueError::LaneFull {
                session_key: key.clone(),
                waiting,
                retry_after_ms: 1000,
            }),
            Err(e) => {
                remove_ticket(self);
                Err(QueueError::Store(e))
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
        let event = match msg.kind {
            TurnEventKind::Delta(delta) => RunEvent::Delta(delta.into()),
            TurnEventKind::Tool(data) => RunEvent::Tool(std::sync::Arc::new(data)),
        };
        self.deliver(&msg.session_key, &msg.run_id, seq, event);
    }
}

impl Handler<WaitRun> for SessionQueueActor {
    type Result = ResponseActFuture<Self, Result<RunSummary, QueueError>>;
    fn handle(&mut self, msg: WaitRun, _: &mut Self::Context) -> Self::Result {
        // Register first, read second: a run that ends in between still reaches this waiter.
        let (tx, rx) = oneshot::channel();
        let waiters = self.waiters.entry(msg.run_id.clone()).or_default();
        waiters.retain(|w| !w.is_closed());
        waiters.push(tx);
        if self.knows_run(&msg.run_id) {
            // Queued or running here: no need to ask the store (which may be restarting).
            let (timeout, run_id) = (msg.timeout, msg.run_id);
            let wait = async move {
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(summary)) => Ok(summary),
                    _ => Ok(RunSummary {
                        run_id,
                        status: RunStatus::Timeout,
                        summary: String::new(),
                        error: None,
                        attachments: Vec::new(),
                    }),
                }
            };
            return Box::pin(wait.into_actor(self));
        }
        let lookup = self.to_store(GetRun {
            run_id: msg.run_id.clone(),
        });
        let (timeout, run_id) = (msg.timeout, msg.run_id);
        Box::pin(lookup.into_actor(self).then(move |found, act, _| {
            let mut done = |result| {
                if let Some(list) = act.waiters.get_mut(&run_id) {
                    list.retain(|w| !w.is_closed());
                    if list.is_empty() {
                        act.waiters.remove(&run_id);
                    }
                }
                futures_util::future::Either::Left(fut::ready(result))
            };
            match found {
                Err(e) => {
                    drop(rx);
                    return done(Err(QueueError::Store(e)));
                }
                Ok(None) => {
                    drop(rx);
                    return done(Err(QueueError::UnknownRun(run_id.clone())));
                }
                Ok(Some(run)) if !matches!(run.status.as_str(), "queued" | "running") => {
                    drop(rx);
                    // A stored name this version does not know reads as a failed run.
                    let status = RunStatus::from_name(&run.status).unwrap_or(RunStatus::Error);
                    let summary = RunSummary {
                        run_id: run.id,
                        status,
                        summary: run.output.unwrap_or_default(),
                        error: run.error,
                        attachments: run.attachments,
                    };
                    return done(Ok(summary));
                }
                Ok(Some(_)) => {}
            }
            let pending = run_id.clone();
            let wait = async move {
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(summary)) => Ok(summary),
                    _ => Ok(RunSummary {
                        run_id: pending,
                        status: RunStatus::Timeout,
                        summary: String::new(),
                        error: None,
                        attachments: Vec::new(),
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
        if let Some(run_id) = self.abort_active(&key, msg.run_id.as_ref()) {
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
        if let Some(conn_id) = &msg.unsubscribe {
            self.unsubscribe_one(&key, conn_id);
        }
        self.abort_active(&key, None);
        let dropped = self
            .lanes
            .get_mut(&key)
            .map(|l| l.clear_waiting(None))
            .unwrap_or_default();
        self.drop_runs(dropped, "session reset", ctx);
        let write = self.to_store(ClearSession {
            session_key: key,
            delete: msg.delete,
        });
        Box::pin(
            write
                .into_actor(self)
                .map(|res, _, _| res.map_err(QueueError::Store)),
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
