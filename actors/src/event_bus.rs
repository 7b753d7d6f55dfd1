//! Gateway-wide events for every connected client (`cron`, `heartbeat`): a bounded
//! broadcast channel per process. A client that falls behind misses events (it sees a
//! `seq` gap) rather than growing the process.

use std::sync::OnceLock;

use actix::Message;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for a slow subscriber before it starts missing them.
const CAPACITY: usize = 1024;

/// One gateway-wide event.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct GatewayEvent {
    /// Event name (`cron`, `heartbeat`).
    pub event: &'static str,
    /// Its payload.
    pub payload: Value,
}

fn bus() -> &'static broadcast::Sender<GatewayEvent> {
    static BUS: OnceLock<broadcast::Sender<GatewayEvent>> = OnceLock::new();
    BUS.get_or_init(|| broadcast::channel(CAPACITY).0)
}

/// Sends an event to every subscribed client (nobody listening is fine).
pub fn publish(event: &'static str, payload: Value) {
    let _ = bus().send(GatewayEvent { event, payload });
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
