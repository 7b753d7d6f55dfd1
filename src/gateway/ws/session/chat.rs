//! The session and turn methods: `chat.send`, `agent` (two responses), `agent.wait`,
//! `chat.history`, `chat.abort`, `sessions.list|reset|delete`, and the events they stream.

use std::time::Duration;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::WsSessionActor;
use super::methods::parse;
use super::queue_link::PendingSubmit;
use super::session_params::{
    AbortParams, HistoryParams, ListParams, ModelsListParams, SessionParams,
};
use super::turn_params::{AgentParams, ChatSendParams};
use crate::gateway::turns::{
    self as shared, EdgeError, accepted_payload, transcript_json, usage_since,
};
use crate::gateway::ws::protocol::{ErrorShape, Scope};
use troupe_actors::messages::{QueueMode, RunEvent, RunId, SessionEvent, TurnOptions};
use troupe_actors::session_key::ResolvedKey;
use troupe_actors::session_queue::{
    AbortTurn, QueueError, ResetSession, RunSummary, SubmitTurn, Subscribe, TurnAccepted,
    Unsubscribe, WaitRun,
};
use troupe_actors::store::{History, ListSessions, StoreActor, StoreOp, UsageReport, turns};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WaitParams {
    run_id: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UsageParams {
    #[serde(default)]
    days: Option<u32>,
}

/// The `retryAfterMs` of a request refused because its connection follows as many
/// sessions as it may (a slot frees only when the client resets or deletes one).
const SUBSCRIPTION_RETRY_MS: u64 = 1000;

/// Maps a queue refusal to the protocol's error.
pub fn queue_error(err: QueueError) -> ErrorShape {
    ErrorShape::from(EdgeError::from(err))
}

/// The WS rendering of the edges' shared error: finer causes in `details.code`, and how
/// long to wait before retrying what is only restarting.
impl From<EdgeError> for ErrorShape {
    fn from(err: EdgeError) -> Self {
        let message = err.to_string();
        match err {
            EdgeError::Restarting(_) => ErrorShape::unavailable(message, 200),
            EdgeError::BadSessionKey(_) => {
                ErrorShape::invalid(message).with_detail("INVALID_SESSION_KEY")
            }
            EdgeError::Store(_) => {
                ErrorShape::unavailable(message, 500).with_detail("STORE_UNAVAILABLE")
            }
            EdgeError::Internal(_) => {
                ErrorShape::new("UNAVAILABLE", message).with_detail("INTERNAL")
            }
            EdgeError::Queue(err) => match err {
                QueueError::LaneFull { retry_after_ms, .. } => {
                    ErrorShape::unavailable(message, retry_after_ms).with_detail("LANE_FULL")
                }
                // Lifted to `EdgeError::Store` by `From<QueueError>`; kept for a direct build.
                QueueError::Store(_) => {
                    ErrorShape::unavailable(message, 500).with_detail("STORE_UNAVAILABLE")
                }
                QueueError::UnknownRun(_) => ErrorShape::invalid(message).with_detail("NOT_FOUND"),
                QueueError::QueueFull { retry_after_ms, .. } => {
                    ErrorShape::unavailable(message, retry_after_ms).with_detail("QUEUE_FULL")
                }
                QueueError::Invalid(_) => {
                    ErrorShape::invalid(message).with_detail("INVALID_PARAMS")
                }
                QueueError::Stopping => {
                    ErrorShape::unavailable(message, 5000).with_detail("GATEWAY_STOPPING")
                }
            },
        }
    }
}

/// A run's end as `agent` (final) and `agent.wait` answer it: Troupe's `{runId, status,
/// summary, error?, attachments?}` plus OpenClaw's `result.payloads` (what `openclaw agent`
/// prints; files as `mediaUrls`).
pub(super) fn run_result(summary: &RunSummary) -> Value {
    let mut payload = json!(summary);
    let mut payloads: Vec<Value> = if summary.summary.is_empty() {
        Vec::new()
    } else {
        vec![json!({ "text": summary.summary })]
    };
    if !summary.attachments.is_empty() {
        // OpenClaw's reply payload names files in `mediaUrls` (local paths allowed).
        let media: Vec<&str> = summary
            .attachments
            .iter()
            .map(|a| a.path.as_str())
            .collect();
        match payloads.first_mut() {
            Some(first) => first["mediaUrls"] = json!(media),
            None => payloads.push(json!({ "mediaUrls": media })),
        }
    }
    payload["result"] = json!({ "payloads": payloads });
    if let (true, Some(error)) = (summary.summary.is_empty(), &summary.error) {
        payload["summary"] = json!(error);
    }
    payload
}

/// The answer when a part of the gateway is restarting.
pub(super) fn unavailable(what: &'static str) -> ErrorShape {
    EdgeError::Restarting(what).into()
}

impl WsSessionActor {
    fn agent_ids(&self) -> Vec<String> {
        shared::agent_ids(&self.gateway)
    }

    /// The provider of an agent (for checking a `provider` override).
    fn provider_of(&self, agent_id: &str) -> String {
        self.gateway
            .settings
            .agents
            .list()
            .iter()
            .find(|a| a.id == agent_id)
            .map(|a| a.provider.clone())
            .unwrap_or_default()
    }

    /// The scope this connection was granted.
    fn scope(&self) -> Scope {
        match self.phase {
            super::Phase::Connected { scope } => scope,
            _ => Scope::Read,
        }
    }

    /// Validates a session key into its full form and its agent.
    fn check_key(&self, key: &str) -> Result<ResolvedKey, ErrorShape> {
        Ok(shared::resolve_key(&self.gateway, key)?)
    }

    /// Runs a store read and answers the request with `render` of its result.
    fn read_store<O: StoreOp>(
        &mut self,
        id: String,
        op: O,
        ctx: &mut Context<Self>,
        render: impl FnOnce(O::Output) -> Value + 'static,
    ) where
        StoreActor: Handler<O>,
    {
        let gateway = self.gateway.clone();
        let read = async move {
            shared::read(&gateway, op)
                .await
                .map(render)
                .map_err(ErrorShape::from)
        };
        ctx.spawn(
            read.into_actor(self)
                .map(move |res, act, ctx| act.respond(id, res, ctx)),
        );
    }

    pub(super) fn on_chat_method(
        &mut self,
        id: String,
        method: &str,
        params: Option<Value>,
        ctx: &mut Context<Self>,
    ) {
        let result = match method {
            "chat.send" => parse::<ChatSendParams>(method, params).and_then(|p| {
                let ResolvedKey { key, agent } = self.check_key(&p.session_key)?;
                if p.agent_id.as_ref().is_some_and(|a| *a != agent) {
                    return Err(ErrorShape::invalid(format!(
                        "agentId {:?} does not own session {:?}",
                        p.agent_id.unwrap_or_default(),
                        p.session_key
                    )));
                }
                self.may_follow(&key)?;
                let options = p.options(&self.gateway.edge.state_dir)?;
                self.submit(
                    id.clone(),
                    key,
                    agent,
                    p.message,
                    p.idempotency_key,
                    p.queue_mode,
                    options,
                    false,
                    ctx,
                );
                Ok(())
            }),
            "agent" => parse::<AgentParams>(method, params).and_then(|p| {
                let agent_id = p
                    .agent_id
                    .clone()
                    .or_else(|| self.agent_ids().first().cloned())
                    .unwrap_or_else(|| "main".into());
                let key = p
                    .session_key
                    .clone()
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| format!("agent:{agent_id}:main"));
                let ResolvedKey { key, agent: owner } = self.check_key(&key)?;
                if p.agent_id.as_ref().is_some_and(|a| *a != owner) {
                    return Err(ErrorShape::invalid(format!(
                        "agentId {agent_id:?} does not own session {key:?}"
                    )));
                }
                self.may_follow(&key)?;
                let options = p.options(
                    &self.provider_of(&owner),
                    self.scope() >= Scope::Admin,
                    &self.gateway.edge.state_dir,
                )?;
                self.submit(
                    id.clone(),
                    key,
                    owner,
                    p.message,
                    p.idempotency_key,
                    QueueMode::Followup,
                    options,
                    true,
                    ctx,
                );
                Ok(())
            }),
            "agent.wait" => parse::<WaitParams>(method, params).map(|p| {
                let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(30_000).min(600_000));
                self.wait_run(id.clone(), p.run_id, timeout, 0, ctx);
            }),
            "chat.history" => parse::<HistoryParams>(method, params).and_then(|mut p| {
                p.session_key = self.check_key(&p.session_key)?.key;
                self.may_follow(&p.session_key)?;
                self.subscribe_to(&p.session_key, ctx);
                let page = turns::HistoryPage::new(i64::from(p.limit.unwrap_or(100).clamp(1, 1000)), p.before);
                let op = History {
                    session_key: p.session_key.as_str().into(),
                    page,
                };
                let key = p.session_key;
                self.read_store(id.clone(), op, ctx, move |page| transcript_json(&key, page));
                Ok(())
            }),
            "sessions.list" => parse::<ListParams>(method, params).map(|p| {
                let limit = i64::from(p.limit.unwrap_or(100).clamp(1, 1000));
                let op = ListSessions { limit };
                self.read_store(
                    id.clone(),
                    op,
                    ctx,
                    |sessions| json!({ "sessions": sessions }),
                );
            }),
            "usage.status" => parse::<UsageParams>(method, params).map(|p| {
                let since = usage_since(p.days);
                let op = UsageReport { since_ms: since };
                self.read_store(id.clone(), op, ctx, move |report| json!({ "sinceMs": since, "usage": report }));
            }),
            "models.list" => parse::<ModelsListParams>(method, params).map(|p| {
                let models: Vec<Value> = self
                    .gateway
                    .settings
                    .agents
                    .list()
                    .iter()
                    .filter(|a| p.agent_id.as_ref().is_none_or(|id| *id == a.id))
                    .filter(|a| p.provider.as_ref().is_none_or(|pr| *pr == a.provider))
                    .take(p.limit.unwrap_or(u32::MAX) as usize)
                    // A model here is an agent; name, input, available and local are the
                    // fields OpenClaw's model catalog rows have (`openclaw models list`).
                    .map(|a| json!({
                        "id": a.id, "agentId": a.id, "provider": a.provider, "model": a.model, "realModel": a.real_model,
                        "name": format!("{} (agent {})", a.model, a.id), "input": ["text"], "available": true,
                        "local": !a.real_model,
                    }))
                    .collect();
                self.respond(id.clone(), Ok(json!({ "models": models })), ctx);
            }),
            "chat.abort" => parse::<AbortParams>(method, params).and_then(|p| {
                let abort = AbortTurn {
                    session_key: self.check_key(&p.session_key)?.key.into(),
                    run_id: p.run_id.map(RunId::from),
                    clear_queued: p.clear_queued,
                };
                let id = id.clone();
                self.with_queue(Box::new(move |act, queue, ctx| {
                    let Some(queue) = queue else {
                        return act.respond(id, Err(unavailable("the session queue")), ctx);
                    };
                    ctx.spawn(queue.send(abort).into_actor(act).map(move |res, act, ctx| {
                        let result = res
                            .map(|r| json!(r))
                            .map_err(|_| unavailable("the session queue"));
                        act.respond(id, result, ctx);
                    }));
                }), ctx);
                Ok(())
            }),
            "sessions.reset" | "sessions.delete" => parse::<SessionParams>(method, params)
                .and_then(|p| {
                    let key = self.check_key(&p.session_key)?.key;
                    let delete = method == "sessions.delete";
                    let id = id.clone();
                    // This connection stops following the session (a slot of its
                    // subscription limit is free from the next request on); the queue
                    // drops it in the same message, so a later request that follows the
                    // session again reaches the queue after it.
                    self.link_q.subscribed.remove(&key);
                    let conn_id = self.conn_id.clone();
                    self.with_queue(Box::new(move |act, queue, ctx| {
                        let Some(queue) = queue else {
                            return act.respond(id, Err(unavailable("the session queue")), ctx);
                        };
                        let reset = ResetSession {
                            session_key: key.as_str().into(),
                            delete,
                            unsubscribe: Some(conn_id),
                        };
                        ctx.spawn(queue.send(reset).into_actor(act).map(move |res, act, ctx| {
                            let result = match res {
                                Ok(Ok(existed)) => {
                                    Ok(json!({ "sessionKey": key, "ok": true, "existed": existed }))
                                }
                                Ok(Err(e)) => Err(queue_error(e)),
                                Err(_) => Err(unavailable("the session queue")),
                            };
                            act.respond(id, result, ctx);
                        }));
                    }), ctx);
                    Ok(())
                }),
            _ => Err(ErrorShape::invalid(format!(
                "method {method:?} is not implemented"
            ))),
        };
        if let Err(error) = result {
            self.respond(id, Err(error), ctx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        id: String,
        session_key: String,
        agent_id: String,
        text: String,
        idempotency_key: String,
        mode: QueueMode,
        options: TurnOptions,
        two_stage: bool,
        ctx: &mut Context<Self>,
    ) {
        self.link_q.subscribed.insert(session_key.clone());
        let submit = SubmitTurn {
            session_key: session_key.into(),
            agent_id: agent_id.into(),
            text,
            idempotency_key: Some(idempotency_key),
            mode,
            subscriber: Some((self.conn_id.clone(), ctx.address().recipient())),
            options,
        };
        self.submit_turn(id, submit, two_stage, ctx);
    }

    /// The queue answered a submission.
    pub(super) fn on_submitted(
        &mut self,
        entry: PendingSubmit,
        result: Result<TurnAccepted, QueueError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(accepted) if entry.two_stage => {
                self.respond_interim(entry.id.clone(), accepted_payload(&accepted), ctx);
                self.wait_run(
                    entry.id,
                    accepted.run_id.0,
                    Duration::from_secs(3600),
                    0,
                    ctx,
                );
            }
            Ok(accepted) => self.respond(entry.id, Ok(accepted_payload(&accepted)), ctx),
            Err(e) => self.respond(entry.id, Err(queue_error(e)), ctx),
        }
    }

    /// Answers with the run's end; a queue that dies meanwhile is waited on again after
    /// its restart (the run is in the store), so the caller gets the real outcome.
    fn wait_run(
        &mut self,
        id: String,
        run_id: String,
        timeout: Duration,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) {
        self.with_queue(
            Box::new(move |act, queue, ctx| {
                let Some(queue) = queue else {
                    return act.respond(id, Err(unavailable("the session queue")), ctx);
                };
                let wait = WaitRun {
                    run_id: run_id.as_str().into(),
                    timeout,
                };
                act.awaiting
                    .entry(run_id.clone())
                    .or_default()
                    .insert(id.clone());
                ctx.spawn(queue.send(wait).into_actor(act).map(move |res, act, ctx| {
                    if !act.stop_awaiting(&run_id, &id) {
                        return; // answered from the run's end event
                    }
                    match res {
                        Ok(Ok(summary)) => act.respond(id, Ok(run_result(&summary)), ctx),
                        Ok(Err(e)) => act.respond(id, Err(queue_error(e)), ctx),
                        Err(_) if attempt < 20 => {
                            act.queue_lost(ctx);
                            act.wait_run(id, run_id, timeout, attempt + 1, ctx);
                        }
                        Err(_) => act.respond(id, Err(unavailable("the session queue")), ctx),
                    }
                }));
            }),
            ctx,
        );
    }

    /// Forgets that request `id` waits for `run_id`; false if it was answered already.
    fn stop_awaiting(&mut self, run_id: &str, id: &str) -> bool {
        let Some(ids) = self.awaiting.get_mut(run_id) else {
            return false;
        };
        let was = ids.remove(id);
        if ids.is_empty() {
            self.awaiting.remove(run_id);
        }
        was
    }

    /// Whether this connection may follow `session_key`: it follows it already, or fewer
    /// than `sessions.max_subscriptions_per_connection` sessions. If not, the request is
    /// refused `UNAVAILABLE` (`TOO_MANY_SUBSCRIPTIONS`, retryable) when it is read, before
    /// it runs: it never reaches the queue or the store, so the refusal reorders nothing,
    /// and a `chat.send` / `agent` refused here stores nothing. `sessions.reset|delete`
    /// (of a session it follows) or a new connection frees a slot.
    fn may_follow(&self, session_key: &str) -> Result<(), ErrorShape> {
        let limit = self.gateway.edge.max_subscriptions;
        let followed = &self.link_q.subscribed;
        if followed.len() < limit || followed.contains(session_key) {
            return Ok(());
        }
        Err(ErrorShape::unavailable(
            format!(
                "this connection follows {} sessions, the limit \
                 (sessions.max_subscriptions_per_connection); it cannot follow {session_key:?} \
                 until sessions.reset or sessions.delete frees one, or use another connection",
                followed.len()
            ),
            SUBSCRIPTION_RETRY_MS,
        )
        .with_detail("TOO_MANY_SUBSCRIPTIONS"))
    }

    fn subscribe_to(&mut self, session_key: &str, ctx: &mut Context<Self>) {
        self.link_q.subscribed.insert(session_key.to_string());
        let subscribe = Subscribe {
            session_key: session_key.into(),
            conn_id: self.conn_id.clone(),
            recipient: ctx.address().recipient(),
        };
        self.with_queue(
            Box::new(move |_, queue, _| {
                if let Some(queue) = queue {
                    let _ = queue.try_send(subscribe);
                }
            }),
            ctx,
        );
    }

    pub(super) fn unsubscribe_all(&mut self) {
        if let Some(queue) = self.link_q.addr() {
            let _ = queue.try_send(Unsubscribe {
                conn_id: self.conn_id.clone(),
            });
        }
    }
}

impl Handler<SessionEvent> for WsSessionActor {
    type Result = ();
    fn handle(&mut self, msg: SessionEvent, ctx: &mut Self::Context) {
        self.on_session_event(msg, ctx);
    }
}

impl WsSessionActor {
    /// Writes a run event's frames, and answers the requests that waited for its end.
    pub(super) fn show_event(&mut self, msg: SessionEvent, ctx: &mut Context<Self>) {
        if matches!(self.phase, super::Phase::Connected { .. }) {
            // Events lost to a full mailbox leave a gap in `seq`: the client refreshes.
            self.seq += msg.missed;
            for (event, payload) in super::frames::rendered(&msg).iter() {
                self.event_serialized(event, payload, ctx);
            }
            // Requests waiting for this run are answered now, in event order (before a
            // stop that may follow in the mailbox), not when the queue's reply arrives.
            if let RunEvent::Ended(ended) = &msg.event {
                for id in self
                    .awaiting
                    .remove(ended.run_id.as_str())
                    .unwrap_or_default()
                {
                    self.respond(id, Ok(run_result(ended)), ctx);
                }
            }
        }
    }
}
