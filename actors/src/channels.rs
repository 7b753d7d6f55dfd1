//! `channels`: the supervisor of chat-platform connections, one child per configured
//! account (`telegram:<account>`, `discord:<account>`), each on its own arbiter and
//! restarted with exponential backoff and jitter (1 s .. 5 min).
//!
//! - [`telegram`]: [`TelegramActor`](telegram::TelegramActor), the Bot API long-poll loop.
//! - [`discord`]: [`DiscordActor`](discord::DiscordActor), a serenity gateway shard with
//!   REST backfill after every (re)connect.
//! - [`inbound_files`]: files users send, downloaded into `uploads/` before their turn.
//! - [`journal`]: what every platform shares: a journaled inbound message becomes one turn
//!   on its session, and its reply becomes deliveries in the store.
//! - [`split`]: long replies cut at the platform's limit on paragraph/line/word boundaries.
//! - [`pairing`]: access policies and pairing codes for unknown senders.

pub mod discord;
pub mod inbound_files;
pub mod journal;
pub mod lanes;
pub mod operator_send;
pub mod pairing;
pub mod settled;
pub mod split;
pub mod telegram;

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use crate::gateway::{Gateway, Secret};
use crate::session_queue::QueueError;
use crate::store::channels::{Account, CountPending};
use crate::store::{StoreActor, StoreFailure, StoreOp};
use crate::supervisor::{
    Backoff, ChildHandle, ChildLink, ChildSpec, CommandError, LookupError, StartError,
    SupervisorActor, SupervisorConfig, TreeNode, lookup,
};

/// Restart delay of a channel: 1 s doubling to 5 min, with jitter.
pub const CHANNEL_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(300),
};

/// Who may talk to the agent in direct messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    /// Unknown senders get a pairing code an operator approves (the default).
    Pairing,
    /// Only `allow_from` and approved senders; others are ignored.
    Allowlist,
    /// Anyone.
    Open,
    /// Direct messages are ignored.
    Disabled,
}

/// When the agent answers in groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupPolicy {
    /// When mentioned or replied to (the default).
    Mention,
    /// Every message.
    All,
    /// Groups are ignored.
    Disabled,
}

/// Where a bot token comes from (the token itself is resolved at start and never logged).
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// An environment variable's value, read when the config was loaded.
    Value(Secret),
    /// A file read at every (re)start.
    File(PathBuf),
}

/// One `[[channels.telegram]]` account.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// Account name (tree id `telegram:<account>`).
    pub account: String,
    /// The bot token.
    pub token: TokenSource,
    /// Bot API base URL.
    pub api_url: String,
    /// The agent that answers.
    pub agent: String,
    /// Direct-message access.
    pub dm_policy: DmPolicy,
    /// Sender user ids always allowed.
    pub allow_from: Vec<String>,
    /// Group behaviour.
    pub group_policy: GroupPolicy,
    /// Long-poll timeout of `getUpdates`.
    pub poll_timeout: Duration,
}

/// One `[[channels.discord]]` account.
#[derive(Debug, Clone)]
pub struct DiscordSettings {
    /// Account name (tree id `discord:<account>`).
    pub account: String,
    /// The bot token.
    pub token: TokenSource,
    /// REST base URL (the gateway URL comes from `GET /api/v10/gateway/bot`).
    pub api_url: String,
    /// The agent that answers.
    pub agent: String,
    /// Direct-message access.
    pub dm_policy: DmPolicy,
    /// Sender user ids always allowed.
    pub allow_from: Vec<String>,
    /// Guild-channel behaviour.
    pub group_policy: GroupPolicy,
}

/// Every configured channel account.
#[derive(Debug, Clone, Default)]
pub struct ChannelAccounts {
    /// Telegram bots.
    pub telegram: Vec<TelegramSettings>,
    /// Discord bots.
    pub discord: Vec<DiscordSettings>,
    /// Where files users send go (every account), and their limits.
    pub files: inbound_files::FileIntake,
}

