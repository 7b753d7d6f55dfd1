//! `discord:<account>`: one Discord bot. A serenity `Client` (built with
//! `ClientBuilder::new_with_http`, REST base via `HttpBuilder::proxy`, rate limiter off)
//! runs one gateway shard on the actor's arbiter; its events become actor messages
//! ([`events`]). serenity cannot resume a session across a restart, so after every READY
//! of a fresh start each known channel is backfilled over REST (`GET
//! /channels/{id}/messages?after=<last seen id>`); live messages that arrive meanwhile wait
//! for the backfill, then everything is journaled together and the journal dedupes. The
//! last seen id of each channel is committed with the journal ([`JournalDiscord`]).
//! Journaled messages run one at a time per channel ([`journal::answer`]), replies are sent
//! from the store's deliveries (split at 2000), a typing indicator repeats while a turn
//! runs, 429s wait `Retry-After` ([`rest`]). Liveness is progress: a shard that loses its
//! gateway connection or is restarted by serenity because a heartbeat went unacknowledged
//! makes the actor fail itself (the reason shows in the tree), and its supervisor restarts
//! it with backoff, which backfills what was missed. READY and each heartbeat ACK mark the
//! account connected in `health` ([`crate::health::channels`]); a failure marks it not.

pub mod events;
pub mod liveness;
pub mod receive;
pub mod rest;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serenity::all::{GatewayIntents, Message as DiscordMessage};
use serenity::gateway::{ConnectionStage, ShardManager};
use serenity::http::HttpBuilder;

use self::events::{Forward, Incoming, SessionReady, StageChanged};
use self::liveness::{ACK_CHECK_EVERY, AckProgress, MIN_ACK_SILENCE, MISSED_ACKS};
use self::rest::Rest;
use super::journal::Route;
use super::lanes::{self, ChatLanes, Job};
use super::pairing;
use super::{ChannelError, ChannelSnapshot, DescribeChannel, DiscordSettings, TokenSource};
use crate::health::channels::ChannelLink;
use crate::messages::Shutdown;
use crate::now_ms;
use crate::store::channels::{
    DeliveryRecord, JournalDiscord, KnownChannel, KnownChannels, NewInbound, ResumeAccount,
};
use crate::supervisor::{
    ChildHandle, ChildLink, ChildSpec, ExitGuard, StartError, SupervisorActor,
};

/// Discord's message length limit.
pub const MESSAGE_LIMIT: usize = 2000;

/// How long the gateway may take to answer IDENTIFY with READY after a start.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// A Discord bot account.
pub struct DiscordActor {
    settings: Arc<DiscordSettings>,
    token: String,
    rest: Rest,
    route: Route,
    /// The bot's user id, once READY.
    me: Option<u64>,
    /// Session id of the READY this start got (a second one means serenity restarted it).
    session: Option<String>,
    /// Known channels: id → guild id (`None` for a DM).
    known: HashMap<String, Option<String>>,
    /// True until the backfill after READY is journaled; live messages wait in `held`.
    backfilling: bool,
    held: Vec<DiscordMessage>,
    /// Batches waiting to be journaled, in arrival order (one commit at a time).
    to_journal: VecDeque<Vec<DiscordMessage>>,
    journaling: bool,
    chats: ChatLanes,
    shards: Option<Arc<ShardManager>>,
    acks: AckProgress,
    started_at: Instant,
    /// Set once resumed from the store: the owed deliveries it loaded (sent already
    /// by resume, so a later `Deliver` of the same ids is skipped).
    resumed: Option<std::collections::HashSet<i64>>,
    snapshot: ChannelSnapshot,
    /// This account's connection status in the health summary.
    link: Arc<ChannelLink>,
    guard: ExitGuard,
}

