//! The built-in `echo` provider: offline and deterministic, for first runs, tests and
//! benchmarks. It is reported as not a real model by `status` and `doctor`.
//!
//! It replies `echo: <message>` in several deltas, with an optional delay between them. A
//! message starting with `!fail` makes it fail like a provider error would (the rest of the
//! line is the error message), so failure paths can be exercised without a network.

use std::time::Duration;

/// Splits the echo reply into deltas of a few words each.
pub fn echo_deltas(input: &str) -> Vec<String> {
    let reply = if input.trim().is_empty() {
        "echo: (empty message)".to_string()
    } else {
        format!("echo: {input}")
    };
    let mut deltas = Vec::new();
    let mut current = String::new();
    for (i, word) in reply.split_inclusive(' ').enumerate() {
        current.push_str(word);
        if i % 3 == 2 {
            deltas.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        deltas.push(current);
    }
    deltas
}

/// The simulated provider error requested by a `!fail` message, if any.
pub fn simulated_failure(input: &str) -> Option<String> {
    let rest = input.trim_start().strip_prefix("!fail")?;
    let reason = rest.trim();
    Some(if reason.is_empty() {
        "echo provider: simulated failure".into()
    } else {
        format!("echo provider: {reason}")
    })
}

/// Echo settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoSettings {
    /// Delay before each delta.
    pub delta_delay: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_join_to_the_full_reply() {
        let d = echo_deltas("one two three four five six seven");
        assert!(d.len() >= 3, "{d:?}");
        assert_eq!(d.concat(), "echo: one two three four five six seven");
    }

    #[test]
    fn empty_message_gets_a_visible_reply() {
        assert_eq!(echo_deltas("  ").concat(), "echo: (empty message)");
    }

    #[test]
    fn fail_prefix_simulates_a_provider_error() {
        assert_eq!(
            simulated_failure("!fail rate limited").as_deref(),
            Some("echo provider: rate limited")
        );
        assert!(simulated_failure("hello !fail").is_none());
    }
}