/// Errors of a channel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// The store failed or is restarting (which operation, and why).
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// The session-queue refused the turn.
    #[error("session queue: {0}")]
    Queue(#[from] QueueError),
    /// The session-queue could not be reached (restarting, or gone mid-request).
    #[error("session queue unreachable: {0}")]
    QueueUnreachable(String),
    /// The platform could not be reached (network, timeout); worth retrying later.
    #[error("platform unreachable: {0}")]
    Unreachable(String),
    /// The platform refused a request for good.
    #[error("platform refused: {0}")]
    Refused(String),
    /// The account is misconfigured (token missing, bad URL).
    #[error("configuration: {0}")]
    Config(String),
}

/// Starts a channel account's actor with `start`, giving it the account's connection
/// status in `health`; a start that fails is recorded there with its reason.
fn start_with_status(
    link: ChildLink,
    start: impl FnOnce(
        ChildLink,
        std::sync::Arc<crate::health::channels::ChannelLink>,
    ) -> Result<ChildHandle, StartError>,
) -> Result<ChildHandle, StartError> {
    let status = crate::health::channels::link(&link.id.to_string());
    let started = start(link, status.clone());
    if let Err(e) = &started {
        status.failed(&e.0);
    }
    started
}

/// The child spec of the `channels` supervisor: its children find the store and the
/// session-queue through the root they are given.
pub fn supervisor_spec(config: SupervisorConfig, accounts: ChannelAccounts) -> ChildSpec {
    let id = config.id.to_string();
    ChildSpec::new(id, "supervisor", move |link: ChildLink| {
        let root = link.supervisor.clone();
        let specs = account_specs(&accounts, &root);
        let addr = SupervisorActor::new(config.clone(), specs, Some(link)).start();
        Ok(ChildHandle::of_supervisor(addr))
    })
    .shutdown(Duration::from_secs(15))
}

/// The child specs of every account (`telegram:<account>`, `discord:<account>`); their
/// actors find the store and the session-queue through `root`.
pub fn account_specs(accounts: &ChannelAccounts, root: &Addr<SupervisorActor>) -> Vec<ChildSpec> {
    accounts
        .telegram
        .iter()
        .cloned()
        .map(|settings| {
            telegram::TelegramActor::spec(settings, accounts.files.clone(), root.clone())
        })
        .chain(accounts.discord.iter().cloned().map(|settings| {
            discord::DiscordActor::spec(settings, accounts.files.clone(), root.clone())
        }))
        .collect()
}

/// What a running channel reports about itself.
#[derive(Debug, Clone, Default, Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSnapshot {
    /// Bot user name, once known.
    pub bot: Option<String>,
    /// When the first poll of this start succeeded (ms).
    pub connected_since: Option<u64>,
    /// Last inbound message journaled (ms).
    pub last_inbound_at: Option<u64>,
    /// Last message delivered (ms).
    pub last_outbound_at: Option<u64>,
    /// The most recent error, if any (tokens redacted).
    pub last_error: Option<String>,
    /// Set while another poller holds the bot (409 Conflict).
    pub conflict: bool,
    /// Messages waiting for their turn or delivery in this actor.
    pub queued: usize,
}

/// Tells a channel actor to send deliveries just recorded (an operator `send`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Vec<crate::store::channels::DeliveryRecord>);

/// How long a `Deliver` that reached an account still resuming waits before it is retried.
const DELIVER_RETRY: Duration = Duration::from_millis(200);

/// Asks a channel actor to check its token live (`getMe` / `GET /users/@me`): the bot's
/// name, or what went wrong (token redacted).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<String, String>")]
pub struct ProbeChannel;

/// Asks a channel actor for its [`ChannelSnapshot`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ChannelSnapshot")]
pub struct DescribeChannel;

/// `channels.status` / `GET /api/channels`: per account its tree state and restarts, what
/// it reports itself, and the deliveries still pending in the store.
pub async fn status(gateway: &Gateway) -> Value {
    status_with(gateway, false).await
}

