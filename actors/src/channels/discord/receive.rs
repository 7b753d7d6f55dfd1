//! Files users attach to Discord messages: the journal entry's files of a message (its
//! `attachments`), and their download from the attachment's `url` (Discord's CDN; no bot
//! authorization is sent there), read no further than the limit.

use serenity::all::Message;

use super::rest::Rest;
use crate::channels::inbound_files::{FetchError, read_capped, without_url};
use crate::store::channels::{InboundFile, InboundFileKind};

/// The files a message carries, as Discord names them.
pub fn files_of(m: &Message) -> Vec<InboundFile> {
    m.attachments
        .iter()
        .map(|a| InboundFile {
            kind: InboundFileKind::Attachment,
            source: a.url.clone(),
            name: a.filename.clone(),
            mime: a.content_type.clone(),
            size: Some(a.size as u64),
        })
        .collect()
}

/// Downloads an attachment by its URL, stopping once it passes `max_bytes`.
pub async fn fetch(rest: &Rest, file: &InboundFile, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let url = reqwest::Url::parse(&file.source)
        .map_err(|e| FetchError::Failed(format!("the attachment URL is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(FetchError::Failed(format!(
            "the attachment URL has scheme {:?}",
            url.scheme()
        )));
    }
    let response = rest
        .http()
        .get(url)
        .send()
        .await
        .map_err(|e| FetchError::Failed(without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Failed(format!("HTTP {}", status.as_u16())));
    }
    read_capped(response, max_bytes).await
}