impl DiscordActor {
    /// The child spec of `discord:<account>` (own arbiter, restarted with backoff).
    pub fn spec(
        settings: DiscordSettings,
        files: super::inbound_files::FileIntake,
        root: Addr<SupervisorActor>,
    ) -> ChildSpec {
        let id = format!("discord:{}", settings.account);
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
        settings: &Arc<DiscordSettings>,
        files: &super::inbound_files::FileIntake,
        root: &Addr<SupervisorActor>,
        link: ChildLink,
        status: Arc<ChannelLink>,
    ) -> Result<ChildHandle, StartError> {
        let token = resolve_token(settings).map_err(|e| StartError(e.to_string()))?;
        let rest = Rest::new(&settings.api_url, &format!("Bot {token}"))
            .map_err(|e| StartError(e.to_string()))?;
        let route = Route::new(
            root,
            "discord",
            &settings.account,
            settings.agent.as_str(),
            MESSAGE_LIMIT,
            files,
        );
        let settings = settings.clone();
        let arbiter = crate::supervisor::child_arbiter(&link.id.to_string());
        status.set_running(true);
        let addr = DiscordActor::start_in_arbiter(&arbiter.handle(), move |_| DiscordActor {
            settings,
            token,
            rest,
            route,
            me: None,
            resumed: None,
            session: None,
            known: HashMap::new(),
            backfilling: true,
            held: Vec::new(),
            to_journal: VecDeque::new(),
            journaling: false,
            chats: ChatLanes::default(),
            shards: None,
            acks: AckProgress::default(),
            started_at: Instant::now(),
            snapshot: ChannelSnapshot::default(),
            link: status,
            guard: link.guard(),
        });
        Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
    }

