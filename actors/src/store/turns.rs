//! The store's domain types: runs, transcript messages and pages, sessions, usage. What
//! callers send and get back; the SQL behind them is in [`super::sqlite`].

use serde::{Deserialize, Serialize};

use crate::messages::{AgentId, RunId, RunStatus, SessionKey, TurnOptions};

/// A run (one agent turn) as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Run id (uuid).
    pub id: RunId,
    /// Global acceptance order.
    pub seq: i64,
    /// Session key.
    pub session_key: SessionKey,
    /// Agent id.
    pub agent_id: AgentId,
    /// queued | running | ok | error | aborted | coalesced.
    pub status: String,
    /// Queue mode it was submitted with.
    pub mode: String,
    /// The user's message.
    pub input: String,
    /// The reply, when finished.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// For `coalesced` runs: the run that carried them.
    pub coalesced_into: Option<String>,
    /// Accepted (ms since the epoch).
    pub accepted_at: i64,
    /// Finished (ms since the epoch).
    pub finished_at: Option<i64>,
    /// Files the reply sends (its markers), in order (a queued run's own files are in
    /// [`RunRecord::input_attachments`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::attachments::AttachmentRef>,
    /// Files the user's message came with; read only where a queued run is picked up from
    /// the store (recovery after a restart, a retry of a turn no lane holds), so it runs
    /// with them. Empty elsewhere.
    #[serde(skip)]
    pub input_attachments: Vec<crate::attachments::AttachmentRef>,
    /// The per-turn options it was accepted with (the defaults for rows older than schema
    /// 13): a queued run picked up from the store runs with them.
    #[serde(skip)]
    pub options: RunOptions,
}

/// The per-turn options a run keeps in the store (`runs.options`, JSON): what a queued run
/// recovered after a restart needs to run as it was asked. The message's files are not
/// here: they are stored with its user message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    /// [`TurnOptions::timeout`], in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// [`TurnOptions::extra_system_prompt`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_system_prompt: Option<String>,
    /// [`TurnOptions::model`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl RunOptions {
    /// The stored part of a turn's options.
    pub fn of(options: &TurnOptions) -> Self {
        Self {
            timeout_ms: options
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            extra_system_prompt: options.extra_system_prompt.clone(),
            model: options.model.clone(),
        }
    }

    /// The turn's options again, with the files of its user message.
    pub fn with_attachments(
        self,
        attachments: Vec<crate::attachments::AttachmentRef>,
    ) -> TurnOptions {
        TurnOptions {
            timeout: self.timeout_ms.map(std::time::Duration::from_millis),
            extra_system_prompt: self.extra_system_prompt,
            model: self.model,
            attachments,
        }
    }

    /// The column's text: `None` (NULL) when every option is the default.
    pub fn to_store_json(&self) -> Option<String> {
        if *self == Self::default() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// The options from the column's text: the defaults when NULL (older rows) or
    /// unreadable (said in the log).
    pub fn from_store_json(text: Option<&str>) -> Self {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Self::default();
        };
        serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored turn options are unreadable; the run uses the agent's defaults");
            Self::default()
        })
    }
}

/// One transcript entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// Message id (increasing).
    pub id: i64,
    /// user | assistant | tool.
    pub role: String,
    /// Text.
    pub text: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// The run it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The message is waiting in the session's lane; its turn has not run yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// `text` was cut to [`HistoryPage::max_text_bytes`]; `bytes` is the full length.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Full length of the text in bytes (given when `truncated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Files attached to the message (the user's uploads, the reply's markers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::attachments::AttachmentRef>,
    /// For a `tool` message: which tool was called, its call id, whether it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolMeta>,
}

/// What a `tool` transcript message was (its `text` is the readable call and result).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolMeta {
    /// The tool's name (built-in, or `server__tool` for MCP tools).
    pub name: String,
    /// The model's id of the call.
    pub call_id: String,
    /// The tool failed (its result is the error).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// One tool call of a run and its result, stored as a `tool` message of the run's turn
/// when the run ends (before its reply). Its text is made (and bounded) when the step
/// happens, so a run holds at most [`ToolStep::MAX_TEXT_BYTES`] per step until it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolStep {
    /// Name, call id, failure.
    pub meta: ToolMeta,
    /// The transcript text: `name(arguments)` on the first line, then `→ result` (or
    /// `→ error: ...`), cut to [`ToolStep::MAX_TEXT_BYTES`] on a character boundary.
    pub text: String,
    /// The full length of the text in bytes when it was cut.
    pub full_bytes: Option<i64>,
    /// When the result came (ms since the epoch).
    pub ts: i64,
}

