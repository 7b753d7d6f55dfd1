//! What a fire does once decided: the turn in the job's session (submitted with an
//! idempotency key from the job and its scheduled time, so a retry never runs it twice),
//! awaited to its end, and the delivery of its reply. Failures are [`FireError`]s.

use std::time::Duration;

use actix::prelude::*;

use crate::messages::{AgentId, QueueMode, RunId, RunStatus, SessionKey};
use crate::session_queue::{RunSummary, SessionQueueActor, SubmitTurn, WaitRun};
use crate::supervisor::SupervisorActor;

use super::error::FireError;
use super::links::Link;

/// How long one `WaitRun` waits before asking again (a long turn is fine).
const WAIT_SLICE: Duration = Duration::from_secs(300);

/// Attempts while the session's lane or the queue is full.
const FULL_ATTEMPTS: u32 = 20;

/// A turn to run for a job or a heartbeat.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Session key.
    pub session_key: SessionKey,
    /// Agent.
    pub agent_id: AgentId,
    /// Message.
    pub text: String,
    /// Dedupe key.
    pub idempotency_key: String,
}

/// Submits a turn and waits for its end; `on_accepted` gets its run id first.
pub async fn run_turn(
    root: &Addr<SupervisorActor>,
    turn: Turn,
    on_accepted: impl FnOnce(&RunId),
) -> Result<RunSummary, FireError> {
    run_turn_on(&Link::new(root.clone(), "session-queue"), turn, on_accepted).await
}

/// [`run_turn`] through a cached session-queue address (looked up again when a send fails).
/// A submission refused for a full lane or queue is tried again (see
/// [`FireError::retry_after`]) up to [`FULL_ATTEMPTS`] times; any other failure is final.
pub async fn run_turn_on(
    queue_link: &Link<SessionQueueActor>,
    turn: Turn,
    on_accepted: impl FnOnce(&RunId),
) -> Result<RunSummary, FireError> {
    let mut attempt = 0;
    let accepted = loop {
        let queue = queue_link.get().await.map_err(FireError::QueueLookup)?;
        let submit = SubmitTurn {
            session_key: turn.session_key.clone(),
            agent_id: turn.agent_id.clone(),
            text: turn.text.clone(),
            idempotency_key: Some(turn.idempotency_key.clone()),
            mode: QueueMode::Followup,
            subscriber: None,
            options: Default::default(),
        };
        let refused = match queue.send(submit).await {
            Ok(Ok(accepted)) => break accepted,
            Ok(Err(e)) => FireError::from(e),
            Err(e) => {
                queue_link.forget();
                return Err(FireError::QueueGone(e));
            }
        };
        match refused.retry_after() {
            Some(wait) if attempt < FULL_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
            _ => return Err(refused),
        }
    };
    on_accepted(&accepted.run_id);
    loop {
        let queue = queue_link.get().await.map_err(FireError::QueueLookup)?;
        let wait = WaitRun {
            run_id: accepted.run_id.clone(),
            timeout: WAIT_SLICE,
        };
        match queue.send(wait).await {
            Ok(Ok(summary)) if summary.status == RunStatus::Timeout => continue,
            Ok(Ok(summary)) => return Ok(summary),
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => {
                queue_link.forget();
                return Err(FireError::QueueGone(e));
            }
        }
    }
}

/// Sends a job's reply to its `deliver` target through the channel's delivery path (one
/// delivery per fire: `key` is the fire's idempotency key, so a retry never sends twice).
/// Returns what the ledger says about it.
pub async fn deliver_reply(
    root: &Addr<SupervisorActor>,
    target: &crate::store::cron::Deliver,
    text: &str,
    key: String,
) -> String {
    use crate::channels::operator_send::{SendParams, send_from};
    let account = target.account.clone().unwrap_or_else(|| "main".into());
    let place = format!("{}:{account} chat {}", target.channel, target.to);
    if text.trim() == super::heartbeat::NO_REPLY || text.trim().is_empty() {
        return format!("nothing delivered to {place}: the reply was empty or NO_REPLY");
    }
    let params = SendParams {
        channel: target.channel.clone(),
        account,
        to: target.to.clone(),
        message: text.to_string(),
        idempotency_key: key,
    };
    match send_from(root, params).await {
        Ok(answer) => format!(
            "delivered to {place}: {}",
            answer["state"].as_str().unwrap_or("unknown")
        ),
        Err(why) => format!("delivery to {place} failed: {why}"),
    }
}
