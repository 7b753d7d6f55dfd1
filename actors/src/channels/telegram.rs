//! `telegram:<account>`: one Telegram bot. Its own long-poll loop over teloxide's raw Bot
//! API client (not the Dispatcher, which acks an update before its handler ran):
//! `getUpdates(offset, timeout)` → journal the batch in the store (with the next offset) →
//! only then ask for the next batch, which is Telegram's acknowledgement. Journaled
//! messages run one at a time per chat ([`journal::answer`]); replies are sent from the
//! store's deliveries, pending ones first after a restart. 409 Conflict backs off and shows
//! in `channels.status`; 429 waits `retry_after`; rejected formatting is resent as plain
//! text; a typing indicator repeats every 4 s while a turn runs. Liveness is progress: a
//! `getUpdates` outstanding for longer than the poll timeout plus a margin makes the actor
//! fail itself, and its supervisor restarts it (with backoff) showing the reason. Every
//! `getMe`/`getUpdates` outcome updates the account's connection status in `health`
//! ([`crate::health::channels`]).

mod receive;
mod send;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use teloxide_core::payloads::GetUpdatesSetters;
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::{AllowedUpdate, Message as TgMessage, Update, UpdateKind};
use teloxide_core::{ApiError, Bot, RequestError};

use super::journal::Route;
use super::lanes::{self, ChatLanes, Job};
use super::pairing;
use super::{ChannelError, ChannelSnapshot, DescribeChannel, TelegramSettings, TokenSource};
use crate::health::channels::ChannelLink;
use crate::messages::Shutdown;
use crate::now_ms;
use crate::store::channels::{DeliveryRecord, JournalBatch, NewInbound, ResumeAccount};
use crate::supervisor::{
    ChildHandle, ChildLink, ChildSpec, ExitGuard, StartError, SupervisorActor,
};

/// Telegram's message length limit (UTF-16 units).
pub const MESSAGE_LIMIT: usize = 4096;

/// Extra time a `getUpdates` may take beyond its long-poll timeout before the loop counts
/// as stalled.
pub const STALL_MARGIN: Duration = Duration::from_secs(5);

/// Consecutive failed polls (network errors) before the actor fails and is restarted.
const MAX_POLL_FAILURES: u32 = 5;

/// Longest wait after a 409 Conflict.
const MAX_CONFLICT_DELAY: Duration = Duration::from_secs(60);

/// The bot's own identity, for mentions in groups.
#[derive(Clone, Debug)]
struct BotIdentity {
    id: u64,
    username: String,
}

/// A Telegram bot account.
pub struct TelegramActor {
    settings: Arc<TelegramSettings>,
    token: String,
    bot: Bot,
    route: Route,
    me: Option<BotIdentity>,
    offset: Option<i64>,
    chats: ChatLanes,
    poll_since: Option<Instant>,
    poll_failures: u32,
    conflicts: u32,
    /// Set once resumed from the store: the owed deliveries it loaded (sent already
    /// by resume, so a later `Deliver` of the same ids is skipped).
    resumed: Option<std::collections::HashSet<i64>>,
    snapshot: ChannelSnapshot,
    /// This account's connection status in the health summary.
    link: Arc<ChannelLink>,
    guard: ExitGuard,
}

impl TelegramActor {
    /// The child spec of `telegram:<account>` (own arbiter, restarted with backoff).
    pub fn spec(
        settings: TelegramSettings,
        files: super::inbound_files::FileIntake,
        root: Addr<SupervisorActor>,
    ) -> ChildSpec {
        let id = format!("telegram:{}", settings.account);
        let settings = Arc::new(settings);
        ChildSpec::new(id, "channel", move |link: ChildLink| {
            super::start_with_status(link, |link, status| {
                Self::start(&settings, &files, &root, link, status)
            })
        })
        .backoff(super::CHANNEL_BACKOFF)
        .shutdown(Duration::from_secs(5))
    }

    /// Starts an actor of this account on its own arbiter.
    fn start(
        settings: &Arc<TelegramSettings>,
        files: &super::inbound_files::FileIntake,
        root: &Addr<SupervisorActor>,
        link: ChildLink,
        status: Arc<ChannelLink>,
    ) -> Result<ChildHandle, StartError> {
        let token = resolve_token(settings).map_err(|e| StartError(e.to_string()))?;
        let bot = build_bot(settings, &token).map_err(|e| StartError(e.to_string()))?;
        let route = Route::new(
            root,
            "telegram",
            &settings.account,
            settings.agent.as_str(),
            MESSAGE_LIMIT,
            files,
        );
        let settings = settings.clone();
        let arbiter = crate::supervisor::child_arbiter(&link.id.to_string());
        status.set_running(true);
        let addr = TelegramActor::start_in_arbiter(&arbiter.handle(), move |_| TelegramActor {
            settings,
            token,
            bot,
            route,
            me: None,
            resumed: None,
            offset: None,
            chats: ChatLanes::default(),
            poll_since: None,
            poll_failures: 0,
            conflicts: 0,
            snapshot: ChannelSnapshot::default(),
            link: status,
            guard: link.guard(),
        });
        Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
    }

