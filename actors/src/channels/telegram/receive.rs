//! Files users send to the bot: the journal entry's files of a message (the largest
//! `photo` size, a `document`, a `voice` note, an `audio` file), and their download:
//! `getFile`, then the file itself from `<api_url>/file/bot<token>/<file_path>`
//! (teloxide's `get_file` and `download_file_stream`), read no further than the limit.

use std::time::Duration;

use futures_util::StreamExt;
use teloxide_core::net::Download;
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::{FileId, FileMeta, Message};
use teloxide_core::{Bot, RequestError};

use crate::channels::inbound_files::{FetchError, without_url};
use crate::store::channels::{InboundFile, InboundFileKind};

/// Time allowed to connect for a download.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The size Telegram gave, unless it left it out (teloxide then says `u32::MAX`).
fn size_of(meta: &FileMeta) -> Option<u64> {
    (meta.size != u32::MAX).then_some(meta.size as u64)
}

/// The files a message carries, as Telegram names them.
pub fn files_of(m: &Message) -> Vec<InboundFile> {
    let mut out = Vec::new();
    if let Some(largest) = m.photo().and_then(|sizes| {
        sizes
            .iter()
            .max_by_key(|p| p.width as u64 * p.height as u64)
    }) {
        out.push(InboundFile {
            kind: InboundFileKind::Photo,
            source: largest.file.id.0.clone(),
            name: "photo.jpg".into(),
            mime: None,
            size: size_of(&largest.file),
        });
    }
    if let Some(d) = m.document() {
        out.push(InboundFile {
            kind: InboundFileKind::Document,
            source: d.file.id.0.clone(),
            name: d.file_name.clone().unwrap_or_else(|| "document".into()),
            mime: d.mime_type.as_ref().map(|t| t.to_string()),
            size: size_of(&d.file),
        });
    }
    if let Some(v) = m.voice() {
        out.push(InboundFile {
            kind: InboundFileKind::Voice,
            source: v.file.id.0.clone(),
            name: "voice.ogg".into(),
            mime: Some(
                v.mime_type
                    .as_ref()
                    .map_or_else(|| "audio/ogg".into(), |t| t.to_string()),
            ),
            size: size_of(&v.file),
        });
    }
    if let Some(a) = m.audio() {
        out.push(InboundFile {
            kind: InboundFileKind::Audio,
            source: a.file.id.0.clone(),
            name: a.file_name.clone().unwrap_or_else(|| "audio".into()),
            mime: a.mime_type.as_ref().map(|t| t.to_string()),
            size: size_of(&a.file),
        });
    }
    out
}

/// Downloads a file by its `file_id`, stopping once it passes `max_bytes`. An error never
/// names the bot token (it becomes a note the model and the user may see).
pub async fn fetch(bot: &Bot, file: &InboundFile, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    download(bot, file, max_bytes).await.map_err(|e| match e {
        FetchError::Failed(why) if !bot.token().is_empty() => {
            FetchError::Failed(why.replace(bot.token(), "<token>"))
        }
        other => other,
    })
}

async fn download(bot: &Bot, file: &InboundFile, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let meta = bot
        .get_file(FileId(file.source.clone()))
        .send()
        .await
        .map_err(|e| FetchError::Failed(format!("getFile: {}", plain(&e))))?;
    if size_of(&meta.meta).is_some_and(|size| size > max_bytes) {
        return Err(FetchError::TooLarge);
    }
    // The bot's own client gives up a little after the long poll; a large file may take
    // longer (the caller's timeout bounds it), so the download gets a client of its own.
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| FetchError::Failed(format!("cannot build the HTTP client: {e}")))?;
    let downloader = Bot::with_client(bot.token(), client).set_api_url(bot.api_url());
    let mut stream = downloader.download_file_stream(&meta.path);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Failed(without_url(&e)))?;
        if out.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(FetchError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A teloxide error as text, without a URL (which would hold the token).
fn plain(e: &RequestError) -> String {
    match e {
        RequestError::Network(inner) => without_url(inner),
        other => other.to_string(),
    }
}
