//! Audio transcription (`[transcription]`): before a turn's message reaches the model, each
//! audio attachment (a Telegram voice note or audio file, a Discord audio attachment, a WS
//! attachment with an `audio/*` type) is sent to an OpenAI-compatible
//! `POST {base_url}/audio/transcriptions` (multipart fields `file` and `model`; the answer
//! is `{"text": ...}`), and the transcript goes into the user's message instead of the
//! audio. A failure (server down, an error status, a timeout, a file over the limit) is
//! said in the message; the turn still runs. A transcript is kept beside its file
//! (`<name>.transcript.txt`): a turn run again after a crash does not transcribe twice, and
//! later turns see it in their history.

use std::path::PathBuf;
use std::time::Duration;

use crate::gateway::Secret;

use super::AttachmentRef;

/// Longest error body quoted in a failure note, in characters.
const MAX_ERROR_CHARS: usize = 200;

/// Where and how audio is transcribed.
#[derive(Debug, Clone)]
pub struct TranscriptionSettings {
    /// The endpoint: `{base_url}/audio/transcriptions`.
    pub url: String,
    /// The model (`whisper-1`).
    pub model: String,
    /// Bearer key, if any (never logged).
    pub api_key: Option<Secret>,
    /// Largest audio file sent, bytes; larger ones are not transcribed (the note says so).
    pub max_bytes: u64,
    /// Time allowed for one transcription.
    pub timeout: Duration,
}

/// A transcription client: the settings and an HTTP client.
#[derive(Debug, Clone)]
pub struct Transcriber {
    settings: TranscriptionSettings,
    client: reqwest::Client,
}

impl Transcriber {
    /// A client for `settings`.
    pub fn new(settings: TranscriptionSettings) -> Result<Transcriber, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(settings.timeout))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("cannot build the transcription HTTP client: {e}"))?;
        Ok(Transcriber { settings, client })
    }

    /// The settings.
    pub fn settings(&self) -> &TranscriptionSettings {
        &self.settings
    }

    /// The transcript of one audio file (the kept one if it was transcribed before), or
    /// why there is none.
    pub async fn transcribe(&self, audio: &AttachmentRef) -> Result<String, String> {
        if let Ok(kept) = tokio::fs::read_to_string(transcript_file(audio)).await {
            return Ok(kept);
        }
        let text = self.ask(audio).await?;
        if let Err(e) = tokio::fs::write(transcript_file(audio), &text).await {
            tracing::warn!(file = %audio.path, error = %e, "cannot keep a transcript");
        }
        Ok(text)
    }

    async fn ask(&self, audio: &AttachmentRef) -> Result<String, String> {
        if audio.size > self.settings.max_bytes {
            return Err(format!(
                "the file is larger than the {} bytes transcription takes",
                self.settings.max_bytes
            ));
        }
        let bytes = tokio::fs::read(&audio.file)
            .await
            .map_err(|e| format!("the file cannot be read: {e}"))?;
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(audio.file_name.clone())
            .mime_str(&audio.mime_type)
            .map_err(|e| format!("bad type {:?}: {e}", audio.mime_type))?;
        let form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", self.settings.model.clone());
        let mut request = self.client.post(&self.settings.url).multipart(form);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(&key.0);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} s", self.settings.timeout.as_secs_f64())
            } else {
                format!("the transcription server cannot be reached: {}", plain(&e))
            }
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| format!("reading the answer: {}", plain(&e)))?;
        if !status.is_success() {
            let shown: String = body.chars().take(MAX_ERROR_CHARS).collect();
            return Err(format!("HTTP {}: {}", status.as_u16(), shown.trim()));
        }
        let text = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("text")?.as_str().map(str::to_string))
            .ok_or_else(|| "the answer has no \"text\"".to_string())?;
        Ok(text.trim().to_string())
    }
}

/// Where an audio file's transcript is kept: beside it, `<name>.transcript.txt`.
pub fn transcript_file(audio: &AttachmentRef) -> PathBuf {
    let mut name = audio.file.as_os_str().to_os_string();
    name.push(".transcript.txt");
    PathBuf::from(name)
}

/// The kept transcript of an audio attachment, if it was transcribed (read at once: a
/// transcript is small).
pub fn kept_transcript(audio: &AttachmentRef) -> Option<String> {
    if !is_audio(audio) {
        return None;
    }
    std::fs::read_to_string(transcript_file(audio)).ok()
}

/// Whether an attachment is audio (sent for transcription when it is on).
pub fn is_audio(a: &AttachmentRef) -> bool {
    a.mime_type.starts_with("audio/")
}

/// A reqwest error without its URL (it may carry a key in a query).
fn plain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}