impl ToolStep {
    /// Bytes of a tool message's text as stored: longer steps are cut (on a character
    /// boundary) and stored with their full length, so history flags them `truncated`.
    pub const MAX_TEXT_BYTES: usize = 16 * 1024;

    /// The step of a call with `arguments` (the model's JSON text) that got `result` (the
    /// error text when `meta.is_error`), at `ts`.
    pub fn new(meta: ToolMeta, arguments: &str, result: &str, ts: i64) -> Self {
        let arrow = if meta.is_error { "→ error: " } else { "→ " };
        let full_len = meta.name.len() + arguments.len() + 3 + arrow.len() + result.len();
        let mut text = String::with_capacity(full_len.min(Self::MAX_TEXT_BYTES));
        for part in [meta.name.as_str(), "(", arguments, ")\n", arrow, result] {
            let room = Self::MAX_TEXT_BYTES - text.len();
            if part.len() <= room {
                text.push_str(part);
            } else {
                let mut end = room;
                while !part.is_char_boundary(end) {
                    end -= 1;
                }
                text.push_str(&part[..end]);
                break;
            }
        }
        let full_bytes = (text.len() < full_len).then_some(full_len as i64);
        Self {
            meta,
            text,
            full_bytes,
            ts,
        }
    }
}

/// What a client asks of a transcript page.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPage {
    /// At most this many messages.
    pub limit: i64,
    /// Messages before this message id (in turn order); `None` for the newest.
    pub before: Option<i64>,
    /// At most this many bytes of text in the page (at least one message is returned).
    pub max_bytes: usize,
    /// Longer texts are cut to this many bytes and flagged `truncated`.
    pub max_text_bytes: usize,
}

impl HistoryPage {
    /// Text bytes in one page by default.
    pub const MAX_BYTES: usize = 1024 * 1024;
    /// Text bytes of one message in a page by default.
    pub const MAX_TEXT_BYTES: usize = 64 * 1024;

    /// A page of `limit` messages before `before`, with the default byte bounds.
    pub fn new(limit: i64, before: Option<i64>) -> Self {
        Self {
            limit,
            before,
            max_bytes: Self::MAX_BYTES,
            max_text_bytes: Self::MAX_TEXT_BYTES,
        }
    }
}

/// A page of a transcript, oldest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    /// The messages, in turn order.
    pub messages: Vec<StoredMessage>,
    /// Older messages exist.
    pub has_more: bool,
    /// The `before` cursor of the next (older) page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// A session in `sessions.list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// Session key.
    pub key: String,
    /// Agent id.
    pub agent_id: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last activity (ms).
    pub updated_at: i64,
    /// Messages in the transcript.
    pub messages: i64,
}

/// What happened to a submitted turn.
#[derive(Debug, Clone)]
pub enum Acceptance {
    /// Stored as a new queued run.
    New(RunRecord),
    /// The idempotency key was seen within the window: the earlier run.
    Duplicate(RunRecord),
    /// Not stored: the lane was full.
    Refused,
}

/// A turn to accept.
#[derive(Debug, Clone)]
pub struct NewTurn {
    /// Session key.
    pub session_key: SessionKey,
    /// Agent id.
    pub agent_id: AgentId,
    /// User message.
    pub text: String,
    /// Client's idempotency key.
    pub idempotency_key: Option<String>,
    /// Queue mode.
    pub mode: String,
    /// Dedupe window, ms.
    pub dedupe_window_ms: i64,
    /// When true, refuse unless it is a duplicate.
    pub lane_full: bool,
    /// Files attached to the message.
    pub attachments: Vec<crate::attachments::AttachmentRef>,
    /// The rest of its per-turn options, stored with the run.
    pub options: RunOptions,
}

/// How a run ended, as stored.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// How it ended.
    pub status: RunStatus,
    /// The reply (partial when aborted).
    pub output: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Files the reply sends (its markers).
    pub attachments: Vec<crate::attachments::AttachmentRef>,
}

/// Token and cost totals of one agent on one day (UTC).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DailyUsage {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Agent id.
    pub agent_id: String,
    /// Finished runs.
    pub runs: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost in USD.
    pub cost_usd: f64,
}

/// Token and cost totals for one grouping key.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// Agent id, session key, or day (`YYYY-MM-DD`); empty for the total.
    pub key: String,
    /// Finished runs.
    pub runs: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost in USD.
    pub cost_usd: f64,
}
