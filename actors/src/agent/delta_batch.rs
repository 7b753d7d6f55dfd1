//! Coalescing of streamed reply text: whatever a provider streams (the `echo` provider, the
//! OpenAI and Anthropic SSE streams), a run reports at most one `Delta` per
//! [`FLUSH_EVERY`] plus one per [`MAX_BATCH_BYTES`] of text, so one run cannot flood the
//! session-queue or its clients (a 1 MB reply is a few dozen events, not 166k). The text
//! is never changed: the batches concatenate to exactly what was streamed.
//!
//! Batches that are due wait in the batch until the run takes them ([`DeltaBatch::take_due`]),
//! which it does each time the provider's call has to wait. Text streamed by a call that
//! ends without waiting (the `echo` provider, a short cached reply) is thus taken with the
//! run's end ([`DeltaBatch::take_all`]) and travels in its outcome: one message, where one
//! per batch would each wake the session-queue and its clients.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest a streamed piece waits before it is reported.
pub const FLUSH_EVERY: Duration = Duration::from_millis(30);

/// Text reported in one delta at most (a larger piece from a provider is split).
pub const MAX_BATCH_BYTES: usize = 16 * 1024;

/// Text streamed but not reported yet, and when the last report was made.
#[derive(Debug)]
pub struct DeltaBatch {
    inner: Mutex<Pending>,
}

#[derive(Debug)]
struct Pending {
    text: String,
    due: Vec<String>,
    last_flush: Option<Instant>,
}

impl Default for DeltaBatch {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Pending {
                text: String::new(),
                due: Vec::new(),
                last_flush: None,
            }),
        }
    }
}

impl DeltaBatch {
    /// Adds streamed text. A batch is due at once for the first piece of a run, then when
    /// [`FLUSH_EVERY`] has passed or [`MAX_BATCH_BYTES`] are pending; due batches wait for
    /// [`take_due`](Self::take_due).
    pub fn push(&self, piece: &str, now: Instant) {
        let mut p = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        p.text.push_str(piece);
        while p.text.len() >= MAX_BATCH_BYTES {
            let cut = floor_char_boundary(&p.text, MAX_BATCH_BYTES);
            let rest = p.text.split_off(cut);
            let batch = std::mem::replace(&mut p.text, rest);
            p.due.push(batch);
            p.last_flush = Some(now);
        }
        let due = p
            .last_flush
            .is_none_or(|at| now.duration_since(at) >= FLUSH_EVERY);
        if due && !p.text.is_empty() {
            let batch = std::mem::take(&mut p.text);
            p.due.push(batch);
            p.last_flush = Some(now);
        }
    }

    /// Takes the batches that are due, oldest first.
    pub fn take_due(&self) -> Vec<String> {
        let mut p = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut p.due)
    }

    /// Takes everything: the due batches, then whatever is pending (on a timer tick,
    /// before a tool event, at the end).
    pub fn take_all(&self, now: Instant) -> Vec<String> {
        let mut p = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::mem::take(&mut p.due);
        if !p.text.is_empty() {
            out.push(std::mem::take(&mut p.text));
            p.last_flush = Some(now);
        }
        out
    }
}

/// The largest char boundary of `s` at or below `at` (at least 1 char in, so progress is made).
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut cut = at.min(s.len());
    while cut > 0 && !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        s.chars().next().map_or(s.len(), char::len_utf8)
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_piece_is_due_at_once_then_pieces_wait_for_the_interval() {
        let b = DeltaBatch::default();
        let t0 = Instant::now();
        b.push("a", t0);
        assert_eq!(b.take_due(), vec!["a".to_string()]);
        b.push("b", t0 + Duration::from_millis(1));
        b.push("c", t0 + Duration::from_millis(2));
        assert!(b.take_due().is_empty());
        b.push("d", t0 + FLUSH_EVERY);
        assert_eq!(b.take_due(), vec!["bcd".to_string()]);
        assert!(b.take_all(t0 + FLUSH_EVERY).is_empty());
    }

    #[test]
    fn due_batches_wait_to_be_taken_and_come_before_the_pending_text() {
        let b = DeltaBatch::default();
        let t0 = Instant::now();
        b.push("a", t0);
        b.push("b", t0);
        // Not taken while the call ran: everything goes with the end, in order.
        assert_eq!(b.take_all(t0), vec!["a".to_string(), "b".to_string()]);
        assert!(b.take_due().is_empty());
        assert!(b.take_all(t0).is_empty());
    }

    #[test]
    fn a_flood_becomes_few_batches_that_join_to_the_exact_text() {
        let b = DeltaBatch::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut expected = String::new();
        for i in 0..200_000 {
            let piece = format!("wörd{i} ");
            expected.push_str(&piece);
            b.push(&piece, t0);
            if i % 1000 == 0 {
                out.extend(b.take_due());
            }
        }
        out.extend(b.take_all(t0));
        assert!(out.len() < 200, "{} batches", out.len());
        assert!(out.iter().all(|s| s.len() <= MAX_BATCH_BYTES));
        assert_eq!(out.concat(), expected);
    }

    #[test]
    fn a_large_piece_is_split_on_char_boundaries() {
        let b = DeltaBatch::default();
        let big = "é".repeat(MAX_BATCH_BYTES);
        b.push(&big, Instant::now());
        let out = b.take_all(Instant::now());
        assert!(out.len() >= 2);
        assert_eq!(out.concat(), big);
    }
}
