//! The store's channel records: the inbound journal (unique per account + chat + platform
//! message id), outbound deliveries (pending → sent), poll offsets, pairing codes and
//! approved senders. Types, the [`ChannelStore`] backend trait, and the typed operations
//! channels send to the store (SQL in `sqlite/channels.rs`).

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::ops::store_op;
use crate::messages::{RunId, SessionKey};

/// How a journaled message may reach its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// It may (open policy, an allowed sender, a group message that passed its policy).
    Pass,
    /// Only if the sender is approved in the store; otherwise it is kept from the agent and,
    /// when `pair`, the sender gets a pairing code.
    Approved {
        /// Offer a pairing code to an unknown sender.
        pair: bool,
    },
}

/// An inbound message to journal.
#[derive(Debug, Clone)]
pub struct NewInbound {
    /// Chat id on the platform.
    pub chat_id: String,
    /// Platform message id (unique within the chat).
    pub message_id: String,
    /// Sender's user id.
    pub sender_id: String,
    /// Sender's display name (for pairing lists).
    pub sender_name: String,
    /// The session it runs in.
    pub session_key: SessionKey,
    /// The text.
    pub text: String,
    /// Files the message carries (downloaded only once it may run).
    pub files: Vec<InboundFile>,
    /// Access check still to make.
    pub gate: Gate,
}

/// What kind of file a user sent, as the platform said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundFileKind {
    /// A Telegram photo (its largest size).
    Photo,
    /// A Telegram document.
    Document,
    /// A Telegram voice note.
    Voice,
    /// A Telegram audio file.
    Audio,
    /// A Discord message attachment.
    Attachment,
}

/// A file a user sent, as the platform names it: journaled with the message, downloaded
/// into `uploads/` before its turn runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundFile {
    /// Photo, document, voice, audio, attachment.
    pub kind: InboundFileKind,
    /// Where to get it: a Telegram `file_id`, a Discord attachment URL.
    pub source: String,
    /// Its name (as sent, or made up for a photo or voice note).
    pub name: String,
    /// The type the platform gave, if any (only a hint: the bytes decide).
    pub mime: Option<String>,
    /// The size the platform gave, bytes, if any.
    pub size: Option<u64>,
}

/// A journaled inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// Journal id (increasing).
    pub id: i64,
    /// Chat id.
    pub chat_id: String,
    /// Platform message id.
    pub message_id: String,
    /// Sender.
    pub sender_id: String,
    /// Session key.
    pub session_key: SessionKey,
    /// Text.
    pub text: String,
    /// Files the message carries, as the platform names them.
    pub files: Vec<InboundFile>,
    /// The files once downloaded into `uploads/` (`None`: not yet; empty when none could
    /// be, the text then says why).
    pub attachments: Option<Vec<crate::attachments::AttachmentRef>>,
}

/// An outbound message part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Delivery id (increasing: the send order within a chat).
    pub id: i64,
    /// Chat id.
    pub chat_id: String,
    /// The inbound message it answers.
    pub inbound_id: Option<i64>,
    /// Part number of a split reply.
    pub part: i64,
    /// Text (a file part: the file's name).
    pub text: String,
    /// The file this part sends instead of text (a reply's `[IMAGE:]` / `[FILE:]`).
    pub attachment: Option<crate::attachments::AttachmentRef>,
}

/// What recording an operator send produced.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// The send's deliveries (new, or those of the earlier send with the same key).
    pub deliveries: Vec<DeliveryRecord>,
    /// False when the key was used before: nothing new was recorded.
    pub created: bool,
}

/// Where one delivery stands.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// Delivery id.
    pub id: i64,
    /// Part number.
    pub part: i64,
    /// pending | sent | failed.
    pub state: String,
    /// The platform's message id once sent.
    pub platform_message_id: Option<String>,
    /// Why the platform refused it, if it did.
    pub error: Option<String>,
}

/// What journaling a batch produced.
#[derive(Debug, Default)]
pub struct JournalOutcome {
    /// New messages that may run, in journal order.
    pub accepted: Vec<InboundRecord>,
    /// Pairing notices to send (one per blocked message of a sender offered a code).
    pub notices: Vec<DeliveryRecord>,
    /// Messages seen before (redelivered), ignored.
    pub duplicates: usize,
}

