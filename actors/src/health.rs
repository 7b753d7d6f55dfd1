//! The health summary (`health` method, `hello-ok.snapshot.health`, `health` event): which
//! children of the tree are not running, kept from the `supervisor` events as they happen
//! (no timer, no polling), and whether each chat channel account is connected to its
//! platform ([`channels`], updated by the channel actors). When the set of down children
//! or a channel's `connected` changes, every client gets a `health` event and
//! `stateVersion.health` counts the change.

pub mod channels;

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use crate::event_bus;

/// Children listed in `notRunning` (the set itself is bounded by the tree's permanent and
/// transient children); `notRunningCount` gives the total.
const LIST_LIMIT: usize = 200;

/// A child that is down.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Down {
    /// Its child id.
    id: String,
    /// Its supervisor's id.
    supervisor: String,
    /// `exited` (a restart may follow) or `gave_up` (its supervisor escalated).
    state: &'static str,
    /// normal | error | panic | intensity.
    reason: Option<String>,
    /// Since when (ms since the epoch).
    since: u64,
}

/// Down children by id.
static DOWN: Mutex<BTreeMap<String, Down>> = Mutex::new(BTreeMap::new());

fn down() -> std::sync::MutexGuard<'static, BTreeMap<String, Down>> {
    DOWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a `supervisor` event means for the health summary.
pub(crate) enum Change<'a> {
    /// The child runs (started or restarted).
    Up,
    /// The child is gone from the tree.
    Removed,
    /// The child is down: `exited` or `gave_up`, with a reason.
    Down(&'static str, Option<&'a str>),
}

/// Records a change of a (non-temporary) child; a change of the set is announced.
pub(crate) fn note(supervisor: &str, id: &str, change: Change<'_>, at: u64) {
    let mut down = down();
    let changed = match change {
        Change::Up => down.remove(id).is_some(),
        Change::Removed => {
            let was_down = down.remove(id).is_some();
            channels::forget(id) || was_down
        }
        Change::Down(state, reason) => {
            let entry = Down {
                id: id.to_string(),
                supervisor: supervisor.to_string(),
                state,
                reason: reason.map(str::to_string),
                since: at,
            };
            let same = down
                .get(id)
                .is_some_and(|d| d.state == entry.state && d.reason == entry.reason);
            down.insert(id.to_string(), entry);
            // A channel actor that died without stopping (a panic) is down all the same.
            let disconnected = channels::went_down(id);
            !same || disconnected
        }
    };
    if changed {
        let version = event_bus::bump_health();
        event_bus::publish_versioned("health", summary_of(&down), version);
    }
}

/// A channel's `connected` changed: announced like a change of the tree.
pub(crate) fn changed() {
    let down = down();
    let version = event_bus::bump_health();
    event_bus::publish_versioned("health", summary_of(&down), version);
}

fn summary_of(down: &BTreeMap<String, Down>) -> Value {
    let list: Vec<&Down> = down.values().take(LIST_LIMIT).collect();
    let (channels, degraded) = channels::summary();
    json!({
        "ok": true,
        "ts": crate::now_ms(),
        "allRunning": down.is_empty(),
        "notRunning": list,
        "notRunningCount": down.len(),
        "channels": channels,
        "channelsDegraded": degraded,
    })
}

/// The summary now: `{ok, ts, allRunning, notRunning: [{id, supervisor, state, reason,
/// since}], notRunningCount, channels: {"<kind>:<account>": {channel, accountId,
/// configured, running, connected, lastError, lastErrorAt, lastOkAt,
/// consecutiveFailures}}, channelsDegraded: [ids]}` (`ok` says the gateway answers;
/// `allRunning` that no child of the tree is down since it last exited;
/// `channelsDegraded` lists the channel accounts not connected to their platform).
pub fn summary() -> Value {
    summary_of(&down())
}
