//! The session-queue's messages and settings: what clients, channels and tools send it.

use std::time::Duration;

use actix::prelude::*;

use crate::messages::{AgentId, QueueMode, RunId, SessionEvent, SessionKey, TurnOptions};
use crate::store::StoreFailure;

/// Limits of the queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Runs in progress across all sessions.
    pub max_concurrent: usize,
    /// Turns that may wait in one session's lane.
    pub lane_capacity: usize,
    /// Turns that may wait across all sessions.
    pub max_waiting: usize,
    /// How long an idempotency key is remembered.
    pub dedupe_window: Duration,
    /// Transcript messages given to the agent as context.
    pub history_limit: usize,
    /// Agents whose provider ignores the transcript (echo): no history is read for them.
    pub stateless_agents: std::collections::HashSet<String>,
    /// Sessions one client connection may follow at once. The WS edge refuses the request
    /// that would pass it (it knows the sessions its connection follows); the queue never
    /// holds more for one connection either way.
    pub max_subscriptions: usize,
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Why a submission was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The session's lane is full; retry later.
    #[error("session {session_key} has {waiting} turns waiting (the limit); retry later")]
    LaneFull {
        /// Session.
        session_key: SessionKey,
        /// Waiting turns.
        waiting: usize,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The store failed or is restarting; nothing was accepted.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// No such run.
    #[error("no run with id {:?}", .0.as_str())]
    UnknownRun(RunId),
    /// Too many turns wait across all sessions; retry later.
    #[error("{waiting} turns are waiting across all sessions (the limit); retry later")]
    QueueFull {
        /// Waiting turns.
        waiting: usize,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The submission itself is wrong (not retryable).
    #[error("{0}")]
    Invalid(String),
    /// The gateway is stopping: nothing new is accepted (retry once it is back).
    #[error("the gateway is stopping; retry once it has restarted")]
    Stopping,
}

/// A client submits a turn (WS `chat.send`, `agent`; REST; channels later).
#[derive(Message, Clone)]
#[rtype(result = "Result<TurnAccepted, QueueError>")]
pub struct SubmitTurn {
    /// Session key.
    pub session_key: SessionKey,
    /// Agent to run it.
    pub agent_id: AgentId,
    /// The user's message.
    pub text: String,
    /// Dedupe key.
    pub idempotency_key: Option<String>,
    /// Queue mode.
    pub mode: QueueMode,
    /// Subscribe this client to the session's events.
    pub subscriber: Option<(String, Recipient<SessionEvent>)>,
    /// Per-turn settings (timeout, extra system prompt, model override).
    pub options: TurnOptions,
}

/// The `accepted` acknowledgement.
#[derive(Debug, Clone)]
pub struct TurnAccepted {
    /// Run id.
    pub run_id: RunId,
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
    pub run_id: RunId,
    /// Give up after this long (answers `timeout`).
    pub timeout: Duration,
}

/// A finished (or still pending, on timeout) run.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run id.
    pub run_id: RunId,
    /// How it ended (`timeout`: still pending when the wait gave up).
    pub status: crate::messages::RunStatus,
    /// The reply.
    pub summary: String,
    /// The error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files the reply sends (its `[IMAGE:]` / `[FILE:]` markers), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::attachments::AttachmentRef>,
}

/// Aborts the active run of a session (and optionally drops the waiting ones).
#[derive(Message)]
#[rtype(result = "AbortReport")]
pub struct AbortTurn {
    /// Session.
    pub session_key: SessionKey,
    /// Only this run (active or waiting).
    pub run_id: Option<RunId>,
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
    pub run_id: Option<RunId>,
    /// Waiting turns dropped.
    pub cleared: usize,
}

/// Clears (or deletes) a session, aborting its work first.
#[derive(Message)]
#[rtype(result = "Result<bool, QueueError>")]
pub struct ResetSession {
    /// Session.
    pub session_key: SessionKey,
    /// Delete the session itself too.
    pub delete: bool,
    /// The client connection that asked (WS): it stops following the session, which frees
    /// one of its subscriptions. Other connections keep following it.
    pub unsubscribe: Option<String>,
}

/// Subscribes a client to a session's events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// Session.
    pub session_key: SessionKey,
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

/// Graceful stop, first step: accept nothing new, start nothing new (waiting turns stay
/// queued in the store), let running turns finish within `grace`, then abort the rest and
/// wait for their ends to be stored.
#[derive(Message)]
#[rtype(result = "DrainReport")]
pub struct DrainRuns {
    /// How long running turns may take to finish.
    pub grace: Duration,
}

/// What [`DrainRuns`] did.
#[derive(Debug, Clone, Default, MessageResponse)]
pub struct DrainReport {
    /// Runs that were running when the drain began.
    pub running: usize,
    /// Of those, aborted at the end of the grace period.
    pub aborted: usize,
    /// Turns left queued in the store for the next start.
    pub queued: usize,
}
