//! # troupe-actors: the supervision tree and every actor in it
//!
//! ```text
//! root                 one_for_one, intensity 10 restarts / 60 s, then the process exits non-zero
//! ├── store            the single SQLite writer (permanent)
//! ├── session-queue    per-session FIFO lanes, one active run per session (permanent)
//! ├── mcp              supervisor, one_for_one, children restarted with backoff 1 s .. 5 min
//! │   └── mcp:<name>   one per enabled MCP tool server (permanent, own arbiter)
//! ├── agents           supervisor, one_for_one
//! │   └── agent:<id>   one per configured agent (permanent, own arbiter)
//! ├── channels         supervisor, one_for_one, children restarted with backoff 1 s .. 5 min
//! │   └── telegram:<account>   one per configured bot (permanent, own arbiter)
//! ├── scheduler        cron jobs, their run ledger, and agent heartbeats (permanent)
//! └── clients          supervisor of WebSocket sessions
//!     └── ws:<connId>  one per connection (temporary)
//! ```
//!
//! [`tree::root_specs`] builds that tree in start order, the one place that says who
//! restarts whom. Modules:
//!
//! - [`supervisor`]: the generic [`SupervisorActor`](supervisor::SupervisorActor): child
//!   specs, strategies, restart intensity, backoff, the registry, and liveness as progress
//!   (a heartbeat counter read without messaging; hung nodes are killed with their subtree).
//! - [`messages`]: messages every child answers (ping, fault injection, shutdown).
//! - [`store`]: [`StoreActor`](store::StoreActor), the SQLite single writer.
//! - [`session_queue`]: [`SessionQueueActor`](session_queue::SessionQueueActor): lanes,
//!   turns, aborts, waiters, event fan-out.
//! - [`agent`]: [`AgentActor`](agent::AgentActor), one per configured agent; [`echo`]: the
//!   built-in offline provider.
//! - [`channels`]: the `channels` supervisor's children: Telegram bots, the inbound journal
//!   and outbound deliveries, reply splitting, access policies and pairing.
//! - [`mcp`]: the `mcp` supervisor's children: MCP tool-server connections (rmcp, stdio or
//!   streamable HTTP), their tools offered to agents as `<server>__<tool>`.
//! - [`scheduler`]: [`SchedulerActor`](scheduler::SchedulerActor): cron jobs (schedule
//!   parsing, catch-up, overlap), the run ledger and heartbeats; [`event_bus`]: events for
//!   every connected client; [`presence`]: who is connected; [`health`]: which children
//!   are down.
//! - [`gateway`]: the core handle the edges hold: shared settings and the root of the tree;
//!   [`live_config`]: what a config hot reload changes in them (agent list, reload status,
//!   `config.*`).

pub mod agent;
pub mod attachments;
pub mod channels;
pub mod echo;
pub mod event_bus;
pub mod event_sink;
pub mod gateway;
pub mod health;
pub mod live_config;
pub mod log_tail;
pub mod mcp;
pub mod messages;
pub mod presence;
pub mod provider;
pub mod scheduler;
pub mod session_key;
pub mod session_queue;
pub mod store;
pub mod supervisor;
pub mod tools;
pub mod tree;
pub mod vault;

/// Milliseconds since the Unix epoch, the timestamp unit of every frame and tree node.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
