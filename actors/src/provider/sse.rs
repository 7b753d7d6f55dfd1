//! A Server-Sent Events reader over a byte stream: `event:` and `data:` lines, dispatched on
//! a blank line, with an idle timeout between chunks.

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

/// Reads events from a response body. Where the body is cut into chunks never changes
/// the events read, nor whether (and after which event) it is refused as too large: an
/// event is refused when its `data` so far plus the line being read pass the limit.
pub struct SseReader<S> {
    stream: S,
    buffer: Vec<u8>,
    provider: &'static str,
    idle: Duration,
    done: bool,
    /// Bytes of `buffer` already parsed (dropped before the next chunk is added).
    read: usize,
    /// Bytes of `buffer` already searched for a newline: a long line arriving in many
    /// small chunks is searched once, not once per chunk.
    scanned: usize,
    /// Bytes searched for newlines in all (tests check that each is searched once).
    #[cfg(test)]
    searched: usize,
    max_event_bytes: usize,
}

impl<S: Stream<Item = reqwest::Result<Bytes>> + Unpin> SseReader<S> {
    /// Wraps a byte stream.
    pub fn new(stream: S, provider: &'static str, idle: Duration) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            provider,
            idle,
            done: false,
            read: 0,
            scanned: 0,
            #[cfg(test)]
            searched: 0,
            max_event_bytes: MAX_EVENT_BYTES,
        }
    }

    /// Sets the largest event accepted (default [`MAX_EVENT_BYTES`]); tests and fuzz
    /// targets use small limits to reach the refusal.
    #[doc(hidden)]
    pub fn with_max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    fn too_large(&self) -> ProviderError {
        ProviderError::Malformed {
            provider: self.provider,
            message: format!("an event is larger than {} bytes", self.max_event_bytes),
        }
    }

    /// The length of the next complete line from `read` (without its `\n`), searching
    /// only bytes not searched before.
    fn next_line_len(&mut self) -> Option<usize> {
        let from = self.scanned.max(self.read);
        let found = self.buffer[from..].iter().position(|b| *b == b'\n');
        #[cfg(test)]
        {
            self.searched += found.map_or(self.buffer.len() - from, |at| at + 1);
        }
        match found {
            Some(at) => Some(from + at - self.read),
            None => {
                self.scanned = self.buffer.len();
                None
            }
        }
    }

    /// The next event; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let mut event = SseEvent::default();
        let mut has_data = false;
        loop {
            // Complete lines are read from `self.read` on; the buffer is compacted once per
            // chunk, not once per line (a large chunk of short lines stays linear).
            while let Some(len) = self.next_line_len() {
                if event.data.len() + len > self.max_event_bytes {
                    return Err(self.too_large());
                }
                let raw = &self.buffer[self.read..self.read + len];
                self.read += len + 1;
                self.scanned = self.read;
                let line = String::from_utf8_lossy(raw);
                let line = line.trim_end_matches('\r');
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
            self.buffer.drain(..self.read);
            self.scanned -= self.read;
            self.read = 0;
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
                    // The buffer holds only the start of the line being read: refusing it
                    // here is refusing what that line's end would, only sooner.
                    let line = self.buffer.len()
                        + chunk
                            .iter()
                            .position(|b| *b == b'\n')
                            .unwrap_or(chunk.len());
                    if event.data.len() + line > self.max_event_bytes {
                        return Err(self.too_large());
                    }
                    self.buffer.extend_from_slice(&chunk);
                }
            }
        }
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

    async fn read_all(chunks: &[&str], limit: usize) -> (Vec<String>, bool) {
        let mut r = reader(chunks).with_max_event_bytes(limit);
        let mut data = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(e)) => data.push(e.data),
                Ok(None) => return (data, false),
                Err(_) => return (data, true),
            }
        }
    }

    /// The size check counted every byte of the chunk, not just the event being read: a
    /// chunk holding many small events past the limit was refused whole, the same bytes
    /// in smaller chunks were not.
    #[tokio::test]
    async fn many_small_events_in_one_large_chunk_are_read_as_in_small_chunks() {
        let body = "data: 0123456789\n\n".repeat(10);
        let whole = read_all(&[&body], 32).await;
        assert_eq!(whole, (vec!["0123456789".to_string(); 10], false));
        let lines: Vec<String> = body.split_inclusive('\n').map(String::from).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(read_all(&lines, 32).await, whole);
    }

    #[tokio::test]
    async fn an_event_past_the_limit_is_refused_after_the_events_before_it() {
        let body = "data: ok\n\ndata: 0123456789\ndata: 0123456789\n\ndata: never\n\n";
        let (data, refused) = read_all(&[body], 20).await;
        assert_eq!((data, refused), (vec!["ok".to_string()], true));
        let bytes: Vec<String> = body.chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(read_all(&bytes, 20).await, (vec!["ok".to_string()], true));
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
