//! `logs.tail`: a cursor-based window on the gateway's log file, with OpenClaw's semantics
//! (the cursor is a byte offset; a read starts at the cursor, or at most `maxBytes` before
//! the end; a cursor past the end means the file was replaced, so the read restarts).
//! Blocking file I/O: call it off the actor threads.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lines returned when the client names no limit.
pub const DEFAULT_LIMIT: usize = 500;
/// Bytes read when the client names no limit.
pub const DEFAULT_MAX_BYTES: u64 = 250_000;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 5_000;
/// Largest `maxBytes` accepted.
pub const MAX_BYTES: u64 = 1_000_000;

/// One window of the log, in the shape of OpenClaw's `LogsTailResult`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    /// The log file.
    pub file: String,
    /// Where the next read starts (the size read up to).
    pub cursor: u64,
    /// The file's size.
    pub size: u64,
    /// Whole lines, oldest first.
    pub lines: Vec<String>,
    /// Older lines were left out (by `maxBytes` or `limit`).
    pub truncated: bool,
    /// The cursor did not continue the previous read (file replaced, or too far behind).
    pub reset: bool,
    /// Bytes between the cursor and the start of this read, when it jumped ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_bytes: Option<u64>,
}

/// Reads the window of `file` after `cursor` (or its end, without one).
pub fn tail(
    file: &Path,
    cursor: Option<u64>,
    limit: Option<usize>,
    max_bytes: Option<u64>,
) -> std::io::Result<LogTail> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let max_bytes = max_bytes.unwrap_or(DEFAULT_MAX_BYTES).clamp(1, MAX_BYTES);
    let name = file.display().to_string();
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogTail {
                file: name,
                cursor: 0,
                size: 0,
                lines: Vec::new(),
                truncated: false,
                reset: cursor.is_some_and(|c| c > 0),
                skipped_bytes: None,
            });
        }
        Err(e) => return Err(e),
    };
    let size = f.metadata()?.len();
    let window_start = size.saturating_sub(max_bytes);
    let (start, reset, skipped_bytes) = match cursor {
        Some(c) if c > size => (window_start, true, None),
        Some(c) if size - c > max_bytes => (window_start, true, Some(window_start - c)),
        Some(c) => (c, false, None),
        None => (window_start, false, None),
    };
    let mut truncated = start > 0 && (cursor.is_none() || reset);
    let mut bytes = Vec::new();
    if size > start {
        // The byte before the window tells whether the window starts mid-line.
        let from = start.saturating_sub(1);
        f.seek(SeekFrom::Start(from))?;
        f.take(size - from).read_to_end(&mut bytes)?;
        if start > 0 {
            let mid_line = bytes.first() != Some(&b'\n');
            bytes.remove(0);
            if mid_line {
                let cut = bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |i| i + 1);
                bytes.drain(..cut);
            }
        }
    }
    // A last line still being written is left for the next read.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let unread = (bytes.len() - complete) as u64;
    let text = String::from_utf8_lossy(&bytes[..complete]);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.len() > limit {
        lines.drain(..lines.len() - limit);
        truncated = true;
    }
    Ok(LogTail {
        file: name,
        cursor: size - unread,
        size,
        lines,
        truncated,
        reset,
        skipped_bytes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A directory of its own under the system temp dir, removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch() -> Scratch {
        let dir = std::env::temp_dir().join(format!("troupe-log-tail-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn log(text: &str) -> (Scratch, std::path::PathBuf) {
        let dir = scratch();
        let path = dir.0.join("troupe.log");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_the_end_then_continues_from_the_cursor() {
        let (_d, path) = log("one\ntwo\nthree\n");
        let first = tail(&path, None, Some(2), None).unwrap();
        assert_eq!(first.lines, ["two", "three"]);
        assert!(first.truncated);
        assert_eq!(first.cursor, 14);
        std::fs::write(&path, "one\ntwo\nthree\nfour\nfive (still being writ").unwrap();
        let next = tail(&path, Some(first.cursor), None, None).unwrap();
        assert_eq!(next.lines, ["four"]);
        assert!(!next.reset && !next.truncated);
        assert_eq!(next.cursor, 19, "the partial last line is read next time");
    }

    #[test]
    fn a_window_never_starts_mid_line_and_a_stale_cursor_resets() {
        let (_d, path) = log("aaaa\nbbbb\ncccc\n");
        let t = tail(&path, None, None, Some(7)).unwrap();
        assert_eq!(t.lines, ["cccc"]);
        let t = tail(&path, Some(1000), None, None).unwrap();
        assert!(t.reset);
        assert_eq!(t.lines, ["aaaa", "bbbb", "cccc"]);
        let t = tail(&path, Some(0), None, Some(10)).unwrap();
        assert!(t.reset);
        assert_eq!(t.skipped_bytes, Some(5));
        assert_eq!(t.lines, ["bbbb", "cccc"]);
    }

    #[test]
    fn a_missing_log_is_empty_not_an_error() {
        let dir = scratch();
        let t = tail(&dir.0.join("none.log"), None, None, None).unwrap();
        assert_eq!((t.size, t.lines.len()), (0, 0));
    }
}
