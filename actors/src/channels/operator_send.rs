//! WS `send`: an operator (or another agent) sends a message to a chat through an account.
//! It becomes deliveries in the store under the caller's idempotency key (one key per
//! account is recorded once, so it is sent once, even across a restart), then the account's
//! actor sends them like any reply; the answer says where the delivery stands, as soon as
//! the actor pushed each part's outcome (see [`super::settled`]), the store read once
//! before (parts settled earlier, e.g. before a restart) and once after.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::split::split_message;
use super::{Deliver, discord, settled, telegram};
use crate::gateway::Gateway;
use crate::store::StoreFailure;
use crate::store::channels::{Account, DeliveryStatus, RecordSend, SendStatus};
use crate::store::failure::ask;
use crate::supervisor::lookup;

/// How long `send` waits for its deliveries to leave before answering `pending`.
const SETTLE: Duration = Duration::from_secs(10);

/// Parameters of WS `send`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendParams {
    /// telegram | discord.
    pub channel: String,
    /// Account name (default `main`).
    #[serde(default = "main_account", alias = "accountId")]
    pub account: String,
    /// Chat id (Telegram) or channel id (Discord).
    pub to: String,
    /// The text; split at the platform's limit.
    pub message: String,
    /// The same key on the same account never sends twice.
    pub idempotency_key: String,
}

fn main_account() -> String {
    "main".into()
}

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request is wrong (unknown channel or account, empty field).
    #[error("{0}")]
    Invalid(String),
    /// The supervisor did not answer (the tree is stopping or restarting).
    #[error("{0}")]
    Unavailable(String),
    /// The store could not record it, or read where it stands.
    #[error(transparent)]
    Store(#[from] StoreFailure),
}

/// Records and sends `p`; answers `{deliveryId, deliveryIds, state, duplicate, parts}`.
pub async fn send(gateway: &Gateway, p: SendParams) -> Result<Value, SendError> {
    send_from(&gateway.root, p).await
}

/// [`send`] for actors that hold only the root (the scheduler's `deliver`).
pub async fn send_from(
    root: &actix::Addr<crate::supervisor::SupervisorActor>,
    p: SendParams,
) -> Result<Value, SendError> {
    let limit = match p.channel.as_str() {
        "telegram" => telegram::MESSAGE_LIMIT,
        "discord" => discord::MESSAGE_LIMIT,
        other => {
            return Err(SendError::Invalid(format!(
                "unknown channel {other:?}: expected \"telegram\" or \"discord\""
            )));
        }
    };
    let id = format!("{}:{}", p.channel, p.account);
    let tree = root
        .send(crate::supervisor::DescribeTree { all: false })
        .await
        .map_err(|e| SendError::Unavailable(format!("the supervisor did not answer: {e}")))?;
    if tree.find("channels").and_then(|c| c.find(&id)).is_none() {
        return Err(SendError::Invalid(format!(
            "unknown account {:?} of channel {:?}: no [[channels.{}]] has account = {:?}",
            p.account, p.channel, p.channel, p.account
        )));
    }
    for (name, value) in [
        ("to", &p.to),
        ("message", &p.message),
        ("idempotencyKey", &p.idempotency_key),
    ] {
        if value.trim().is_empty() {
            return Err(SendError::Invalid(format!("send: {name} is empty")));
        }
    }
    let account = Account {
        channel: p.channel.clone(),
        account: p.account.clone(),
    };
    let record = RecordSend {
        account: account.clone(),
        chat_id: p.to.clone(),
        key: p.idempotency_key.clone(),
        parts: split_message(&p.message, limit),
    };
    let recorded = ask(root, record).await?;
    let ids: Vec<i64> = recorded.deliveries.iter().map(|d| d.id).collect();
    // Listening before anything is read or sent: an outcome pushed in between is kept.
    let mut watch = settled::watch(&ids);
    if recorded.created {
        // Not running now: the deliveries stay owed and go out when the account resumes.
        let deliver = Deliver(recorded.deliveries.clone());
        match p.channel.as_str() {
            "telegram" => {
                if let Ok(addr) = lookup::<telegram::TelegramActor>(root, &id).await {
                    addr.do_send(deliver);
                }
            }
            _ => {
                if let Ok(addr) = lookup::<discord::DiscordActor>(root, &id).await {
                    addr.do_send(deliver);
                }
            }
        }
    }
    let read_status = || async {
        let status = SendStatus {
            account: account.clone(),
            key: p.idempotency_key.clone(),
        };
        Ok::<_, SendError>(ask(root, status).await?)
    };
    // The store says where each part stands now (the fallback for a send recorded before a
    // restart); the parts still pending are then awaited as the channel actor pushes them.
    let mut status = read_status().await?;
    let pending: Vec<i64> = status
        .iter()
        .filter(|d| d.state == "pending")
        .map(|d| d.id)
        .collect();
    if !pending.is_empty() {
        let (pushed, _all) = watch.until_settled(&pending, Instant::now() + SETTLE).await;
        if !pushed.is_empty() {
            status = read_status().await?;
        }
    }
    drop(watch);
    Ok(json!({
        "channel": p.channel,
        "account": p.account,
        "to": p.to,
        "deliveryId": status.first().map(|d| d.id),
        "deliveryIds": status.iter().map(|d| d.id).collect::<Vec<_>>(),
        "state": overall_state(&status),
        "messageIds": status.iter().filter_map(|d| d.platform_message_id.clone()).collect::<Vec<_>>(),
        "duplicate": !recorded.created,
        "parts": status,
    }))
}

/// `failed` if any part failed, else `pending` if any is still owed, else `sent`.
fn overall_state(parts: &[DeliveryStatus]) -> &'static str {
    if parts.iter().any(|d| d.state == "failed") {
        "failed"
    } else if parts.iter().any(|d| d.state == "pending") {
        "pending"
    } else {
        "sent"
    }
}