/// [`status`], each account also checked live when `probe` (its `probe` field: `ok`, and
/// `bot` or `error`).
pub async fn status_with(gateway: &Gateway, probe: bool) -> Value {
    let report = gateway.status(false).await;
    let channels = report.tree.find("channels").cloned();
    let store = lookup::<StoreActor>(&gateway.root, "store").await.ok();
    let mut out = Vec::new();
    for node in channels.iter().flat_map(|c| c.children.iter()) {
        let mut one = account_status(gateway, node, store.as_ref()).await;
        if probe {
            one["probe"] = probe_account(gateway, node).await;
        }
        out.push(one);
    }
    json!({ "channels": out })
}

async fn account_status(
    gateway: &Gateway,
    node: &TreeNode,
    store: Option<&Addr<StoreActor>>,
) -> Value {
    let (channel, account) = node.id.split_once(':').unwrap_or((node.kind.as_str(), ""));
    let snapshot = match channel {
        "telegram" => match lookup::<telegram::TelegramActor>(&gateway.root, &node.id).await {
            Ok(addr) => addr.send(DescribeChannel).await.ok(),
            Err(_) => None,
        },
        "discord" => match lookup::<discord::DiscordActor>(&gateway.root, &node.id).await {
            Ok(addr) => addr.send(DescribeChannel).await.ok(),
            Err(_) => None,
        },
        _ => None,
    };
    let acc = Account {
        channel: channel.to_string(),
        account: account.to_string(),
    };
    let pending = match store {
        Some(store) => store
            .send(CountPending { account: acc })
            .await
            .ok()
            .and_then(|r| r.ok()),
        None => None,
    };
    let snapshot = snapshot.unwrap_or_default();
    let last_error = snapshot
        .last_error
        .clone()
        .or_else(|| node.last_exit.as_ref().and_then(|e| e.message.clone()));
    json!({
        "id": node.id,
        "channel": channel,
        "account": account,
        "state": node.state,
        "connected": crate::health::channels::is_connected(&node.id),
        "restarts": node.restarts,
        "lastExit": node.last_exit,
        "bot": snapshot.bot,
        "connectedSince": snapshot.connected_since,
        "lastInboundAt": snapshot.last_inbound_at,
        "lastOutboundAt": snapshot.last_outbound_at,
        "lastError": last_error,
        "conflict": snapshot.conflict,
        "queued": snapshot.queued,
        "pendingDeliveries": pending,
    })
}

/// Probes one account through its running actor.
async fn probe_account(gateway: &Gateway, node: &TreeNode) -> Value {
    let asked = match node.id.split_once(':').map(|(c, _)| c) {
        Some("telegram") => {
            match lookup::<telegram::TelegramActor>(&gateway.root, &node.id).await {
                Ok(addr) => Ok(addr.send(ProbeChannel).await),
                Err(e) => Err(e),
            }
        }
        Some("discord") => match lookup::<discord::DiscordActor>(&gateway.root, &node.id).await {
            Ok(addr) => Ok(addr.send(ProbeChannel).await),
            Err(e) => Err(e),
        },
        _ => Err(LookupError::Missing(CommandError::NotFound(
            node.id.clone(),
        ))),
    };
    match asked {
        Ok(Ok(Ok(bot))) => json!({ "ok": true, "bot": bot }),
        Ok(Ok(Err(error))) => json!({ "ok": false, "error": error }),
        Ok(Err(e)) => {
            json!({ "ok": false, "error": format!("the channel actor did not answer: {e}") })
        }
        Err(e @ LookupError::WrongType { .. }) => json!({ "ok": false, "error": e.to_string() }),
        Err(_) => json!({
            "ok": false,
            "error": format!("{} is not running (state {:?}); see lastExit", node.id, node.state),
        }),
    }
}

/// Runs one store operation (the store found through `root`, waited for while it
/// restarts); a failure is a typed [`ChannelError::Store`].
pub(crate) async fn ask_store<O: StoreOp>(
    root: &Addr<SupervisorActor>,
    op: O,
) -> Result<O::Output, ChannelError>
where
    StoreActor: Handler<O>,
{
    Ok(crate::store::failure::ask(root, op).await?)
}
