//! The connection status of each chat channel account (`telegram:<account>`,
//! `discord:<account>`): whether its actor runs and whether its last exchange with the
//! platform succeeded. Each account's actor holds its [`ChannelLink`] (an `Arc` of atomics
//! and one small mutex, found here by tree id and reused by every restart of that id) and
//! updates it as it talks to the platform; the health summary reads them. A change of
//! `connected` is announced as one `health` event; a success that changes nothing costs a
//! few atomic stores and no lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use crate::now_ms;

/// Each configured channel account's status, by tree id.
static LINKS: Mutex<BTreeMap<String, Arc<ChannelLink>>> = Mutex::new(BTreeMap::new());

fn links() -> MutexGuard<'static, BTreeMap<String, Arc<ChannelLink>>> {
    LINKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One channel account's connection to its platform, as its actor last saw it.
#[derive(Debug)]
pub struct ChannelLink {
    /// Tree id (`telegram:<account>`).
    id: String,
    /// An actor of this account runs.
    running: AtomicBool,
    /// The last exchange with the platform succeeded (and the actor has not stopped since).
    connected: AtomicBool,
    /// When an exchange last succeeded (ms since the epoch; 0: never).
    last_ok_at: AtomicU64,
    /// Failures since the last success.
    failures: AtomicU32,
    /// The last failure's text and when it happened (ms); kept after a success.
    last_error: Mutex<Option<(String, u64)>>,
}

/// The status of the channel account `id` (`telegram:<account>`), made on first use: every
/// (re)start of that id gets the same one, so a restarted actor carries on where its
/// predecessor stopped. It lasts until the account leaves the tree.
pub fn link(id: &str) -> Arc<ChannelLink> {
    links()
        .entry(id.to_string())
        .or_insert_with(|| {
            Arc::new(ChannelLink {
                id: id.to_string(),
                running: AtomicBool::new(false),
                connected: AtomicBool::new(false),
                last_ok_at: AtomicU64::new(0),
                failures: AtomicU32::new(0),
                last_error: Mutex::new(None),
            })
        })
        .clone()
}

/// Forgets the status of `id` (its child left the tree); false when it had none.
pub(crate) fn forget(id: &str) -> bool {
    links().remove(id).is_some()
}

impl ChannelLink {
    /// Its tree id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the last exchange with the platform succeeded.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// An actor of this account was started (or its start failed: `false`).
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    /// An exchange with the platform succeeded (a `getUpdates`/`getMe` answered, a
    /// gateway session established); true when that made it connected (announced).
    pub fn ok(&self) -> bool {
        self.last_ok_at.store(now_ms(), Ordering::SeqCst);
        self.failures.store(0, Ordering::SeqCst);
        let changed = !self.connected.swap(true, Ordering::SeqCst);
        if changed {
            self.announce();
        }
        changed
    }

    /// An exchange with the platform failed, or the connection was lost: `why` (tokens
    /// already redacted); true when that made it disconnected (announced).
    pub fn failed(&self, why: &str) -> bool {
        {
            let mut last = self
                .last_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *last = Some((why.to_string(), now_ms()));
        }
        self.failures.fetch_add(1, Ordering::SeqCst);
        self.disconnect()
    }

    /// The account's actor stopped: not running, not connected; true when it was
    /// connected (announced).
    pub fn stopped(&self) -> bool {
        self.running.store(false, Ordering::SeqCst);
        self.disconnect()
    }

    fn disconnect(&self) -> bool {
        let changed = self.connected.swap(false, Ordering::SeqCst);
        if changed {
            self.announce();
        }
        changed
    }