    /// Text with the bot token replaced (reqwest errors carry the URL, which holds it).
    fn redact(&self, text: &str) -> String {
        if self.token.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.token, "<token>")
        }
    }

    fn error_text(&self, err: &RequestError) -> String {
        self.redact(&err.to_string())
    }

    /// Fails the actor: its supervisor restarts it after a backoff, showing `why` (also
    /// the channel's `lastError` in the health summary).
    fn fail(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(account = %self.settings.account, reason = %why, "telegram channel failing");
        self.link.failed(&why);
        self.guard.fail(why);
        ctx.stop();
    }

    fn start_up(&mut self, ctx: &mut Context<Self>) {
        let bot = self.bot.clone();
        let route = self.route.clone();
        let init = async move {
            let me = bot.get_me().send().await;
            let acc = route.account.clone();
            let loaded = super::ask_store(&route.root, ResumeAccount { account: acc }).await;
            (me, loaded)
        };
        ctx.spawn(init.into_actor(self).map(|(me, loaded), act, ctx| {
            let me = match me {
                Ok(me) => {
                    act.link.ok();
                    me
                }
                Err(e) => {
                    let why = format!("getMe failed: {}", act.error_text(&e));
                    return act.fail(why, ctx);
                }
            };
            let (offset, deliveries, inbound) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => return act.fail(format!("cannot load the journal: {e}"), ctx),
            };
            act.me = Some(BotIdentity {
                id: me.user.id.0,
                username: me.username().to_string(),
            });
            act.snapshot.bot = Some(me.username().to_string());
            act.offset = offset;
            if !deliveries.is_empty() || !inbound.is_empty() {
                tracing::info!(
                    account = %act.settings.account,
                    deliveries = deliveries.len(),
                    messages = inbound.len(),
                    "resuming owed replies and unanswered messages from the store"
                );
            }
            act.resumed = Some(deliveries.iter().map(|d| d.id).collect());
            for d in deliveries {
                act.enqueue(d.chat_id.clone(), Job::Send(d));
            }
            for m in inbound {
                act.enqueue(m.chat_id.clone(), Job::Answer(m));
            }
            act.pump_all(ctx);
            act.poll(ctx);
        }));
    }

    fn enqueue(&mut self, chat: String, job: Job) {
        self.chats.enqueue(chat, job);
    }

    fn pump_all(&mut self, ctx: &mut Context<Self>) {
        for chat in self.chats.chats() {
            self.pump(chat, ctx);
        }
    }

    /// Starts the next job of a chat unless one is running.
    fn pump(&mut self, chat: String, ctx: &mut Context<Self>) {
        let Some(job) = self.chats.start_next(&chat) else {
            return;
        };
        let work = lanes::run(self.bot.clone(), self.route.clone(), job);
        ctx.spawn(work.into_actor(self).map(move |done, act, ctx| {
            act.chats.finished(&chat);
            match done {
                Ok(sent) => {
                    if sent > 0 {
                        act.snapshot.last_outbound_at = Some(now_ms());
                    }
                }
                Err(e) => {
                    // Nothing is lost: the message or delivery is still owed in the store
                    // and is picked up again after the restart.
                    let why = act.redact(&format!("chat {chat}: {e}"));
                    return act.fail(why, ctx);
                }
            }
            act.pump(chat, ctx);
        }));
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.settings.poll_timeout.as_secs().min(u32::MAX as u64) as u32;
        let mut request = self
            .bot
            .get_updates()
            .timeout(timeout)
            .allowed_updates(vec![AllowedUpdate::Message]);
        if let Some(offset) = self.offset {
            request = request.offset(offset.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        }
        self.poll_since = Some(Instant::now());
        ctx.spawn(request.send().into_actor(self).map(|polled, act, ctx| {
            act.poll_since = None;
            act.polled(polled, ctx);
        }));
    }

    fn polled(&mut self, polled: Result<Vec<Update>, RequestError>, ctx: &mut Context<Self>) {
        match polled {
            Ok(updates) => {
                self.poll_failures = 0;
                self.link.ok();
                if self.conflicts > 0 {
                    self.conflicts = 0;
                    self.snapshot.conflict = false;
                }
                if self.snapshot.connected_since.is_none() {
                    self.snapshot.connected_since = Some(now_ms());
                }
                self.journal(updates, ctx);
            }
            Err(RequestError::RetryAfter(wait)) => {
                self.snapshot.last_error = Some(format!(
                    "getUpdates: 429 Too Many Requests, retrying after {} s",
                    wait.seconds()
                ));
                ctx.run_later(wait.duration(), |act, ctx| act.poll(ctx));
            }
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
                self.conflicts += 1;
                let delay =
                    Duration::from_secs(1u64 << self.conflicts.min(6)).min(MAX_CONFLICT_DELAY);
                self.snapshot.conflict = true;
                let why = format!(
                    "getUpdates: 409 Conflict: another client is polling this bot (webhook set or a second gateway); retrying in {} s",
                    delay.as_secs()
                );
                // Updates go to the other poller: this one is not receiving.
                self.link.failed(&why);
                self.snapshot.last_error = Some(why);
                tracing::warn!(account = %self.settings.account, delay_s = delay.as_secs(), "telegram 409 Conflict: another poller holds this bot");
                ctx.run_later(delay, |act, ctx| act.poll(ctx));
            }
            Err(e) => {
                self.poll_failures += 1;
                let why = format!("getUpdates failed: {}", self.error_text(&e));
                self.snapshot.last_error = Some(why.clone());
                if self.poll_failures >= MAX_POLL_FAILURES {
                    return self.fail(
                        format!("{why} ({} times in a row)", self.poll_failures),
                        ctx,
                    );
                }
                self.link.failed(&why);
                let delay = Duration::from_secs(1u64 << self.poll_failures.min(4));
                ctx.run_later(delay, |act, ctx| act.poll(ctx));
            }
        }
    }

    /// Journals a batch (with the next offset) and only then polls again.
    fn journal(&mut self, updates: Vec<Update>, ctx: &mut Context<Self>) {
        if updates.is_empty() {
            return self.poll(ctx);
        }
        let next_offset = updates.iter().map(|u| u.id.0 as i64 + 1).max();
        let items: Vec<NewInbound> = updates
            .iter()
            .filter_map(|u| match &u.kind {
                UpdateKind::Message(m) => self.inbound_of(m),
                _ => None,
            })
            .collect();
        let acc = self.route.account.clone();
        let rules = pairing::rules();
        let root = self.route.root.clone();
        let commit = async move {
            let journal = JournalBatch {
                account: acc,
                items,
                next_offset,
                rules,
            };
            super::ask_store(&root, journal).await
        };
        ctx.spawn(commit.into_actor(self).map(move |journaled, act, ctx| {
            let outcome = match journaled {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Not acknowledged: the platform sends the batch again.
                    act.snapshot.last_error = Some(format!("journal: {e}"));
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.poll(ctx));
                    return;
                }
            };
            act.offset = next_offset.or(act.offset);
            if !outcome.accepted.is_empty() || !outcome.notices.is_empty() {
                act.snapshot.last_inbound_at = Some(now_ms());
            }
            if outcome.duplicates > 0 {
                tracing::debug!(account = %act.settings.account, duplicates = outcome.duplicates, "redelivered messages ignored");
            }
            let mut touched = Vec::new();
            for d in outcome.notices {
                touched.push(d.chat_id.clone());
                act.enqueue(d.chat_id.clone(), Job::Send(d));
            }
            for m in outcome.accepted {
                touched.push(m.chat_id.clone());
                act.enqueue(m.chat_id.clone(), Job::Answer(m));
            }
            for chat in touched {
                act.pump(chat, ctx);
            }
            act.poll(ctx);
        }));
    }

    /// The journal entry of a message, or `None` when it is not for the agent (no text and
    /// no file, from a bot, or filtered out by the DM/group policy). A photo's, document's,
    /// voice note's or audio file's caption is its text.
    fn inbound_of(&self, m: &TgMessage) -> Option<NewInbound> {
        let files = receive::files_of(m);
        let text = m.text().or(m.caption()).unwrap_or("");
        if text.trim().is_empty() && files.is_empty() {
            return None;
        }
        let from = m.from.as_ref()?;
        if from.is_bot {
            return None;
        }
        let agent = &self.settings.agent;
        let sender = from.id.0.to_string();
        let chat = m.chat.id.0.to_string();
        let (gate, session_key, text) = if m.chat.is_private() {
            let gate =
                pairing::dm_gate(self.settings.dm_policy, &self.settings.allow_from, &sender)?;
            (
                gate,
                format!("agent:{agent}:telegram:dm:{sender}").into(),
                text.to_string(),
            )
        } else {
            let me = self.me.as_ref()?;
            let mention = format!("@{}", me.username);
            let mentioned = text.to_lowercase().contains(&mention.to_lowercase());
            let replied = m
                .reply_to_message()
                .and_then(|r| r.from.as_ref())
                .is_some_and(|u| u.id.0 == me.id);
            let gate = pairing::group_gate(self.settings.group_policy, mentioned || replied)?;
            let text = strip_mention(text, &mention);
            let session_key = format!("agent:{agent}:telegram:group:{chat}").into();
            (gate, session_key, text)
        };
        Some(NewInbound {
            chat_id: chat,
            message_id: m.id.0.to_string(),
            sender_id: sender,
            sender_name: from.full_name(),
            session_key,
            text,
            files,
            gate,
        })
    }

    fn watchdog(&mut self, ctx: &mut Context<Self>) {
        let limit = self.settings.poll_timeout + STALL_MARGIN;
        if let Some(since) = self.poll_since
            && since.elapsed() > limit
        {
            let why = format!(
                "long-poll stalled: no getUpdates completed within {} s (poll timeout {} s + {} s margin)",
                limit.as_secs(),
                self.settings.poll_timeout.as_secs(),
                STALL_MARGIN.as_secs()
            );
            self.fail(why, ctx);
        }
    }
}

