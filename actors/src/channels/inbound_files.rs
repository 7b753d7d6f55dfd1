//! Files users send on a channel (a Telegram photo, document, voice note or audio file, a
//! Discord attachment) become attachments of their turn, like WS attachments sent by upload
//! path. The platform's file is journaled with the message ([`InboundFile`]); only when the
//! message may run (pairing and policies passed) is it downloaded, through the platform's
//! [`Outbox::fetch`], into `<state>/uploads/<uuid>/<name>` with the same naming and type
//! sniffing as `POST /api/upload`, at most `uploads.max_bytes` and within a timeout. The
//! result (the stored attachments, and the text with a note for each file that could not be
//! had) is saved with the journal before the turn is submitted, so a turn recovered after a
//! crash neither downloads again nor loses its files.

use std::path::PathBuf;
use std::time::Duration;

use super::journal::Route;
use super::lanes::Outbox;
use super::{ChannelError, ask_store};
use crate::attachments::{self, AttachmentRef, files};
use crate::store::channels::{InboundFile, InboundRecord, SaveInboundFiles};

/// Time allowed to download one file.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a channel's inbound files go and how big they may be.
#[derive(Debug, Clone)]
pub struct FileIntake {
    /// The state dir (`uploads/` under it); `None`: files are not downloaded, only named.
    pub state_dir: Option<PathBuf>,
    /// Largest file downloaded, bytes (`uploads.max_bytes`).
    pub max_bytes: u64,
    /// Time allowed for one download.
    pub timeout: Duration,
}

impl Default for FileIntake {
    fn default() -> Self {
        Self {
            state_dir: None,
            max_bytes: 20 * 1024 * 1024,
            timeout: DOWNLOAD_TIMEOUT,
        }
    }
}

/// Why a file was not downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// It is larger than the limit (nothing beyond the limit was read).
    TooLarge,
    /// The platform refused or could not be reached.
    Failed(String),
}

/// The message with its files downloaded and saved with the journal: returned as is when it
/// has none or they were downloaded before (a restart), else each is fetched, stored under
/// `uploads/` and made an attachment; a file that cannot be had adds a note to the text.
pub async fn resolve<O: Outbox>(
    outbox: &O,
    route: &Route,
    mut inbound: InboundRecord,
) -> Result<InboundRecord, ChannelError> {
    if inbound.files.is_empty() || inbound.attachments.is_some() {
        return Ok(inbound);
    }
    let intake = &route.files;
    let mut stored = Vec::new();
    let mut notes = String::new();
    for file in &inbound.files {
        match fetch_one(outbox, intake, file).await {
            Ok(a) => stored.push(a),
            Err(why) => {
                tracing::warn!(platform = O::PLATFORM, chat_id = %inbound.chat_id, file = %file.name, reason = %why, "an inbound file was not downloaded");
                notes.push_str(&format!(
                    "\n\n[attached file: {} was not received: {why}]",
                    file.name
                ));
            }
        }
    }
    if !notes.is_empty() {
        inbound.text = format!("{}{notes}", inbound.text).trim_start().to_string();
    }
    ask_store(
        &route.root,
        SaveInboundFiles {
            id: inbound.id,
            text: inbound.text.clone(),
            attachments: stored.clone(),
        },
    )
    .await?;
    inbound.attachments = Some(stored);
    Ok(inbound)
}

/// Downloads one file into `uploads/`; the error is the note the user's text gets.
async fn fetch_one<O: Outbox>(
    outbox: &O,
    intake: &FileIntake,
    file: &InboundFile,
) -> Result<AttachmentRef, String> {
    let Some(state_dir) = &intake.state_dir else {
        return Err("files are not taken here".into());
    };
    let too_large = || {
        format!(
            "it is larger than the {} bytes files may have",
            intake.max_bytes
        )
    };
    if file.size.is_some_and(|size| size > intake.max_bytes) {
        return Err(too_large());
    }
    let bytes =
        match tokio::time::timeout(intake.timeout, outbox.fetch(file, intake.max_bytes)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(FetchError::TooLarge)) => return Err(too_large()),
            Ok(Err(FetchError::Failed(why))) => return Err(format!("the download failed ({why})")),
            Err(_) => {
                return Err(format!(
                    "the download took longer than {} s",
                    intake.timeout.as_secs()
                ));
            }
        };
    let size = bytes.len() as u64;
    let name = files::safe_name_or(&file.name, "file");
    let saved = files::save_upload(state_dir, &name, &bytes)?;
    Ok(attachments::from_saved(
        state_dir,
        saved,
        file.mime.as_deref(),
        size,
    ))
}

/// Reads a response body chunk by chunk, stopping (and dropping the connection) as soon as
/// it passes `max_bytes`.
pub async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(FetchError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Failed(without_url(&e)))?
    {
        if out.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(FetchError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A reqwest error without its URL (a Telegram file URL holds the bot token).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}
