//! Access to the agent from chat platforms: the DM and group policies, and pairing codes
//! (short, valid one hour, at most three pending per account) that an operator approves
//! with `troupe pairing approve <code>` or WS `pairing.approve`. Until then nothing an
//! unknown sender writes reaches an agent.

use std::time::Duration;

use actix::prelude::*;
use rand::Rng;

use super::{ChannelError, DmPolicy, GroupPolicy, ask_store};
use crate::store::channels::{ApprovePairing, Gate, ListPairings, PairingRecord, PairingRules};
use crate::supervisor::SupervisorActor;

/// How long a pairing code is valid.
pub const CODE_TTL: Duration = Duration::from_secs(3600);

/// Pending codes allowed per account.
pub const MAX_PENDING: i64 = 3;

/// Code alphabet: no 0/O or 1/I/L to misread.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Length of a code.
const CODE_LEN: usize = 8;

/// A fresh random pairing code.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The pairing limits, with a fresh code for a sender who needs one.
pub fn rules() -> PairingRules {
    PairingRules {
        fresh_code: new_code(),
        ttl_ms: CODE_TTL.as_millis() as i64,
        max_pending: MAX_PENDING,
    }
}

/// The gate of a direct message, or `None` when it is ignored.
pub fn dm_gate(policy: DmPolicy, allow_from: &[String], sender: &str) -> Option<Gate> {
    let listed = allow_from.iter().any(|a| a == sender);
    match policy {
        DmPolicy::Disabled => None,
        DmPolicy::Open => Some(Gate::Pass),
        _ if listed => Some(Gate::Pass),
        DmPolicy::Allowlist => Some(Gate::Approved { pair: false }),
        DmPolicy::Pairing => Some(Gate::Approved { pair: true }),
    }
}

/// The gate of a group message, or `None` when it is ignored.
pub fn group_gate(policy: GroupPolicy, addressed_to_bot: bool) -> Option<Gate> {
    match policy {
        GroupPolicy::Disabled => None,
        GroupPolicy::All => Some(Gate::Pass),
        GroupPolicy::Mention => addressed_to_bot.then_some(Gate::Pass),
    }
}

/// Pending pairing requests of every account.
pub async fn list(root: &Addr<SupervisorActor>) -> Result<Vec<PairingRecord>, ChannelError> {
    ask_store(root, ListPairings {}).await
}

/// Approves a code; `None` when no such code is pending (unknown or expired).
pub async fn approve(
    root: &Addr<SupervisorActor>,
    code: &str,
) -> Result<Option<PairingRecord>, ChannelError> {
    let code = code.trim().to_ascii_uppercase();
    ask_store(root, ApprovePairing { code }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_and_unambiguous() {
        let code = new_code();
        assert_eq!(code.len(), CODE_LEN);
        assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn dm_policies_gate_senders() {
        let allow = vec!["7".to_string()];
        assert_eq!(dm_gate(DmPolicy::Open, &[], "1"), Some(Gate::Pass));
        assert_eq!(dm_gate(DmPolicy::Disabled, &allow, "7"), None);
        assert_eq!(dm_gate(DmPolicy::Allowlist, &allow, "7"), Some(Gate::Pass));
        assert_eq!(
            dm_gate(DmPolicy::Allowlist, &allow, "8"),
            Some(Gate::Approved { pair: false })
        );
        assert_eq!(
            dm_gate(DmPolicy::Pairing, &allow, "8"),
            Some(Gate::Approved { pair: true })
        );
        assert_eq!(dm_gate(DmPolicy::Pairing, &allow, "7"), Some(Gate::Pass));
    }

    #[test]
    fn group_policies_answer_mentions_or_everything() {
        assert_eq!(group_gate(GroupPolicy::Mention, false), None);
        assert_eq!(group_gate(GroupPolicy::Mention, true), Some(Gate::Pass));
        assert_eq!(group_gate(GroupPolicy::All, false), Some(Gate::Pass));
        assert_eq!(group_gate(GroupPolicy::Disabled, true), None);
    }
}