/// A pending pairing request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PairingRecord {
    /// telegram | discord.
    pub channel: String,
    /// Account name.
    pub account: String,
    /// Sender's user id.
    pub sender_id: String,
    /// Sender's display name.
    pub name: String,
    /// The code to approve.
    pub code: String,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Expires (ms since the epoch).
    pub expires_at: i64,
}

/// Limits of pairing.
#[derive(Debug, Clone)]
pub struct PairingRules {
    /// A fresh code to use if the sender needs a new one.
    pub fresh_code: String,
    /// How long a code is valid, ms.
    pub ttl_ms: i64,
    /// Pending codes allowed per account.
    pub max_pending: i64,
}

/// Where the rows belong.
#[derive(Debug, Clone)]
pub struct Account {
    /// telegram | discord.
    pub channel: String,
    /// Account name.
    pub account: String,
}

/// What a backend stores for channels.
pub trait ChannelStore {
    /// The saved poll offset of an account.
    fn load_offset(&mut self, acc: &Account) -> Result<Option<i64>, StoreError>;
    /// Journals a batch and saves the next offset together: once it is committed the
    /// batch may be acknowledged to the platform. Redelivered messages are counted, not
    /// journaled again; messages from senders not (yet) approved are kept from the agent.
    fn journal_batch(
        &mut self,
        acc: &Account,
        items: Vec<NewInbound>,
        next_offset: Option<i64>,
        rules: &PairingRules,
    ) -> Result<JournalOutcome, StoreError>;
    /// Records a message's files as downloaded (its text now saying what could not be),
    /// once: a second call for the same message changes nothing.
    fn save_inbound_files(
        &mut self,
        id: i64,
        text: &str,
        attachments: &[crate::attachments::AttachmentRef],
    ) -> Result<(), StoreError>;
    /// Inbound messages journaled but not yet answered, oldest first.
    fn pending_inbound(&mut self, acc: &Account) -> Result<Vec<InboundRecord>, StoreError>;
    /// Deliveries not yet sent, in send order.
    fn pending_deliveries(&mut self, acc: &Account) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Records a run's reply as deliveries and closes the inbound message, together: the
    /// reply is owed from here on, and the message never runs again.
    fn record_reply(
        &mut self,
        acc: &Account,
        inbound: &InboundRecord,
        run_id: &RunId,
        parts: &[String],
        files: &[crate::attachments::AttachmentRef],
    ) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// A delivery reached the platform as message `platform_id`.
    fn mark_sent(&mut self, id: i64, platform_id: &str) -> Result<(), StoreError>;
    /// The platform refused a delivery for good.
    fn mark_failed(&mut self, id: i64, error: &str) -> Result<(), StoreError>;
    /// Deliveries of an account still pending.
    fn count_pending(&mut self, acc: &Account) -> Result<i64, StoreError>;
    /// Pending pairing requests that have not expired, oldest first.
    fn list_pairings(&mut self) -> Result<Vec<PairingRecord>, StoreError>;
    /// Approves a pending, unexpired code (its sender is allowed from now on); `None` when
    /// no such code is pending.
    fn approve_pairing(&mut self, code: &str) -> Result<Option<PairingRecord>, StoreError>;
    /// Records an operator send as deliveries under its idempotency key; when the key was
    /// used before on this account, nothing is recorded and the earlier deliveries are
    /// returned with `created` false.
    fn record_send(
        &mut self,
        acc: &Account,
        chat_id: &str,
        key: &str,
        parts: &[String],
    ) -> Result<SendRecord, StoreError>;
    /// The deliveries of an operator send, in part order.
    fn send_status(&mut self, acc: &Account, key: &str) -> Result<Vec<DeliveryStatus>, StoreError>;
    /// The Discord channels an account has seen, with the newest message id seen in each.
    fn known_channels(&mut self, account: &str) -> Result<Vec<KnownChannel>, StoreError>;
    /// Records channels and moves their `last_seen` forward (never back).
    fn advance_channels(
        &mut self,
        account: &str,
        channels: &[KnownChannel],
    ) -> Result<(), StoreError>;
}

/// A Discord channel an account has seen (a DM when `guild_id` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownChannel {
    /// Channel id.
    pub channel_id: String,
    /// The guild of a guild channel; `None` for a DM.
    pub guild_id: Option<String>,
    /// The newest message id seen in it (a snowflake, increasing).
    pub last_seen: i64,
}

store_op!(
    /// The saved poll offset of an account.
    LoadOffset { account: Account } -> Option<i64>, "channel_load_offset", false,
    |op, store| store.load_offset(&op.account)
);

