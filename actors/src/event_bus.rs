//! Gateway-wide events for every connected client (`cron`, `heartbeat`, `supervisor`,
//! `presence`, `health`): a bounded broadcast channel per process. A client that falls
//! behind misses events (it sees a `seq` gap) rather than growing the process. Also the
//! process's state versions (`stateVersion {presence, health}`, as OpenClaw counts them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix::Message;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for a slow subscriber before it starts missing them.
const CAPACITY: usize = 1024;

/// One gateway-wide event.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct GatewayEvent {
    /// Event name (`cron`, `heartbeat`, `supervisor`, `presence`, `health`).
    pub event: &'static str,
    /// Its payload.
    pub payload: Value,
    /// The state versions after this event (`presence` and `health` events carry them).
    pub state_version: Option<StateVersion>,
    /// The payload as JSON text, made by the first connection that sends it and shared by
    /// every copy (a presence list goes to every client; it is serialized once).
    rendered: Arc<OnceLock<Box<str>>>,
}

impl GatewayEvent {
    fn new(event: &'static str, payload: Value, state_version: Option<StateVersion>) -> Self {
        Self {
            event,
            payload,
            state_version,
            rendered: Arc::default(),
        }
    }

    /// The payload as JSON text (serialized once for all the copies of this event).
    pub fn payload_text(&self) -> &str {
        self.rendered
            .get_or_init(|| self.payload.to_string().into_boxed_str())
    }
}

/// How many times the presence list and the health summary have changed since the
/// process started (OpenClaw's `stateVersion`): a client that holds an older version than
/// an event's knows it missed a change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateVersion {
    /// Changes of the presence list.
    pub presence: u64,
    /// Changes of the health summary.
    pub health: u64,
}

static PRESENCE_VERSION: AtomicU64 = AtomicU64::new(0);
static HEALTH_VERSION: AtomicU64 = AtomicU64::new(0);

/// The current state versions.
pub fn state_version() -> StateVersion {
    StateVersion {
        presence: PRESENCE_VERSION.load(Ordering::SeqCst),
        health: HEALTH_VERSION.load(Ordering::SeqCst),
    }
}

/// Counts one change of the presence list; the versions after it.
pub(crate) fn bump_presence() -> StateVersion {
    PRESENCE_VERSION.fetch_add(1, Ordering::SeqCst);
    state_version()
}

/// Counts one change of the health summary; the versions after it.
pub(crate) fn bump_health() -> StateVersion {
    HEALTH_VERSION.fetch_add(1, Ordering::SeqCst);
    state_version()
}

fn bus() -> &'static broadcast::Sender<GatewayEvent> {
    static BUS: OnceLock<broadcast::Sender<GatewayEvent>> = OnceLock::new();
    BUS.get_or_init(|| broadcast::channel(CAPACITY).0)
}

/// Sends an event to every subscribed client (nobody listening is fine).
pub fn publish(event: &'static str, payload: Value) {
    let _ = bus().send(GatewayEvent::new(event, payload, None));
}

/// Sends an event that carries the state versions after it.
pub(crate) fn publish_versioned(event: &'static str, payload: Value, version: StateVersion) {
    let _ = bus().send(GatewayEvent::new(event, payload, Some(version)));
}

/// The stream of events from now on; a lagging subscriber skips what it missed.
pub fn subscribe() -> impl futures_util::Stream<Item = GatewayEvent> + 'static {
    let rx = bus().subscribe();
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((event, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
