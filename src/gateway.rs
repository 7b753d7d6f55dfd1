//! The edges' handle on the gateway: the core's [`Gateway`](troupe_actors::gateway::Gateway)
//! (settings every edge shares, the root of the tree) plus what only the edges know
//! ([`EdgeSettings`]: authentication, the failed-credential limiter, WebSocket limits).
//! [`ws`] is the OpenClaw WebSocket protocol; [`auth_limit`] the failed-credential limiter
//! shared by HTTP and WS; [`turns`] the layer every edge uses to submit turns and read
//! sessions.

pub mod auth_limit;
pub mod turns;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use troupe_actors::gateway::Secret;

use auth_limit::AuthLimiter;

/// How clients authenticate.
#[derive(Clone, Debug)]
pub enum AuthPolicy {
    /// A shared token.
    Token(Secret),
    /// A shared password.
    Password(Secret),
    /// No authentication (loopback only).
    None,
}

/// Settings only the edges (HTTP and WebSocket) use, fixed for the life of the process.
#[derive(Debug)]
pub struct EdgeSettings {
    /// Authentication.
    pub auth: AuthPolicy,
    /// Largest inbound frame, bytes.
    pub max_payload: usize,
    /// Unsent outbound bytes after which a slow client is closed.
    pub max_buffered_bytes: usize,
    /// Interval of `tick` events.
    pub tick_interval: Duration,
    /// Time allowed for the `connect` request.
    pub handshake_timeout: Duration,
    /// Sessions one connection may follow at once (`sessions.max_subscriptions_per_connection`).
    pub max_subscriptions: usize,
    /// Failed-authentication limiter, shared by the HTTP routes and the WS handshake.
    pub auth_limiter: AuthLimiter,
    /// The gateway's log file, read by `logs.tail` (`None`: not logging to a file).
    pub log_file: Option<std::path::PathBuf>,
    /// The state dir: message attachments are stored under its `uploads/`.
    pub state_dir: std::path::PathBuf,
}

/// The core handle plus the edge settings; cheap to clone. Derefs to the core handle, so
/// `gateway.root`, `gateway.settings` and `gateway.status()` read as before.
#[derive(Clone)]
pub struct Gateway {
    /// The core: shared settings and the root supervisor.
    pub core: troupe_actors::gateway::Gateway,
    /// What only the edges use.
    pub edge: Arc<EdgeSettings>,
}

impl std::ops::Deref for Gateway {
    type Target = troupe_actors::gateway::Gateway;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}