    /// Text with the bot token replaced.
    fn redact(&self, text: &str) -> String {
        if self.token.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.token, "<token>")
        }
    }

    /// Fails the actor: its supervisor restarts it after a backoff, showing `why` (also
    /// the channel's `lastError` in the health summary).
    fn fail(&mut self, why: String, ctx: &mut Context<Self>) {
        let why = self.redact(&why);
        tracing::warn!(account = %self.settings.account, reason = %why, "discord channel failing");
        self.link.failed(&why);
        self.guard.fail(why);
        ctx.stop();
    }

    /// Loads what is owed from the store, then connects the gateway.
    fn start_up(&mut self, ctx: &mut Context<Self>) {
        let route = self.route.clone();
        let account = self.settings.account.clone();
        let load = async move {
            let resumed = super::ask_store(
                &route.root,
                ResumeAccount {
                    account: route.account.clone(),
                },
            )
            .await?;
            let known = super::ask_store(&route.root, KnownChannels { account }).await?;
            Ok::<_, ChannelError>((resumed, known))
        };
        ctx.spawn(load.into_actor(self).map(|loaded, act, ctx| {
            let ((_, deliveries, inbound), known) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => return act.fail(format!("cannot load the journal: {e}"), ctx),
            };
            if !deliveries.is_empty() || !inbound.is_empty() {
                tracing::info!(
                    account = %act.settings.account,
                    deliveries = deliveries.len(),
                    messages = inbound.len(),
                    "resuming owed replies and unanswered messages from the store"
                );
            }
            for c in known {
                act.known.insert(c.channel_id, c.guild_id);
            }
            act.resumed = Some(deliveries.iter().map(|d| d.id).collect());
            for d in deliveries {
                act.enqueue(d.chat_id.clone(), Job::Send(d));
            }
            for m in inbound {
                act.enqueue(m.chat_id.clone(), Job::Answer(m));
            }
            act.pump_all(ctx);
            act.connect(ctx);
        }));
    }

    /// Builds serenity's client and runs its shard on this arbiter.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let http = HttpBuilder::new(&self.token)
            .proxy(self.settings.api_url.clone())
            .ratelimiter_disabled(true)
            .build();
        let intents = GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::DIRECT_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT;
        let handler = Forward(ctx.address());
        let build = async move {
            serenity::client::ClientBuilder::new_with_http(http, intents)
                .event_handler(handler)
                .await
        };
        ctx.spawn(build.into_actor(self).map(|built, act, ctx| {
            let mut client = match built {
                Ok(client) => client,
                Err(e) => return act.fail(format!("cannot build the discord client: {e}"), ctx),
            };
            act.shards = Some(client.shard_manager.clone());
            let run = async move { client.start().await };
            ctx.spawn(run.into_actor(act).map(|ended, act, ctx| {
                let why = match ended {
                    Ok(()) => "the discord gateway client stopped".to_string(),
                    Err(e) => format!("the discord gateway client stopped: {e}"),
                };
                act.fail(why, ctx);
            }));
        }));
    }

    /// Backfills every known channel after its last seen id, then journals the backfill
    /// together with the live messages that arrived meanwhile.
    fn backfill(&mut self, ctx: &mut Context<Self>) {
        let rest = self.rest.clone();
        let route = self.route.clone();
        let account = self.settings.account.clone();
        let fetch = async move {
            let known = super::ask_store(&route.root, KnownChannels { account }).await?;
            let mut all = Vec::new();
            for c in &known {
                all.extend(rest.messages_after(&c.channel_id, c.last_seen).await?);
            }
            Ok::<_, ChannelError>(all)
        };
        ctx.spawn(fetch.into_actor(self).map(|fetched, act, ctx| {
            let mut messages = match fetched {
                Ok(messages) => messages,
                Err(e) => return act.fail(format!("backfill after reconnect failed: {e}"), ctx),
            };
            if !messages.is_empty() {
                tracing::info!(account = %act.settings.account, messages = messages.len(), "backfilled messages sent while disconnected");
            }
            messages.append(&mut act.held);
            act.backfilling = false;
            act.queue_journal(messages, ctx);
        }));
    }

    fn queue_journal(&mut self, mut messages: Vec<DiscordMessage>, ctx: &mut Context<Self>) {
        if messages.is_empty() {
            return;
        }
        messages.sort_by_key(|m| m.id);
        messages.dedup_by_key(|m| m.id);
        self.to_journal.push_back(messages);
        self.journal_next(ctx);
    }

    /// Commits the next batch (journal + last seen ids), then queues its turns.
    fn journal_next(&mut self, ctx: &mut Context<Self>) {
        if self.journaling {
            return;
        }
        let Some(batch) = self.to_journal.pop_front() else {
            return;
        };
        self.journaling = true;
        let mut newest: BTreeMap<String, KnownChannel> = BTreeMap::new();
        let mut items = Vec::new();
        for m in &batch {
            let channel = m.channel_id.get().to_string();
            let guild = m
                .guild_id
                .map(|g| g.get().to_string())
                .or_else(|| self.known.get(&channel).cloned().flatten());
            self.known.insert(channel.clone(), guild.clone());
            let entry = newest.entry(channel.clone()).or_insert(KnownChannel {
                channel_id: channel,
                guild_id: guild,
                last_seen: 0,
            });
            entry.last_seen = entry.last_seen.max(m.id.get() as i64);
            if let Some(item) = self.inbound_of(m) {
                items.push(item);
            }
        }
        let acc = self.route.account.clone();
        let root = self.route.root.clone();
        let channels: Vec<KnownChannel> = newest.into_values().collect();
        let rules = pairing::rules();
        let commit = async move {
            let journal = JournalDiscord {
                account: acc,
                items,
                channels,
                rules,
            };
            super::ask_store(&root, journal).await
        };
        ctx.spawn(commit.into_actor(self).map(|journaled, act, ctx| {
            act.journaling = false;
            let outcome = match journaled {
                Ok(outcome) => outcome,
                // Not journaled: the restart backfills these messages again.
                Err(e) => return act.fail(format!("journal: {e}"), ctx),
            };
            if !outcome.accepted.is_empty() || !outcome.notices.is_empty() {
                act.snapshot.last_inbound_at = Some(now_ms());
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
            act.journal_next(ctx);
        }));
    }

    /// The journal entry of a message, or `None` when it is not for the agent (no text and
    /// no attachment, from a bot, or filtered out by the DM/guild policy).
    fn inbound_of(&self, m: &DiscordMessage) -> Option<NewInbound> {
        let me = self.me?;
        let files = receive::files_of(m);
        if m.author.bot
            || m.author.id.get() == me
            || (m.content.trim().is_empty() && files.is_empty())
        {
            return None;
        }
        let agent = &self.settings.agent;
        let sender = m.author.id.get().to_string();
        let channel = m.channel_id.get().to_string();
        let is_dm = m.guild_id.is_none() && self.known.get(&channel).cloned().flatten().is_none();
        let (gate, session_key, text) = if is_dm {
            let gate =
                pairing::dm_gate(self.settings.dm_policy, &self.settings.allow_from, &sender)?;
            (
                gate,
                format!("agent:{agent}:discord:dm:{sender}").into(),
                m.content.trim().to_string(),
            )
        } else {
            let mentioned = m.mentions.iter().any(|u| u.id.get() == me);
            let replied = m
                .referenced_message
                .as_ref()
                .is_some_and(|r| r.author.id.get() == me);
            let gate = pairing::group_gate(self.settings.group_policy, mentioned || replied)?;
            (
                gate,
                format!("agent:{agent}:discord:group:{channel}").into(),
                strip_mention(&m.content, me),
            )
        };
        Some(NewInbound {
            chat_id: channel,
            message_id: m.id.get().to_string(),
            sender_id: sender,
            sender_name: m.author.name.clone(),
            session_key,
            text,
            files,
            gate,
        })
    }

    fn enqueue(&mut self, chat: String, job: Job) {
        self.chats.enqueue(chat, job);
    }

    fn pump_all(&mut self, ctx: &mut Context<Self>) {
        for chat in self.chats.chats() {
            self.pump(chat, ctx);
        }
    }

    /// Starts the next job of a channel unless one is running.
    fn pump(&mut self, chat: String, ctx: &mut Context<Self>) {
        let Some(job) = self.chats.start_next(&chat) else {
            return;
        };
        let work = lanes::run(self.rest.clone(), self.route.clone(), job);
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
                    return act.fail(format!("channel {chat}: {e}"), ctx);
                }
            }
            act.pump(chat, ctx);
        }));
    }

    fn watchdog(&mut self, ctx: &mut Context<Self>) {
        if self.session.is_none() && self.started_at.elapsed() > READY_WITHIN {
            let why = format!(
                "no READY from the discord gateway within {} s of starting",
                READY_WITHIN.as_secs()
            );
            return self.fail(why, ctx);
        }
        if let Some(silence) =
            self.acks
                .silent_for(MISSED_ACKS as f64, MIN_ACK_SILENCE, Instant::now())
        {
            let why = format!(
                "discord shard got no heartbeat ACK for {} ms ({MISSED_ACKS} heartbeat intervals); restarting the channel",
                silence.as_millis()
            );
            return self.fail(why, ctx);
        }
        let Some(shards) = self.shards.clone() else {
            return;
        };
        if self.acks.checking {
            return;
        }
        self.acks.checking = true;
        let read = async move {
            let runners = shards.runners.lock().await;
            runners.values().next().and_then(|r| r.latency)
        };
        ctx.spawn(read.into_actor(self).map(|latency, act, _| {
            act.acks.checking = false;
            // A heartbeat ACK of the established session is a successful exchange.
            if act.acks.observe(latency, Instant::now()) && act.session.is_some() {
                act.link.ok();
            }
        }));
    }
}

