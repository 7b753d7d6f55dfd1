//! Sending to Telegram: one reply part (resent as plain text when Telegram rejects the
//! formatting, waiting `retry_after` on 429), or one file (`sendPhoto` for an image,
//! `sendDocument` for any other file, a multipart upload); and the typing indicator. The order and the
//! sent/failed marks are the shared lanes' ([`crate::channels::lanes::deliver`]).

use std::time::Duration;

use teloxide_core::payloads::SendMessageSetters;
use teloxide_core::requests::{Request, Requester};
use teloxide_core::types::{ChatAction, ChatId, InputFile, ParseMode};

use crate::attachments::{AttachmentKind, AttachmentRef};
use teloxide_core::{ApiError, Bot, RequestError};

use crate::channels::ChannelError;
use crate::store::channels::DeliveryRecord;

/// Telegram shows "typing…" for 5 s; repeat a little sooner.
pub const TYPING_EVERY: Duration = Duration::from_secs(4);

/// 429s honoured for one message before giving up (the delivery stays owed).
const MAX_RATE_LIMITED: u32 = 10;

fn chat_id(chat: &str) -> Result<ChatId, ChannelError> {
    chat.parse::<i64>()
        .map(ChatId)
        .map_err(|_| ChannelError::Refused(format!("chat id {chat:?} is not a Telegram chat id")))
}

/// Sends one message (HTML formatting, plain text when Telegram rejects it); returns
/// Telegram's message id.
pub async fn send_text(bot: &Bot, chat: &str, text: &str) -> Result<String, ChannelError> {
    let chat = chat_id(chat)?;
    let mut plain = false;
    let mut limited = 0;
    loop {
        let mut request = bot.send_message(chat, text);
        if !plain {
            request = request.parse_mode(ParseMode::Html);
        }
        match request.send().await {
            Ok(message) => return Ok(message.id.0.to_string()),
            Err(RequestError::Api(ApiError::CantParseEntities(why))) if !plain => {
                tracing::debug!(error = %why, "telegram rejected the formatting; resending as plain text");
                plain = true;
            }
            Err(RequestError::RetryAfter(wait)) if limited < MAX_RATE_LIMITED => {
                limited += 1;
                tracing::info!(
                    retry_after_s = wait.seconds(),
                    "telegram rate limit; waiting"
                );
                tokio::time::sleep(wait.duration()).await;
            }
            Err(RequestError::Api(ApiError::Unknown(why))) if !permanent(&why) => {
                return Err(ChannelError::Unreachable(format!("sendMessage: {why}")));
            }
            Err(RequestError::Api(e)) => return Err(ChannelError::Refused(e.to_string())),
            Err(RequestError::MigrateToChatId(to)) => {
                return Err(ChannelError::Refused(format!(
                    "the group moved to chat {}",
                    to.0
                )));
            }
            Err(e) => return Err(ChannelError::Unreachable(format!("sendMessage: {e}"))),
        }
    }
}

/// Sends one file: an image with `sendPhoto`, any other file with `sendDocument` (named
/// as the attachment is); returns Telegram's message id. A file gone from disk is refused
/// (it will not come back).
pub async fn send_file(
    bot: &Bot,
    chat: &str,
    file: &AttachmentRef,
) -> Result<String, ChannelError> {
    let chat = chat_id(chat)?;
    let bytes = tokio::fs::read(&file.file).await.map_err(|e| {
        ChannelError::Refused(format!("the file {} cannot be read: {e}", file.path))
    })?;
    let mut limited = 0;
    loop {
        let input = InputFile::memory(bytes.clone()).file_name(file.file_name.clone());
        let (method, sent) = match file.kind {
            AttachmentKind::Image => ("sendPhoto", bot.send_photo(chat, input).send().await),
            AttachmentKind::File => ("sendDocument", bot.send_document(chat, input).send().await),
        };
        match sent {
            Ok(message) => return Ok(message.id.0.to_string()),
            Err(RequestError::RetryAfter(wait)) if limited < MAX_RATE_LIMITED => {
                limited += 1;
                tracing::info!(
                    retry_after_s = wait.seconds(),
                    "telegram rate limit; waiting"
                );
                tokio::time::sleep(wait.duration()).await;
            }
            Err(RequestError::Api(ApiError::Unknown(why))) if !permanent(&why) => {
                return Err(ChannelError::Unreachable(format!("{method}: {why}")));
            }
            Err(RequestError::Api(e)) => {
                return Err(ChannelError::Refused(format!("{method}: {e}")));
            }
            Err(e) => return Err(ChannelError::Unreachable(format!("{method}: {e}"))),
        }
    }
}

/// Whether an error description Telegram gave is a refusal for good (a bad request, a
/// forbidden chat) rather than a passing failure (a 5xx page, a gateway timeout), which is
/// retried after the channel restarts.
fn permanent(description: &str) -> bool {
    ["Bad Request", "Forbidden", "Unauthorized", "Not Found"]
        .iter()
        .any(|p| description.starts_with(p))
}

/// Shows "typing…" in a chat until dropped (errors are ignored: it is only a hint).
pub async fn typing_loop(bot: &Bot, chat: &str) {
    let Ok(chat) = chat_id(chat) else {
        return std::future::pending().await;
    };
    loop {
        let _ = bot.send_chat_action(chat, ChatAction::Typing).send().await;
        tokio::time::sleep(TYPING_EVERY).await;
    }
}

impl crate::channels::lanes::Outbox for Bot {
    const PLATFORM: &'static str = "telegram";

    async fn send_part(&self, part: &DeliveryRecord) -> Result<String, ChannelError> {
        match &part.attachment {
            Some(file) => send_file(self, &part.chat_id, file).await,
            None => send_text(self, &part.chat_id, &part.text).await,
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
    fn passing_failures_are_not_refusals() {
        assert!(super::permanent("Bad Request: chat not found"));
        assert!(super::permanent("Forbidden: bot was blocked by the user"));
        assert!(!super::permanent("Internal Server Error"));
        assert!(!super::permanent("Bad Gateway"));
    }
}