/// The message text without the bot's @mention (case-insensitive), trimmed.
fn strip_mention(text: &str, mention: &str) -> String {
    let lower = text.to_lowercase();
    match lower.find(&mention.to_lowercase()) {
        Some(at) if lower.len() == text.len() => {
            let mut out = String::with_capacity(text.len());
            out.push_str(&text[..at]);
            out.push_str(&text[at + mention.len()..]);
            let out = out.trim().to_string();
            if out.is_empty() {
                text.trim().to_string()
            } else {
                out
            }
        }
        _ => text.trim().to_string(),
    }
}

fn resolve_token(settings: &TelegramSettings) -> Result<String, ChannelError> {
    let token = match &settings.token {
        TokenSource::Value(secret) => secret.0.trim().to_string(),
        TokenSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                ChannelError::Config(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        return Err(ChannelError::Config(format!(
            "telegram account {:?} has an empty bot token",
            settings.account
        )));
    }
    Ok(token)
}

fn build_bot(settings: &TelegramSettings, token: &str) -> Result<Bot, ChannelError> {
    let url = reqwest::Url::parse(&settings.api_url).map_err(|e| {
        ChannelError::Config(format!("api_url {:?} is not a URL: {e}", settings.api_url))
    })?;
    // teloxide's default client gives up after 17 s whatever the poll timeout; this one
    // outlasts the long-poll (and the watchdog, which fires first).
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(settings.poll_timeout + STALL_MARGIN + Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ChannelError::Config(format!("cannot build the HTTP client: {e}")))?;
    Ok(Bot::with_client(token, client).set_api_url(url))
}

impl Actor for TelegramActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        self.guard.liveness().attach(ctx);
        tracing::info!(account = %self.settings.account, "telegram channel starting");
        self.start_up(ctx);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.watchdog(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.link.stopped();
    }
}

