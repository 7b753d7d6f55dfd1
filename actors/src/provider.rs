//! Model providers behind one interface: `openai` (any Chat Completions server), `anthropic`
//! (Messages API) and the built-in `echo`. Streaming (SSE) with tool calls, timeouts for
//! connect / first byte / idle between chunks, and retries with backoff on 429, 5xx and
//! connection errors (honouring `Retry-After`) as long as nothing was streamed yet.

pub mod anthropic;
pub mod openai;
pub mod sse;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::echo::{EchoSettings, echo_deltas, simulated_failure};
use crate::gateway::Secret;

/// One message of the conversation sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    /// From the user.
    User(String),
    /// From the model, possibly calling tools.
    Assistant {
        /// Text.
        text: String,
        /// Tool calls it made.
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result, answering a call.
    ToolResult {
        /// The call answered.
        call_id: String,
        /// Tool name.
        name: String,
        /// Result text (JSON or prose).
        content: String,
        /// True when the tool failed.
        is_error: bool,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: Value,
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    /// Provider's call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// A request to a model.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// System prompt (the persona).
    pub system: Option<String>,
    /// Conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools offered.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output limit.
    pub max_tokens: Option<u32>,
    /// Images attached to the last user message (providers that take images add them).
    pub images: Vec<crate::attachments::ImageInput>,
}

impl ChatRequest {
    /// Index of the last user message (the one attached images belong to).
    pub fn last_user_index(&self) -> Option<usize> {
        self.messages
            .iter()
            .rposition(|m| matches!(m, ChatMessage::User(_)))
    }
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Self) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
    }
}

/// What a model answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// Text.
    pub text: String,
    /// Tool calls to run before the next step.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used.
    pub usage: Usage,
}

/// A streamed piece, reported as it arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamDelta {
    /// More text.
    Text(String),
    /// A tool call began.
    ToolStarted {
        /// Tool name.
        name: String,
    },
}

/// Why a provider call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// No connection, or it broke.
    #[error("{provider}: connection failed: {message}")]
    Connection {
        /// Provider name.
        provider: &'static str,
        /// Cause.
        message: String,
    },
    /// A timeout.
    #[error("{provider}: timed out waiting for {phase} after {after:?}")]
    Timeout {
        /// Provider name.
        provider: &'static str,
        /// connect | first byte | next chunk.
        phase: &'static str,
        /// The limit.
        after: Duration,
    },
    /// An HTTP error status.
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        /// Provider name.
        provider: &'static str,
        /// Status code.
        status: u16,
        /// The API's error message.
        message: String,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// The response could not be understood.
    #[error("{provider}: malformed response: {message}")]
    Malformed {
        /// Provider name.
        provider: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Misconfiguration (no API key...).
    #[error("{0}")]
    Config(String),
    /// A failure the echo provider was asked to simulate.
    #[error("{0}")]
    Simulated(String),
}

