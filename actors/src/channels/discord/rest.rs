//! Discord REST through serenity's request builder (routes, headers, the `api_url` base)
//! on our own reqwest client, so that a 429's `Retry-After` is read and honoured here
//! (serenity's rate limiter is off: it ignores the proxied base, and its error type drops
//! the header). Posting one reply part (with a nonce Discord dedupes on), fetching a
//! channel's messages after an id (backfill), and the typing indicator.

use std::time::Duration;

use serenity::builder::CreateAttachment;
use serenity::http::{LightMethod, Multipart, MultipartUpload, Request, Route};
use serenity::model::channel::Message;
use serenity::model::id::ChannelId;

use crate::attachments::AttachmentRef;
use crate::channels::ChannelError;
use crate::store::channels::DeliveryRecord;

/// Discord shows "typing…" for about 10 s; repeat a little sooner.
pub const TYPING_EVERY: Duration = Duration::from_secs(8);

/// 429s honoured for one request before giving up (the delivery stays owed).
const MAX_RATE_LIMITED: u32 = 10;

/// Messages per backfill page (Discord's maximum).
const PAGE: usize = 100;

/// Pages fetched per channel and backfill at most (older gaps are not worth replaying).
const MAX_PAGES: usize = 20;

/// A Discord REST client for one bot.
#[derive(Clone)]
pub struct Rest {
    client: reqwest::Client,
    /// For attachment downloads: no overall timeout (a large file on a slow link may take
    /// longer than an API call; `uploads.download_timeout_secs` bounds it).
    download: reqwest::Client,
    /// `Bot <token>`, as serenity's `Http` holds it.
    authorization: String,
    base: String,
}