store_op!(
    /// Journals a batch of inbound messages with the next poll offset.
    JournalBatch { account: Account, items: Vec<NewInbound>, next_offset: Option<i64>, rules: PairingRules }
        -> JournalOutcome, "channel_journal", true,
    |op, store| store.journal_batch(&op.account, op.items, op.next_offset, &op.rules)
);

store_op!(
    /// Inbound messages not yet answered.
    PendingInbound { account: Account } -> Vec<InboundRecord>, "channel_pending_inbound", false,
    |op, store| store.pending_inbound(&op.account)
);

store_op!(
    /// A message's files are downloaded: its attachments (and its text, with notes about
    /// files that could not be) are kept for the turn, also across a restart.
    SaveInboundFiles { id: i64, text: String, attachments: Vec<crate::attachments::AttachmentRef> }
        -> (), "channel_save_inbound_files", true,
    |op, store| store.save_inbound_files(op.id, &op.text, &op.attachments)
);

store_op!(
    /// Deliveries not yet sent.
    PendingDeliveries { account: Account } -> Vec<DeliveryRecord>, "channel_pending_deliveries", false,
    |op, store| store.pending_deliveries(&op.account)
);

store_op!(
    /// Records a reply (its text parts, then its files) as deliveries and closes its
    /// inbound message.
    RecordReply { account: Account, inbound: InboundRecord, run_id: RunId, parts: Vec<String>, files: Vec<crate::attachments::AttachmentRef> }
        -> Vec<DeliveryRecord>, "channel_record_reply", true,
    |op, store| store.record_reply(&op.account, &op.inbound, &op.run_id, &op.parts, &op.files)
);

store_op!(
    /// A delivery was sent.
    MarkSent { id: i64, platform_id: String } -> (), "channel_mark_sent", true,
    |op, store| store.mark_sent(op.id, &op.platform_id)
);

store_op!(
    /// A delivery was refused for good.
    MarkFailed { id: i64, error: String } -> (), "channel_mark_failed", true,
    |op, store| store.mark_failed(op.id, &op.error)
);

store_op!(
    /// Deliveries of an account still pending.
    CountPending { account: Account } -> i64, "channel_count_pending", false,
    |op, store| store.count_pending(&op.account)
);

store_op!(
    /// Pending pairing requests.
    ListPairings {} -> Vec<PairingRecord>, "pairing_list", false,
    |_op, store| store.list_pairings()
);

store_op!(
    /// Approves a pairing code.
    ApprovePairing { code: String } -> Option<PairingRecord>, "pairing_approve", true,
    |op, store| store.approve_pairing(&op.code)
);

store_op!(
    /// What an account resumes from at start: its poll offset, the deliveries still owed
    /// and the inbound messages not yet answered.
    ResumeAccount { account: Account } -> (Option<i64>, Vec<DeliveryRecord>, Vec<InboundRecord>),
    "channel_resume", false,
    |op, store| Ok((
        store.load_offset(&op.account)?,
        store.pending_deliveries(&op.account)?,
        store.pending_inbound(&op.account)?,
    ))
);

store_op!(
    /// The Discord channels an account has seen, to backfill after a (re)connect.
    KnownChannels { account: String } -> Vec<KnownChannel>, "discord_known_channels", false,
    |op, store| store.known_channels(&op.account)
);

store_op!(
    /// Journals Discord messages and moves each channel's last seen id forward, together.
    JournalDiscord { account: Account, items: Vec<NewInbound>, channels: Vec<KnownChannel>, rules: PairingRules }
        -> JournalOutcome, "discord_journal", true,
    |op, store| {
        let outcome = store.journal_batch(&op.account, op.items, None, &op.rules)?;
        store.advance_channels(&op.account.account, &op.channels)?;
        Ok(outcome)
    }
);

store_op!(
    /// Records an operator send (idempotent per account + key).
    RecordSend { account: Account, chat_id: String, key: String, parts: Vec<String> }
        -> SendRecord, "channel_record_send", true,
    |op, store| store.record_send(&op.account, &op.chat_id, &op.key, &op.parts)
);

store_op!(
    /// Where the deliveries of an operator send stand.
    SendStatus { account: Account, key: String } -> Vec<DeliveryStatus>, "channel_send_status", false,
    |op, store| store.send_status(&op.account, &op.key)
);
