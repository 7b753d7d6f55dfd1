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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn off_by_default_and_on_with_the_openai_providers_url_and_key() {
        let cfg = Config::from_toml_str("").expect("defaults");
        assert!(cfg.transcription.is_none());
        let cfg = Config::from_toml_str(
            "[providers.openai]\nbase_url = \"http://127.0.0.1:9/v1/\"\n[transcription]\nenabled = true\n",
        )
        .expect("valid");
        let t = cfg.transcription.expect("on");
        assert_eq!(t.url(), "http://127.0.0.1:9/v1/audio/transcriptions");
        assert_eq!(t.model, "whisper-1");
        assert_eq!(t.endpoint.api_key_env, "OPENAI_API_KEY");
        assert_eq!(t.max_bytes, 25 * 1024 * 1024);
        let own = Config::from_toml_str(
            "[transcription]\nenabled = true\nbase_url = \"https://stt.example/v1\"\napi_key_file = \"/run/stt.key\"\nmodel = \"gpt-4o-transcribe\"\n",
        )
        .expect("valid")
        .transcription
        .expect("on");
        assert_eq!(own.url(), "https://stt.example/v1/audio/transcriptions");
        assert_eq!(
            (
                own.endpoint.api_key_env.as_str(),
                own.endpoint.api_key_file.as_str()
            ),
            ("", "/run/stt.key")
        );
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = Config::from_toml_str(
            "[transcription]\nbase_url = \"ftp://x\"\nmodel = \" \"\nmax_bytes = 0\ntimeout_secs = 0\n",
        )
        .expect_err("invalid")
        .to_string();
        for key in [
            "transcription.base_url",
            "transcription.model",
            "transcription.max_bytes",
            "transcription.timeout_secs",
        ] {
            assert!(err.contains(key), "{key} in {err}");
        }
        let err = Config::from_toml_str("[transcription]\nenabled = \"yes\"\n")
            .expect_err("a string is not a boolean")
            .to_string();
        assert!(err.contains("transcription.enabled"), "{err}");
        let err = Config::from_toml_str("[transcription]\napi_key = \"sk-inline\"\n")
            .expect_err("no inline key")
            .to_string();
        assert!(err.contains("api_key"), "{err}");
    }
}