impl Rest {
    /// A client for `base` (the configured `api_url`) with the bot's authorization value.
    pub fn new(base: &str, authorization: &str) -> Result<Rest, ChannelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ChannelError::Config(format!("cannot build the HTTP client: {e}")))?;
        let download = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ChannelError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Rest {
            client,
            download,
            authorization: authorization.to_string(),
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The HTTP client for attachment downloads: no authorization is added, and no overall
    /// timeout (the caller's `uploads.download_timeout_secs` bounds a download).
    pub fn http(&self) -> &reqwest::Client {
        &self.download
    }

    /// Sends one request, waiting out 429s; returns the successful response's body.
    async fn call(
        &self,
        what: &str,
        make: impl Fn() -> Request<'static>,
    ) -> Result<String, ChannelError> {
        let mut limited = 0;
        loop {
            let request = make()
                .build(&self.client, &self.authorization, Some(&self.base))
                .map_err(|e| {
                    ChannelError::Config(format!("{what}: cannot build the request: {e}"))
                })?
                .build()
                .map_err(|e| {
                    ChannelError::Config(format!("{what}: cannot build the request: {e}"))
                })?;
            let response =
                self.client.execute(request).await.map_err(|e| {
                    ChannelError::Unreachable(format!("{what}: {}", without_url(&e)))
                })?;
            let status = response.status();
            if status.as_u16() == 429 && limited < MAX_RATE_LIMITED {
                limited += 1;
                let header = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let body = response.text().await.unwrap_or_default();
                let wait = header.or_else(|| retry_after_in_body(&body)).unwrap_or(1.0);
                let wait = Duration::from_secs_f64(wait.clamp(0.0, 60.0));
                tracing::info!(
                    request = what,
                    retry_after_ms = wait.as_millis() as u64,
                    "discord rate limit; waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let body = response.text().await.map_err(|e| {
                ChannelError::Unreachable(format!(
                    "{what}: reading the answer: {}",
                    without_url(&e)
                ))
            })?;
            if status.is_success() {
                return Ok(body);
            }
            let detail = format!("{what}: HTTP {}: {}", status.as_u16(), truncate(&body, 300));
            return Err(if status.is_client_error() && status.as_u16() != 429 {
                ChannelError::Refused(detail)
            } else {
                ChannelError::Unreachable(detail)
            });
        }
    }

    /// Posts a message; returns Discord's message id. With `enforce_nonce`, Discord answers
    /// a second post with the same `nonce` (within a few minutes) with the first message
    /// instead of creating another: a delivery re-sent after a crash that hit between the
    /// post and its "sent" mark is not shown twice.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        nonce: &str,
    ) -> Result<String, ChannelError> {
        let channel_id = channel_id(channel)?;
        let body = serde_json::to_vec(&serde_json::json!({
            "content": text,
            "allowed_mentions": { "parse": [] },
            "nonce": nonce,
            "enforce_nonce": true,
        }))
        .map_err(|e| ChannelError::Config(format!("cannot encode a message: {e}")))?;
        let answer = self
            .call("POST /channels/{id}/messages", || {
                Request::new(Route::ChannelMessages { channel_id }, LightMethod::Post)
                    .body(Some(body.clone()))
            })
            .await?;
        let message: Message = serde_json::from_str(&answer).map_err(|e| {
            ChannelError::Unreachable(format!(
                "POST /channels/{{id}}/messages: unexpected answer: {e}"
            ))
        })?;
        Ok(message.id.get().to_string())
    }

    /// Posts a file as a message attachment (multipart: `files[0]` and `payload_json` with
    /// its `attachments` entry and the nonce); returns Discord's message id. A file gone
    /// from disk is refused (it will not come back).
    pub async fn post_file(
        &self,
        channel: &str,
        file: &AttachmentRef,
        nonce: &str,
    ) -> Result<String, ChannelError> {
        let channel_id = channel_id(channel)?;
        let bytes = tokio::fs::read(&file.file).await.map_err(|e| {
            ChannelError::Refused(format!("the file {} cannot be read: {e}", file.path))
        })?;
        let payload = serde_json::json!({
            "allowed_mentions": { "parse": [] },
            "attachments": [{ "id": 0, "filename": file.file_name }],
            "nonce": nonce,
            "enforce_nonce": true,
        })
        .to_string();
        let answer = self
            .call("POST /channels/{id}/messages (file)", || {
                Request::new(Route::ChannelMessages { channel_id }, LightMethod::Post).multipart(
                    Some(Multipart {
                        upload: MultipartUpload::Attachments(vec![CreateAttachment::bytes(
                            bytes.clone(),
                            file.file_name.clone(),
                        )]),
                        fields: Vec::new(),
                        payload_json: Some(payload.clone()),
                    }),
                )
            })
            .await?;
        let message: Message = serde_json::from_str(&answer).map_err(|e| {
            ChannelError::Unreachable(format!(
                "POST /channels/{{id}}/messages: unexpected answer: {e}"
            ))
        })?;
        Ok(message.id.get().to_string())
    }

    /// The messages of a channel after `after`, oldest first (several pages if needed).
    pub async fn messages_after(
        &self,
        channel: &str,
        after: i64,
    ) -> Result<Vec<Message>, ChannelError> {
        let channel_id = channel_id(channel)?;
        let mut cursor = after.max(0) as u64;
        let mut out: Vec<Message> = Vec::new();
        for _ in 0..MAX_PAGES {
            let params = vec![("after", cursor.to_string()), ("limit", PAGE.to_string())];
            let answer = self
                .call("GET /channels/{id}/messages", || {
                    Request::new(Route::ChannelMessages { channel_id }, LightMethod::Get)
                        .params(Some(params.clone()))
                })
                .await?;
            let mut page: Vec<Message> = serde_json::from_str(&answer).map_err(|e| {
                ChannelError::Unreachable(format!(
                    "GET /channels/{{id}}/messages: unexpected answer: {e}"
                ))
            })?;
            let full = page.len() >= PAGE;
            page.retain(|m| m.id.get() > cursor);
            let Some(newest) = page.iter().map(|m| m.id.get()).max() else {
                break;
            };
            cursor = newest;
            out.extend(page);
            if !full {
                break;
            }
        }
        out.sort_by_key(|m| m.id);
        out.dedup_by_key(|m| m.id);
        Ok(out)
    }

    /// Shows "typing…" once.
    pub async fn typing(&self, channel: &str) -> Result<(), ChannelError> {
        let channel_id = channel_id(channel)?;
        self.call("POST /channels/{id}/typing", || {
            Request::new(Route::ChannelTyping { channel_id }, LightMethod::Post)
        })
        .await
        .map(|_| ())
    }

    /// The bot's own user (`GET /users/@me`): id and name.
    pub async fn me(&self) -> Result<(u64, String), ChannelError> {
        let answer = self
            .call("GET /users/@me", || {
                Request::new(Route::UserMe, LightMethod::Get)
            })
            .await?;
        let user: serenity::model::user::CurrentUser =
            serde_json::from_str(&answer).map_err(|e| {
                ChannelError::Unreachable(format!("GET /users/@me: unexpected answer: {e}"))
            })?;
        Ok((user.id.get(), user.name.clone()))
    }
}