/// The message text without the bot's `<@id>` / `<@!id>` mentions, trimmed.
fn strip_mention(text: &str, me: u64) -> String {
    let out = text
        .replace(&format!("<@{me}>"), "")
        .replace(&format!("<@!{me}>"), "");
    let out = out.trim();
    if out.is_empty() {
        text.trim().to_string()
    } else {
        out.to_string()
    }
}

fn resolve_token(settings: &DiscordSettings) -> Result<String, ChannelError> {
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
    let token = token
        .strip_prefix("Bot ")
        .unwrap_or(&token)
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(ChannelError::Config(format!(
            "discord account {:?} has an empty bot token",
            settings.account
        )));
    }
    Ok(token)
}

impl Actor for DiscordActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.guard.liveness().attach(ctx);
        tracing::info!(account = %self.settings.account, "discord channel starting");
        self.start_up(ctx);
        ctx.run_interval(ACK_CHECK_EVERY, |act, ctx| act.watchdog(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.link.stopped();
        // serenity's shard runs in tasks of its own: close it so a restarted actor is the
        // only session of this bot.
        if let (Some(shards), Ok(runtime)) =
            (self.shards.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move { shards.shutdown_all().await });
        }
    }
}

crate::child_controls!(DiscordActor, |this| this.chats.queued());