crate::child_controls!(TelegramActor, |this| this.chats.queued());

impl Handler<Shutdown> for TelegramActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<DescribeChannel> for TelegramActor {
    type Result = ChannelSnapshot;
    fn handle(&mut self, _: DescribeChannel, _: &mut Self::Context) -> ChannelSnapshot {
        let mut snapshot = self.snapshot.clone();
        snapshot.queued = self.chats.queued();
        snapshot
    }
}

impl Handler<super::Deliver> for TelegramActor {
    type Result = ();
    fn handle(&mut self, msg: super::Deliver, ctx: &mut Self::Context) {
        let Some(resumed) = &self.resumed else {
            // Not resumed yet: resume may or may not have loaded these; ask again after it.
            ctx.run_later(super::DELIVER_RETRY, move |_, ctx| ctx.notify(msg));
            return;
        };
        let fresh: Vec<DeliveryRecord> = msg
            .0
            .into_iter()
            .filter(|d| !resumed.contains(&d.id))
            .collect();
        for d in fresh {
            self.enqueue(d.chat_id.clone(), Job::Send(d));
        }
        self.pump_all(ctx);
    }
}

impl Handler<super::ProbeChannel> for TelegramActor {
    type Result = ResponseFuture<Result<String, String>>;
    fn handle(&mut self, _: super::ProbeChannel, _: &mut Self::Context) -> Self::Result {
        let bot = self.bot.clone();
        let token = self.token.clone();
        Box::pin(async move {
            match bot.get_me().send().await {
                Ok(me) => Ok(me.username().to_string()),
                Err(e) => Err(format!("getMe failed: {e}").replace(&token, "<token>")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strip_mention;

    #[test]
    fn mention_is_stripped_case_insensitively() {
        assert_eq!(strip_mention("@TroupeBot hello", "@troupebot"), "hello");
        assert_eq!(
            strip_mention("hi @troupebot there", "@troupebot"),
            "hi  there"
        );
        assert_eq!(strip_mention("@troupebot", "@troupebot"), "@troupebot");
        assert_eq!(strip_mention("no mention", "@troupebot"), "no mention");
    }
}