/// Discord's longest nonce.
const MAX_NONCE: usize = 25;

/// The nonce of a delivery: its id (unique in this gateway's store) and as much of the
/// chat id as fits, the same on every attempt, also after a restart.
fn delivery_nonce(id: i64, chat_id: &str) -> String {
    let head = format!("t{id}-");
    let room = MAX_NONCE.saturating_sub(head.len());
    match chat_id.get(chat_id.len().saturating_sub(room)..) {
        Some(tail) => format!("{head}{tail}"),
        None => head,
    }
}

/// Shows "typing…" in a channel until dropped (errors are ignored: it is only a hint).
pub async fn typing_loop(rest: &Rest, channel: &str) {
    loop {
        let _ = rest.typing(channel).await;
        tokio::time::sleep(TYPING_EVERY).await;
    }
}

fn channel_id(channel: &str) -> Result<ChannelId, ChannelError> {
    channel
        .parse::<u64>()
        .ok()
        .filter(|id| *id != 0)
        .map(ChannelId::new)
        .ok_or_else(|| ChannelError::Refused(format!("{channel:?} is not a Discord channel id")))
}

/// `retry_after` (seconds) of a 429's JSON body.
fn retry_after_in_body(body: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("retry_after")?
        .as_f64()
}

/// A reqwest error without its URL (which names the API base, harmless, but noisy).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

impl crate::channels::lanes::Outbox for Rest {
    const PLATFORM: &'static str = "discord";

    async fn send_part(&self, part: &DeliveryRecord) -> Result<String, ChannelError> {
        let nonce = delivery_nonce(part.id, &part.chat_id);
        match &part.attachment {
            Some(file) => self.post_file(&part.chat_id, file, &nonce).await,
            None => self.post_message(&part.chat_id, &part.text, &nonce).await,
        }
    }

    fn typing(&self, chat_id: &str) -> impl std::future::Future<Output = ()> {
        typing_loop(self, chat_id)
    }

    async fn fetch(
        &self,
        file: &crate::store::channels::InboundFile,
        max_bytes: u64,
    ) -> Result<Vec<u8>, crate::channels::inbound_files::FetchError> {
        super::receive::fetch(self, file, max_bytes).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_is_read_from_a_json_body() {
        assert_eq!(
            super::retry_after_in_body(r#"{"message":"slow","retry_after":0.25,"global":false}"#),
            Some(0.25)
        );
        assert_eq!(super::retry_after_in_body("nope"), None);
    }

    #[test]
    fn delivery_nonces_fit_discord_and_stay_the_same() {
        let long = super::delivery_nonce(9_000_000_000, "123456789012345678901");
        assert_eq!(long.len(), super::MAX_NONCE);
        assert_eq!(
            long,
            super::delivery_nonce(9_000_000_000, "123456789012345678901")
        );
        assert_eq!(super::delivery_nonce(7, "42"), "t7-42");
        assert_ne!(
            super::delivery_nonce(7, "42"),
            super::delivery_nonce(8, "42")
        );
    }

    #[test]
    fn channel_ids_must_be_snowflakes() {
        assert!(super::channel_id("123").is_ok());
        assert!(super::channel_id("0").is_err());
        assert!(super::channel_id("abc").is_err());
    }
}