impl Handler<Shutdown> for DiscordActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<DescribeChannel> for DiscordActor {
    type Result = ChannelSnapshot;
    fn handle(&mut self, _: DescribeChannel, _: &mut Self::Context) -> ChannelSnapshot {
        let mut snapshot = self.snapshot.clone();
        snapshot.queued = self.chats.queued()
            + self.held.len()
            + self.to_journal.iter().map(Vec::len).sum::<usize>();
        snapshot
    }
}

impl Handler<SessionReady> for DiscordActor {
    type Result = ();
    fn handle(&mut self, ready: SessionReady, ctx: &mut Self::Context) {
        if let Some(first) = &self.session {
            // serenity re-identified: it restarts a shard whose heartbeat went
            // unacknowledged (then the ACKs stopped well over an interval ago), or whose
            // socket dropped and could not resume.
            let cause = match self.acks.silent_for(1.5, Duration::ZERO, Instant::now()) {
                Some(silence) => format!(
                    "discord shard restarted without a heartbeat ACK (none for {} ms)",
                    silence.as_millis()
                ),
                None => "discord gateway connection lost (socket dropped or reconnect requested)"
                    .to_string(),
            };
            let why = format!(
                "{cause}: session {first} replaced by {}; restarting the channel to backfill",
                ready.session_id
            );
            return self.fail(why, ctx);
        }
        tracing::info!(account = %self.settings.account, bot = %ready.user_name, "discord gateway ready");
        self.session = Some(ready.session_id);
        self.me = Some(ready.user_id);
        self.snapshot.bot = Some(ready.user_name);
        self.snapshot.connected_since = Some(now_ms());
        self.link.ok();
        self.backfill(ctx);
    }
}

impl Handler<Incoming> for DiscordActor {
    type Result = ();
    fn handle(&mut self, Incoming(message): Incoming, ctx: &mut Self::Context) {
        if self.backfilling {
            self.held.push(message);
        } else {
            self.queue_journal(vec![message], ctx);
        }
    }
}

impl Handler<StageChanged> for DiscordActor {
    type Result = ();
    fn handle(&mut self, change: StageChanged, ctx: &mut Self::Context) {
        if change.old == ConnectionStage::Connected && change.new != ConnectionStage::Connected {
            let why = format!(
                "discord gateway connection lost (shard went from {:?} to {:?}); restarting the channel to backfill",
                change.old, change.new
            );
            self.fail(why, ctx);
        }
    }
}

impl Handler<super::Deliver> for DiscordActor {
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

impl Handler<super::ProbeChannel> for DiscordActor {
    type Result = ResponseFuture<Result<String, String>>;
    fn handle(&mut self, _: super::ProbeChannel, _: &mut Self::Context) -> Self::Result {
        let rest = self.rest.clone();
        Box::pin(async move {
            rest.me()
                .await
                .map(|(_, name)| name)
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strip_mention;

    #[test]
    fn mentions_of_the_bot_are_stripped() {
        assert_eq!(strip_mention("<@42> hello", 42), "hello");
        assert_eq!(strip_mention("hi <@!42>", 42), "hi");
        assert_eq!(strip_mention("<@42>", 42), "<@42>");
        assert_eq!(strip_mention("<@7> other", 42), "<@7> other");
    }
}