    /// A `health` event, unless this status was forgotten meanwhile (an actor of a removed
    /// account stopping late).
    fn announce(&self) {
        let current = links()
            .get(&self.id)
            .is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), self));
        if current {
            super::changed();
        }
    }

    /// `{channel, accountId, configured, running, connected, lastError, lastErrorAt,
    /// lastOkAt, consecutiveFailures}`.
    fn describe(&self) -> Value {
        let (channel, account) = self.id.split_once(':').unwrap_or((self.id.as_str(), ""));
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let (error, error_at) = match last_error {
            Some((text, at)) => (Some(text), Some(at)),
            None => (None, None),
        };
        let ok_at = self.last_ok_at.load(Ordering::SeqCst);
        json!({
            "channel": channel,
            "accountId": account,
            "configured": true,
            "running": self.running.load(Ordering::SeqCst),
            "connected": self.connected(),
            "lastError": error,
            "lastErrorAt": error_at,
            "lastOkAt": (ok_at > 0).then_some(ok_at),
            "consecutiveFailures": self.failures.load(Ordering::SeqCst),
        })
    }
}

/// `channels` (`{"<kind>:<account>": {...}}`) and `channelsDegraded` (the ids not
/// connected, in id order) of the health summary.
pub(crate) fn summary() -> (Value, Vec<String>) {
    let links = links();
    let mut map = Map::new();
    let mut degraded = Vec::new();
    for (id, link) in links.iter() {
        if !link.connected() {
            degraded.push(id.clone());
        }
        map.insert(id.clone(), link.describe());
    }
    (Value::Object(map), degraded)
}

/// The child `id` exited: if it is a channel account, it no longer runs nor is connected
/// (its actor may have died in a panic, without its `stopped`). True when it was
/// connected; the caller announces the change.
pub(crate) fn went_down(id: &str) -> bool {
    let Some(link) = links().get(id).cloned() else {
        return false;
    };
    link.running.store(false, Ordering::SeqCst);
    link.connected.swap(false, Ordering::SeqCst)
}

/// Whether the channel account `id` is connected (false when unknown).
pub fn is_connected(id: &str) -> bool {
    links().get(id).is_some_and(|link| link.connected())
}

/// Whether each channel account is connected, by tree id (for `/metrics`).
pub fn connected() -> Vec<(String, bool)> {
    links()
        .iter()
        .map(|(id, link)| (id.clone(), link.connected()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_of_connected_are_announced_once_and_restarts_reuse_the_status() {
        let id = "telegram:health-unit";
        let link = link(id);
        link.set_running(true);
        assert!(
            !link.failed("getUpdates failed: 502"),
            "not connected yet: no change"
        );
        let before = crate::event_bus::state_version().health;
        assert!(link.ok(), "connected: a change");
        assert!(crate::event_bus::state_version().health > before);
        assert!(!link.ok() && !link.ok(), "still connected: no change");
        assert!(link.failed("getUpdates failed: 401 Unauthorized"));
        assert!(!link.failed("again"), "still down: no change");
        let (channels, degraded) = summary();
        let entry = &channels[id];
        assert_eq!(entry["channel"], "telegram", "{entry}");
        assert_eq!(entry["accountId"], "health-unit", "{entry}");
        assert_eq!(entry["connected"], false, "{entry}");
        assert_eq!(entry["running"], true, "{entry}");
        assert_eq!(entry["lastError"], "again", "{entry}");
        assert_eq!(entry["consecutiveFailures"], 2, "{entry}");
        assert!(entry["lastOkAt"].is_u64() && entry["lastErrorAt"].is_u64());
        assert!(degraded.iter().any(|d| d == id));
        // A restart finds the same status.
        assert!(Arc::ptr_eq(&link, &super::link(id)));
        assert!(link.ok());
        assert!(link.stopped(), "a stopped actor is not connected");
        assert_eq!(summary().0[id]["running"], false);
        assert!(!link.stopped());
        // An actor that died in a panic never ran `stopped`: its exit is enough.
        link.set_running(true);
        assert!(link.ok());
        assert!(went_down(id), "connected until its exit was noted");
        assert_eq!(summary().0[id]["running"], false);
        assert!(!went_down(id));
        // Gone from the tree: gone from the summary.
        assert!(forget(id));
        assert!(summary().0.get(id).is_none());
    }
}