impl ProviderError {
    /// A response that could not be understood.
    pub fn malformed(provider: &'static str, message: impl Into<String>) -> Self {
        Self::Malformed {
            provider,
            message: message.into(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Connection { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Timeouts and retries of HTTP providers.
#[derive(Debug, Clone, Copy)]
pub struct HttpPolicy {
    /// TCP/TLS connect.
    pub connect: Duration,
    /// From request sent to response headers.
    pub first_byte: Duration,
    /// Between two chunks of a stream.
    pub idle: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay (doubles).
    pub backoff: Duration,
}

/// A configured HTTP provider endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL (`https://api.openai.com/v1`, `https://api.anthropic.com`).
    pub base_url: String,
    /// API key (never logged).
    pub api_key: Option<Secret>,
    /// Timeouts and retries.
    pub policy: HttpPolicy,
}

/// The provider an agent talks to.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Built-in, offline.
    Echo(EchoSettings),
    /// OpenAI-compatible Chat Completions.
    OpenAi(Endpoint, reqwest::Client),
    /// Anthropic Messages.
    Anthropic(Endpoint, reqwest::Client),
}

/// Builds the shared HTTP client with the policy's connect timeout.
pub fn http_client(policy: &HttpPolicy) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(policy.connect)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ProviderError::Config(format!("cannot build HTTP client: {e}")))
}

impl Provider {
    /// Streams one completion, with retries while nothing has been streamed.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        on_delta: &mut (dyn FnMut(StreamDelta) + Send),
    ) -> Result<Completion, ProviderError> {
        let endpoint = match self {
            Self::Echo(settings) => return echo_complete(*settings, req, on_delta).await,
            Self::OpenAi(endpoint, _) | Self::Anthropic(endpoint, _) => endpoint,
        };
        let mut tries = 0;
        loop {
            let mut streamed = false;
            let result = {
                let mut track = |d: StreamDelta| {
                    streamed = true;
                    on_delta(d);
                };
                match self {
                    Self::OpenAi(e, client) => openai::complete(client, e, req, &mut track).await,
                    Self::Anthropic(e, client) => {
                        anthropic::complete(client, e, req, &mut track).await
                    }
                    Self::Echo(settings) => echo_complete(*settings, req, &mut track).await,
                }
            };
            match result {
                Err(e) if e.retryable() && !streamed && tries < endpoint.policy.max_retries => {
                    let wait = match &e {
                        ProviderError::Status {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(Duration::from_secs(60)),
                        _ => endpoint
                            .policy
                            .backoff
                            .saturating_mul(2u32.saturating_pow(tries)),
                    };
                    tries += 1;
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, attempt = tries, "provider call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

async fn echo_complete(
    settings: EchoSettings,
    req: &ChatRequest,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<Completion, ProviderError> {
    let input = req
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            ChatMessage::User(t) => Some(t.as_str()),
            _ => None,
        })
        .unwrap_or("");
    if let Some(error) = simulated_failure(input) {
        return Err(ProviderError::Simulated(error));
    }
    let mut text = String::new();
    for delta in echo_deltas(input) {
        if !settings.delta_delay.is_zero() {
            tokio::time::sleep(settings.delta_delay).await;
        }
        text.push_str(&delta);
        on_delta(StreamDelta::Text(delta));
    }
    Ok(Completion {
        usage: Usage {
            input_tokens: 0,
            output_tokens: 0,
        },
        text,
        tool_calls: Vec::new(),
    })
}

/// Reads `Retry-After` (seconds) from a response.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// The most bytes read from a provider's error body; the rest is never read.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The most characters of a provider's error message kept in the run's error.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// Reads at most `limit` bytes of a body (what arrived before a broken connection, if it
/// breaks), as text.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Sends a request with the first-byte timeout and maps failures.
pub(crate) async fn send(
    provider: &'static str,
    request: reqwest::RequestBuilder,
    policy: &HttpPolicy,
) -> Result<reqwest::Response, ProviderError> {
    let response = match tokio::time::timeout(policy.first_byte, request.send()).await {
        Err(_) => {
            return Err(ProviderError::Timeout {
                provider,
                phase: "the first byte",
                after: policy.first_byte,
            });
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(ProviderError::Timeout {
                provider,
                phase: "connect",
                after: policy.connect,
            });
        }
        Ok(Err(e)) => {
            return Err(ProviderError::Connection {
                provider,
                message: e.to_string(),
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = tokio::time::timeout(policy.idle, read_bounded(response, MAX_ERROR_BODY_BYTES))
        .await
        .unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(body)
        .chars()
        .take(MAX_ERROR_MESSAGE_CHARS)
        .collect();
    Err(ProviderError::Status {
        provider,
        status: status.as_u16(),
        message,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::RETRY_AFTER,
            value.parse().expect("header value"),
        );
        h
    }

    #[test]
    fn retry_after_accepts_seconds_and_ignores_nonsense_without_panicking() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers("0.5")),
            Some(Duration::from_millis(500))
        );
        for bad in ["inf", "1e20", "-3", "NaN", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(retry_after(&headers(bad)), None, "{bad}");
        }
    }
}
