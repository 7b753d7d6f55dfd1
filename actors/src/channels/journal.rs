//! What every platform shares once a message is journaled: it becomes one turn on its
//! session (idempotency key from account + chat + message id, so a redelivery or a
//! restart never runs it twice), and the run's reply becomes deliveries in the store,
//! closing the inbound row in the same transaction. A turn cut by a crash (the queue marks
//! it `interrupted`) runs again once.

use std::time::Duration;

use actix::prelude::*;

use super::split::split_message;
use super::{ChannelError, ask_store};
use crate::messages::{AgentId, QueueMode, RunStatus};
use crate::session_queue::{QueueError, RunSummary, SessionQueueActor, SubmitTurn, WaitRun};
use crate::store::channels::{Account, DeliveryRecord, InboundRecord, RecordReply};
use crate::supervisor::{SupervisorActor, lookup_patiently};

/// How long one `WaitRun` waits before asking again (a long turn is fine).
const WAIT_SLICE: Duration = Duration::from_secs(300);

/// Attempts while the session's lane is full.
const LANE_FULL_ATTEMPTS: u32 = 60;

/// Where an account's turns go.
#[derive(Clone, Debug)]
pub struct Route {
    /// The root supervisor (to find the store and the session-queue).
    pub root: Addr<SupervisorActor>,
    /// Channel and account.
    pub account: Account,
    /// The agent that answers.
    pub agent: AgentId,
    /// The platform's message length limit.
    pub limit: usize,
    /// Where files users send go, and their limits.
    pub files: super::inbound_files::FileIntake,
}

impl Route {
    /// The route of `channel`'s `account`, answered by `agent`, in messages of at most
    /// `limit` characters.
    pub fn new(
        root: &Addr<SupervisorActor>,
        channel: &str,
        account: &str,
        agent: &str,
        limit: usize,
        files: &super::inbound_files::FileIntake,
    ) -> Self {
        Self {
            root: root.clone(),
            account: Account {
                channel: channel.into(),
                account: account.into(),
            },
            agent: agent.into(),
            limit,
            files: files.clone(),
        }
    }

    /// The idempotency key of a message: unique per account + chat + message id.
    pub fn idempotency_key(&self, inbound: &InboundRecord) -> String {
        format!(
            "{}:{}:{}:{}",
            self.account.channel, self.account.account, inbound.chat_id, inbound.message_id
        )
    }
}

/// Runs the turn of a journaled message (or finds the run of an earlier attempt), records
/// its reply as deliveries and closes the message. Returns the deliveries to send, in order.
pub async fn answer(
    route: &Route,
    inbound: &InboundRecord,
) -> Result<Vec<DeliveryRecord>, ChannelError> {
    let key = route.idempotency_key(inbound);
    let mut summary = run_once(route, inbound, key.clone()).await?;
    let interrupted = summary.status == RunStatus::Error
        && summary
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("interrupted"));
    if interrupted {
        tracing::info!(session_key = %inbound.session_key, "channel turn cut by a restart; running it again once");
        summary = run_once(route, inbound, format!("{key}:rerun")).await?;
    }
    let text = reply_text(&summary);
    let parts = split_message(&text, route.limit);
    let acc = route.account.clone();
    let inbound = inbound.clone();
    let run_id = summary.run_id.clone();
    let reply = RecordReply {
        account: acc,
        inbound,
        run_id,
        parts,
        files: summary.attachments,
    };
    ask_store(&route.root, reply).await
}

/// What the user sees for a run's end.
fn reply_text(summary: &RunSummary) -> String {
    match summary.status {
        RunStatus::Ok => summary.summary.clone(),
        RunStatus::Aborted if !summary.summary.trim().is_empty() => summary.summary.clone(),
        RunStatus::Aborted => "(the reply was aborted)".into(),
        _ => format!(
            "Sorry, that failed: {}",
            summary.error.as_deref().unwrap_or("unknown error")
        ),
    }
}

async fn queue_of(root: &Addr<SupervisorActor>) -> Result<Addr<SessionQueueActor>, ChannelError> {
    lookup_patiently::<SessionQueueActor>(root, "session-queue")
        .await
        .map_err(|e| ChannelError::QueueUnreachable(e.to_string()))
}

async fn run_once(
    route: &Route,
    inbound: &InboundRecord,
    key: String,
) -> Result<RunSummary, ChannelError> {
    let mut attempt = 0;
    let accepted = loop {
        let queue = queue_of(&route.root).await?;
        let submit = SubmitTurn {
            session_key: inbound.session_key.clone(),
            agent_id: route.agent.clone(),
            text: inbound.text.clone(),
            idempotency_key: Some(key.clone()),
            mode: QueueMode::Followup,
            subscriber: None,
            options: crate::messages::TurnOptions {
                attachments: inbound.attachments.clone().unwrap_or_default(),
                ..Default::default()
            },
        };
        match queue.send(submit).await {
            Ok(Ok(accepted)) => break accepted,
            Ok(Err(
                QueueError::LaneFull { retry_after_ms, .. }
                | QueueError::QueueFull { retry_after_ms, .. },
            )) if attempt < LANE_FULL_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(retry_after_ms.max(100))).await;
            }
            Ok(Err(e)) => return Err(queue_refused(e)),
            Err(e) => return Err(ChannelError::QueueUnreachable(e.to_string())),
        }
    };
    loop {
        let queue = queue_of(&route.root).await?;
        let wait = WaitRun {
            run_id: accepted.run_id.clone(),
            timeout: WAIT_SLICE,
        };
        match queue.send(wait).await {
            Ok(Ok(summary)) if summary.status == RunStatus::Timeout => continue,
            Ok(Ok(summary)) => return Ok(summary),
            Ok(Err(e)) => return Err(queue_refused(e)),
            Err(e) => return Err(ChannelError::QueueUnreachable(e.to_string())),
        }
    }
}

/// A refusal of the queue; a store failure behind it stays a store failure.
fn queue_refused(err: QueueError) -> ChannelError {
    match err {
        QueueError::Store(failure) => ChannelError::Store(failure),
        other => ChannelError::Queue(other),
    }
}
