//! `[transcription]`: audio attachments sent to an OpenAI-compatible
//! `POST {base_url}/audio/transcriptions` before the model sees the message (off unless
//! `enabled`). The key is found like a provider's (`api_key_env`, else `api_key_file`;
//! both empty: the openai provider's) when the agents are built, and never logged. Every
//! error names its key.

use std::time::Duration;

use serde::Deserialize;

use super::EndpointConfig;

/// The largest `transcription.max_bytes`: 1 GiB.
const MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// The `[transcription]` table (every key has a default in the embedded config).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTranscription {
    enabled: bool,
    base_url: String,
    model: String,
    api_key_env: String,
    api_key_file: String,
    max_bytes: u64,
    timeout_secs: u64,
}

impl Default for RawTranscription {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: String::new(),
            model: "whisper-1".into(),
            api_key_env: String::new(),
            api_key_file: String::new(),
            max_bytes: 25 * 1024 * 1024,
            timeout_secs: 60,
        }
    }
}

/// Validated transcription settings (present only when enabled).
#[derive(Debug, Clone)]
pub struct TranscriptionConfig {
    /// Where the API is and where its key comes from (the openai provider's when not set).
    pub endpoint: EndpointConfig,
    /// The model.
    pub model: String,
    /// Largest audio file sent, bytes.
    pub max_bytes: u64,
    /// Time allowed for one transcription.
    pub timeout: Duration,
}

impl TranscriptionConfig {
    /// `POST` here.
    pub fn url(&self) -> String {
        format!(
            "{}/audio/transcriptions",
            self.endpoint.base_url.trim_end_matches('/')
        )
    }
}

/// Validates `[transcription]` (all of it, enabled or not), reporting each problem
/// through `bad(key, why)`; `None` when it is off.
pub(super) fn settings(
    raw: RawTranscription,
    openai: &EndpointConfig,
    bad: &mut impl FnMut(&str, String),
) -> Option<TranscriptionConfig> {
    let base_url = if raw.base_url.trim().is_empty() {
        openai.base_url.clone()
    } else {
        raw.base_url.trim().to_string()
    };
    let host = base_url
        .strip_prefix("http://")
        .or_else(|| base_url.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or(""));
    if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
        bad(
            "transcription.base_url",
            format!("{base_url:?} must be an http:// or https:// URL"),
        );
    }
    if raw.model.trim().is_empty() {
        bad("transcription.model", "must not be empty".into());
    }
    if !(1..=MAX_BYTES).contains(&raw.max_bytes) {
        bad(
            "transcription.max_bytes",
            format!("must be between 1 and {MAX_BYTES} (1 GiB)"),
        );
    }
    if raw.timeout_secs == 0 {
        bad("transcription.timeout_secs", "must be at least 1".into());
    }
    if !raw.enabled {
        return None;
    }
    let own_key = !raw.api_key_env.is_empty() || !raw.api_key_file.is_empty();
    Some(TranscriptionConfig {
        endpoint: EndpointConfig {
            base_url,
            api_key_env: if own_key {
                raw.api_key_env
            } else {
                openai.api_key_env.clone()
            },
            api_key_file: if own_key {
                raw.api_key_file
            } else {
                openai.api_key_file.clone()
            },
        },
        model: raw.model.trim().to_string(),
        max_bytes: raw.max_bytes,
        timeout: Duration::from_secs(raw.timeout_secs),
    })
}
