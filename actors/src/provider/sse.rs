//! A Server-Sent Events reader over a byte stream: `event:` and `data:` lines, dispatched on
//! a blank line, with an idle timeout between chunks. Linear in the bytes read: each byte is
//! searched for a newline once (a line arriving in many small chunks is not rescanned) and
//! moved at most once (consumed lines are cut off once per chunk, not once per line).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::ProviderError;

/// Largest single event accepted (a provider sending more is broken or hostile).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SseEvent {
    /// The `event:` field (empty if none).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Reads events from a response body.
pub struct SseReader<S> {
    stream: S,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as lines.
    start: usize,
    /// Bytes of `buffer` already searched for a newline (none found past `start`).
    scanned: usize,
    /// Bytes searched for a newline in all (for the linearity test).
    searched: usize,
    provider: &'static str,
    idle: Duration,
    done: bool,
}

impl<S: Stream<Item = reqwest::Result<Bytes>> + Unpin> SseReader<S> {
    /// Wraps a byte stream.
    pub fn new(stream: S, provider: &'static str, idle: Duration) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            searched: 0,
            provider,
            idle,
            done: false,
        }
    }

    /// The next event; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let mut event = SseEvent::default();
        let mut has_data = false;
        loop {
            while let Some(pos) = self.next_newline() {
                let line = String::from_utf8_lossy(&self.buffer[self.start..pos]).into_owned();
                self.start = pos + 1;
                self.scanned = self.start;
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if has_data || !event.event.is_empty() {
                        return Ok(Some(event));
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line
                    .split_once(':')
                    .map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)))
                    .unwrap_or((line, ""));
                match field {
                    "event" => event.event = value.to_string(),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            // Cut off the lines handed out (each remaining byte moves once: it then sits at
            // the front until its own line is complete).
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            if self.done {
                if !self.buffer.is_empty() {
                    // A last line without its newline: finish it and parse it.
                    self.buffer.push(b'\n');
                    continue;
                }
                return Ok((has_data || !event.event.is_empty()).then_some(event));
            }
            match tokio::time::timeout(self.idle, self.stream.next()).await {
                Err(_) => {
                    return Err(ProviderError::Timeout {
                        provider: self.provider,
                        phase: "the next chunk",
                        after: self.idle,
                    });
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Connection {
                        provider: self.provider,
                        message: format!("stream broke: {e}"),
                    });
                }
                Ok(Some(Ok(chunk))) => {
                    if self.buffer.len() + chunk.len() + event.data.len() > MAX_EVENT_BYTES {
                        return Err(ProviderError::Malformed {
                            provider: self.provider,
                            message: format!("an event is larger than {MAX_EVENT_BYTES} bytes"),
                        });
                    }
                    self.buffer.extend_from_slice(&chunk)
                }
            }
        }
    }

    /// The end of the next complete line, searching only bytes not searched before.
    fn next_newline(&mut self) -> Option<usize> {
        let from = self.scanned.max(self.start);
        let found = self.buffer[from..].iter().position(|b| *b == b'\n');
        let searched = found.map_or(self.buffer.len() - from, |i| i + 1);
        self.searched += searched;
        self.scanned = from + searched;
        found.map(|i| from + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(chunks: &[&str]) -> SseReader<impl Stream<Item = reqwest::Result<Bytes>> + Unpin> {
        let items: Vec<reqwest::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        SseReader::new(
            futures_util::stream::iter(items),
            "test",
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn events_split_across_chunks_and_crlf_are_reassembled() {
        let mut r = reader(&[
            "event: a\r\nda",
            "ta: {\"x\":1}\r\n\r\n: comment\n",
            "data: one\ndata: two\n\n",
        ]);
        assert_eq!(
            r.next().await,
            Ok(Some(SseEvent {
                event: "a".into(),
                data: "{\"x\":1}".into()
            }))
        );
        assert_eq!(
            r.next().await,
            Ok(Some(SseEvent {
                event: String::new(),
                data: "one\ntwo".into()
            }))
        );
        assert_eq!(r.next().await, Ok(None));
    }

    #[tokio::test]
    async fn a_long_line_in_tiny_chunks_and_many_lines_in_one_chunk_are_searched_once() {
        let long = format!("data: {}\n\n", "x".repeat(20_000));
        let bytes: Vec<String> = long.chars().map(|c| c.to_string()).collect();
        let chunks: Vec<&str> = bytes.iter().map(String::as_str).collect();
        let mut r = reader(&chunks);
        let event = r.next().await.unwrap().unwrap();
        assert_eq!(event.data.len(), 20_000);
        assert!(
            r.searched <= long.len(),
            "searched {} bytes of {}",
            r.searched,
            long.len()
        );

        let many = "data: a\n\n".repeat(5_000);
        let one = [many.as_str()];
        let mut r = reader(&one);
        for _ in 0..5_000 {
            assert_eq!(r.next().await.unwrap().unwrap().data, "a");
        }
        assert!(
            r.searched <= many.len(),
            "searched {} bytes of {}",
            r.searched,
            many.len()
        );
    }

    #[tokio::test]
    async fn a_last_event_without_blank_line_is_still_delivered() {
        let mut r = reader(&["data: [DONE]"]);
        assert_eq!(
            r.next().await,
            Ok(Some(SseEvent {
                event: String::new(),
                data: "[DONE]".into()
            }))
        );
    }
}
