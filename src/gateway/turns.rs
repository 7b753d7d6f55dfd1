//! The one layer the edges (WS, REST, the OpenAI API, webhooks) share to reach sessions:
//! resolve a session key, submit a turn, wait for a run, read the store, and the JSON of
//! an accepted turn and of a transcript page. Failures are one typed [`EdgeError`]; each
//! edge renders it in its own protocol (an OpenClaw error frame, an `ApiError`, an OpenAI
//! error body), in one `From` impl per edge.

use std::time::Duration;

use actix::{Addr, Handler};
use serde_json::{Value, json};
use troupe_actors::messages::RunId;
use troupe_actors::session_key::{ResolvedKey, resolve};
use troupe_actors::session_queue::{
    QueueError, RunSummary, SessionQueueActor, SubmitTurn, TurnAccepted, WaitRun,
};
use troupe_actors::store::{StoreActor, StoreFailure, StoreOp, turns};
use troupe_actors::supervisor::LookupError;

use super::Gateway;

/// Why an edge could not do what a client asked, before protocol rendering.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A part of the tree is restarting (the string names it: "the session queue").
    #[error("{0} is restarting; retry")]
    Restarting(&'static str),
    /// The session key is not valid (the reason says why).
    #[error("{0}")]
    BadSessionKey(String),
    /// The session queue refused the request (a store failure behind it is [`Self::Store`]).
    #[error(transparent)]
    Queue(QueueError),
    /// The store failed the operation or is restarting (which operation, and why).
    #[error(transparent)]
    Store(StoreFailure),
    /// A bug inside the gateway (e.g. a registry lookup for the wrong actor type).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<QueueError> for EdgeError {
    /// A store failure reported by the queue is a store failure for every edge.
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Store(failure) => Self::from(failure),
            other => Self::Queue(other),
        }
    }
}

impl From<StoreFailure> for EdgeError {
    /// A registry lookup of the store for the wrong type is a bug, not a restart.
    fn from(failure: StoreFailure) -> Self {
        if failure.is_internal() {
            Self::Internal(failure.to_string())
        } else {
            Self::Store(failure)
        }
    }
}

impl EdgeError {
    /// A failed registry lookup of `what`: restarting, unless it is a bug (wrong type).
    pub fn not_found(what: &'static str, err: LookupError) -> Self {
        match err {
            LookupError::WrongType { .. } => EdgeError::Internal(err.to_string()),
            _ => EdgeError::Restarting(what),
        }
    }
}

/// The ids of the configured agents, in configuration order.
pub fn agent_ids(gateway: &Gateway) -> Vec<String> {
    gateway
        .settings
        .agents
        .list()
        .iter()
        .map(|a| a.id.clone())
        .collect()
}

/// Validates a session key into its full form and the agent that owns it.
pub fn resolve_key(gateway: &Gateway, key: &str) -> Result<ResolvedKey, EdgeError> {
    resolve(key, &agent_ids(gateway)).map_err(EdgeError::BadSessionKey)
}

/// The session queue's current address.
pub async fn queue(gateway: &Gateway) -> Result<Addr<SessionQueueActor>, EdgeError> {
    gateway
        .lookup::<SessionQueueActor>("session-queue")
        .await
        .map_err(|e| EdgeError::not_found("the session queue", e))
}

/// Submits a turn to the session queue; answers once it is stored and accepted.
pub async fn submit(gateway: &Gateway, turn: SubmitTurn) -> Result<TurnAccepted, EdgeError> {
    submit_to(&queue(gateway).await?, turn).await
}

/// Submits a turn to a queue the caller already holds.
pub async fn submit_to(
    queue: &Addr<SessionQueueActor>,
    turn: SubmitTurn,
) -> Result<TurnAccepted, EdgeError> {
    Ok(queue
        .send(turn)
        .await
        .map_err(|_| EdgeError::Restarting("the session queue"))??)
}

/// Waits up to `timeout` for a run's end (status `timeout` when it has not ended).
pub async fn wait_run(
    gateway: &Gateway,
    run_id: impl Into<RunId>,
    timeout: Duration,
) -> Result<RunSummary, EdgeError> {
    let run_id = run_id.into();
    Ok(queue(gateway)
        .await?
        .send(WaitRun { run_id, timeout })
        .await
        .map_err(|_| EdgeError::Restarting("the session queue"))??)
}

/// Runs one typed store operation (a read: history, sessions, usage).
pub async fn read<O: StoreOp>(gateway: &Gateway, op: O) -> Result<O::Output, EdgeError>
where
    StoreActor: Handler<O>,
{
    let store = gateway
        .lookup::<StoreActor>("store")
        .await
        .map_err(StoreFailure::lookup::<O>)?;
    Ok(StoreFailure::answer::<O>(store.send(op).await)?)
}

/// The agent list as `agents.list` and `GET /api/agents` answer it: `defaultId`, `mainKey`
/// and `scope` as OpenClaw's `AgentsListResult` has them (its CLI picks the agent, and
/// the session `agent:<id>:main`, from them).
pub fn agents_list_json(gateway: &Gateway) -> Value {
    let agents = gateway.settings.agents.list();
    let default_id = agents.first().map(|a| a.id.as_str()).unwrap_or("main");
    json!({
        "agents": &*agents, "defaultId": default_id, "mainKey": "main", "scope": "per-sender",
    })
}

/// Clears a session's transcript (`delete`: the session too) through the session queue,
/// as `sessions.reset` / `sessions.delete` and their REST routes do.
pub async fn reset_session(
    gateway: &Gateway,
    session_key: String,
    delete: bool,
) -> Result<Value, EdgeError> {
    let reset = troupe_actors::session_queue::ResetSession {
        session_key: session_key.as_str().into(),
        delete,
        unsubscribe: None,
    };
    let existed = queue(gateway)
        .await?
        .send(reset)
        .await
        .map_err(|_| EdgeError::Restarting("the session queue"))??;
    Ok(json!({ "sessionKey": session_key, "ok": true, "existed": existed }))
}

/// The `accepted` answer of a submitted turn (WS `agent` / `chat.send`, REST `POST`).
pub fn accepted_payload(a: &TurnAccepted) -> Value {
    json!({
        "runId": a.run_id, "status": "accepted", "runStatus": a.status, "acceptedAt": a.accepted_at,
        "queued": { "position": a.position }, "duplicate": a.duplicate,
    })
}

/// A transcript page as `chat.history` and `GET /api/sessions/{key}/messages` answer it.
pub fn transcript_json(session_key: &str, page: turns::Transcript) -> Value {
    json!({
        "sessionKey": session_key, "messages": page.messages,
        "hasMore": page.has_more, "nextBefore": page.next_before,
    })
}

/// The start of the usage window: the last `days` days (default 30).
pub fn usage_since(days: Option<u32>) -> i64 {
    let days = i64::from(days.unwrap_or(30).clamp(1, 3650));
    troupe_actors::now_ms() as i64 - days * 86_400_000
}
