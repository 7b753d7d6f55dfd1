//! The WebSocket frames: OpenClaw gateway protocol core (version 4, 3 accepted).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Newest protocol version spoken.
pub const PROTOCOL_VERSION: u32 = 4;
/// Oldest protocol version accepted.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

/// Error codes of the protocol.
pub mod codes {
    /// The request was malformed or named an unknown method or field.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// Temporarily unable (full queue, restarting child): retry.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// Authenticated but not allowed.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Device not paired.
    pub const NOT_PAIRED: &str = "NOT_PAIRED";
}

/// A frame sent by a client.
#[derive(Debug, Deserialize)]
pub struct RequestFrame {
    /// Always `req`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Echoed in the response.
    pub id: String,
    /// Method name.
    pub method: String,
    /// Method parameters.
    #[serde(default)]
    pub params: Option<Value>,
}

/// The error object of a failed response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    /// One of [`codes`].
    pub code: String,
    /// Human-readable cause.
    pub message: String,
    /// Finer cause (`details.code`) and context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Whether retrying may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// Suggested wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    /// An error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }
    /// `INVALID_REQUEST` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_REQUEST, message)
    }
    /// `UNAVAILABLE`, retryable after the given delay.
    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> Self {
        let mut e = Self::new(codes::UNAVAILABLE, message);
        e.retryable = Some(true);
        e.retry_after_ms = Some(retry_after_ms);
        e
    }
    /// `FORBIDDEN` with a finer `details.code`.
    pub fn forbidden(detail: &str, message: impl Into<String>) -> Self {
        Self::new(codes::FORBIDDEN, message).with_detail(detail)
    }
    /// Adds `details.code`.
    pub fn with_detail(mut self, detail: &str) -> Self {
        self.details = Some(serde_json::json!({ "code": detail }));
        self
    }
}

/// A response frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// Always `res`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request's id.
    pub id: String,
    /// Success flag.
    pub ok: bool,
    /// Result on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Error on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorShape>,
}

impl ResponseFrame {
    /// A successful response.
    pub fn ok(id: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: "res",
            id: id.into(),
            ok: true,
            payload: Some(payload),
            error: None,
        }
    }
    /// A failed response.
    pub fn err(id: impl Into<String>, error: ErrorShape) -> Self {
        Self {
            kind: "res",
            id: id.into(),
            ok: false,
            payload: None,
            error: Some(error),
        }
    }
}

/// An event frame.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFrame<'a> {
    /// Always `event`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Event name.
    pub event: &'a str,
    /// Event data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Value>,
    /// Per-connection sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The state versions after this event (`presence`, `health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_version: Option<troupe_actors::event_bus::StateVersion>,
}

/// Credentials in `connect`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectAuth {
    /// Shared gateway token.
    #[serde(default)]
    pub token: Option<String>,
    /// Gateway password.
    #[serde(default)]
    pub password: Option<String>,
}

/// The client description in `connect` (other fields are accepted and ignored).
#[derive(Debug, Default, Deserialize)]
pub struct ConnectClient {
    /// Client kind (`cli`, `webchat`, ...).
    #[serde(default)]
    pub id: Option<String>,
    /// Client version.
    #[serde(default)]
    pub version: Option<String>,
    /// Platform.
    #[serde(default)]
    pub platform: Option<String>,
    /// Mode.
    #[serde(default)]
    pub mode: Option<String>,
    /// The client instance (listed in presence).
    #[serde(default, rename = "instanceId")]
    pub instance_id: Option<String>,
    /// A name for humans (listed in presence as `host`).
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
    /// Device family (listed in presence).
    #[serde(default, rename = "deviceFamily")]
    pub device_family: Option<String>,
}

/// Parameters of the `connect` request. Unknown fields OpenClaw clients send are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    /// Lowest protocol version the client speaks.
    pub min_protocol: u32,
    /// Highest protocol version the client speaks.
    pub max_protocol: u32,
    /// Who the client is.
    #[serde(default)]
    pub client: ConnectClient,
    /// `operator` (default) or `node`.
    #[serde(default)]
    pub role: Option<String>,
    /// Requested scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<ConnectAuth>,
}

/// Operator scopes, ordered: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read-only methods.
    Read,
    /// Methods with side effects.
    Write,
    /// Config, supervisor control, fault injection.
    Admin,
}

impl Scope {
    /// Parses `operator.read` / `operator.write` / `operator.admin`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator.read" => Some(Self::Read),
            "operator.write" => Some(Self::Write),
            "operator.admin" => Some(Self::Admin),
            _ => None,
        }
    }
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "operator.read",
            Self::Write => "operator.write",
            Self::Admin => "operator.admin",
        }
    }
}
