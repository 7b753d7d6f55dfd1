//! The fake LLM server alone: closed loops of streamed completions sent straight to it with
//! reqwest, at the concurrency the gateway is run with, so that what the gateway adds to a
//! turn is the difference between the two.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::BenchResult;
use crate::turns::{Timing, TurnStats};

/// Upper bound on requests one loop sends in one run, whatever its duration.
const MAX_REQUESTS_PER_LOOP: usize = 10_000_000;

/// A loop gives up after this many failed requests in one run.
const MAX_FAILURES_PER_LOOP: usize = 50;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A provider wire format, as the fake server speaks it.
#[derive(Clone, Copy)]
pub enum Format {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
}

impl Format {
    /// Both formats, in the order they are measured and printed.
    pub const ALL: [Format; 2] = [Format::OpenAi, Format::Anthropic];

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
        }
    }

    /// The id of the agent on disk that uses this format.
    pub fn agent(self) -> &'static str {
        match self {
            Format::OpenAi => "oa",
            Format::Anthropic => "an",
        }
    }

    /// A streamed request for `message`, to the fake at `base`.
    fn request(self, http: &reqwest::Client, base: &str, message: &str) -> reqwest::RequestBuilder {
        let messages = json!([{"role": "user", "content": message}]);
        match self {
            Format::OpenAi => http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth("bench-fake-key")
                .json(&json!({
                    "model": "fake-model",
                    "messages": messages,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                })),
            Format::Anthropic => http
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", "bench-fake-key")
                .header("anthropic-version", "2023-06-01")
                .json(&json!({
                    "model": "fake-model",
                    "max_tokens": 1024,
                    "messages": messages,
                    "stream": true,
                })),
        }
    }

    /// The reply text an SSE `data` payload carries, if it is a text delta.
    fn text_delta(self, data: &str) -> Option<String> {
        let value: Value = serde_json::from_str(data).ok()?;
        let text = match self {
            Format::OpenAi => &value["choices"][0]["delta"]["content"],
            Format::Anthropic if value["type"] == "content_block_delta" => &value["delta"]["text"],
            Format::Anthropic => return None,
        };
        text.as_str()
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    }
}

/// An HTTP client for the fake: loopback only, no proxy.
pub fn http_client() -> BenchResult<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// `concurrency` closed loops of streamed requests in `format` to the fake at `base`, for
/// `duration`. Submit → first text delta is the first token; → end of body, the final.
pub async fn closed_loops(
    http: &reqwest::Client,
    base: &str,
    format: Format,
    concurrency: usize,
    duration: Duration,
) -> BenchResult<TurnStats> {
    let deadline = Instant::now() + duration;
    let mut tasks = JoinSet::new();
    for n in 0..concurrency {
        let (http, base) = (http.clone(), base.to_owned());
        tasks.spawn(async move {
            let start = Instant::now();
            let mut stats = TurnStats::default();
            for turn in 0..MAX_REQUESTS_PER_LOOP {
                if Instant::now() >= deadline || stats.failed >= MAX_FAILURES_PER_LOOP {
                    break;
                }
                let message = format!("turn {turn} of loop {n}");
                let sent_at = Instant::now();
                match stream_one(&http, &base, format, &message).await {
                    Ok((first_token, text)) => {
                        let timing = Timing {
                            sent_at,
                            accepted: None,
                            first_token,
                            done: Instant::now(),
                        };
                        stats.succeed(&timing, &message, &text);
                    }
                    Err(error) => stats.fail(error.to_string()),
                }
            }
            stats.elapsed = start.elapsed();
            stats
        });
    }
    let mut parts = Vec::with_capacity(concurrency);
    while let Some(part) = tasks.join_next().await {
        parts.push(part?);
    }
    Ok(TurnStats::side_by_side(parts))
}

/// Sends one streamed request and reads it to the end: when the first text delta came, and
/// the whole reply text.
pub async fn stream_one(
    http: &reqwest::Client,
    base: &str,
    format: Format,
    message: &str,
) -> BenchResult<(Option<Instant>, String)> {
    let mut response = format.request(http, base, message).send().await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("fake LLM answered {status}: {body}").into());
    }
    let (mut pending, mut text, mut first_token) = (String::new(), String::new(), None);
    while let Some(chunk) = response.chunk().await? {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            if let Some(piece) = format.text_delta(data.trim()) {
                first_token.get_or_insert_with(Instant::now);
                text.push_str(&piece);
            }
        }
    }
    Ok((first_token, text))
}
