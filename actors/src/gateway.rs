//! The core's handle for the edges: the immutable settings every edge shares (version,
//! agents, start time) and the root of the tree. The edges' own settings (authentication,
//! frame limits) live with the edges, in the `troupe` crate.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;

use crate::supervisor::SupervisorActor;

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the built-in or configured agents are, for `status` and `hello-ok`.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSummary {
    /// Agent id.
    pub id: String,
    /// Provider name (`echo`, `openai`, `anthropic`).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// False for the built-in echo provider.
    pub real_model: bool,
}

/// Settings shared by every route; fixed for the life of the process except `agents` and
/// `reload`, which a config reload updates.
#[derive(Debug)]
pub struct GatewaySettings {
    /// Troupe version.
    pub version: &'static str,
    /// Whether `supervisor.crash` is allowed.
    pub fault_injection: bool,
    /// Process start.
    pub started: Instant,
    /// Configured agents (swapped by a config reload).
    pub agents: crate::live_config::LiveAgents,
    /// Config hot reload: its status and the `config.*` service.
    pub reload: crate::live_config::ReloadState,
    /// Set when the process is stopping (not when a subtree restarts): clients are told
    /// `shutdown` and closed with 1001 rather than 1012.
    pub stopping: std::sync::atomic::AtomicBool,
}

impl GatewaySettings {
    /// Milliseconds since the gateway started.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The settings plus the root of the tree; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    /// Settings.
    pub settings: Arc<GatewaySettings>,
    /// The root supervisor.
    pub root: Addr<SupervisorActor>,
}

impl Gateway {
    /// The current address of the child with the given id (it changes on restart).
    pub async fn lookup<A: actix::Actor>(
        &self,
        id: &str,
    ) -> Result<Addr<A>, crate::supervisor::LookupError> {
        crate::supervisor::lookup::<A>(&self.root, id).await
    }

    /// [`Gateway::lookup`], but a child that is (re)starting, or being stopped to be
    /// restarted, is waited for (a few seconds) and its next instance's address given.
    pub async fn lookup_patiently<A: actix::Actor>(
        &self,
        id: &str,
    ) -> Result<Addr<A>, crate::supervisor::LookupError> {
        crate::supervisor::lookup_patiently::<A>(&self.root, id).await
    }
}

/// The status report of `GET /api/status`, WS `status` and `supervisor.tree`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Troupe version.
    pub version: &'static str,
    /// Process id.
    pub pid: u32,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Whether every permanent child is running.
    pub ready: bool,
    /// Configured agents.
    pub agents: Vec<AgentSummary>,
    /// Config hot reload: mode, last applied change, pending restarts, last error.
    pub reload: crate::live_config::ReloadStatus,
    /// Killed nodes still running anywhere in the tree (a handler blocking its thread
    /// cannot be stopped from outside); they leak until the process exits.
    pub unstoppable: usize,
    /// MCP tool servers: state, tools (count them for the tool count), last error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<crate::mcp::McpServerStatus>,
    /// The supervision tree.
    pub tree: crate::supervisor::TreeNode,
}

impl Gateway {
    /// The live status, listing every client when `all_clients`.
    pub async fn status(&self, all_clients: bool) -> StatusReport {
        let tree = match self
            .root
            .send(crate::supervisor::DescribeTree { all: all_clients })
            .await
        {
            Ok(tree) => tree,
            Err(_) => crate::supervisor::TreeNode {
                id: "root".into(),
                kind: "supervisor".into(),
                state: crate::supervisor::NodeState::Stopped,
                restarts: 0,
                last_exit: None,
                started_at: None,
                mailbox: 0,
                next_attempt_at: None,
                children: Vec::new(),
                child_count: None,
                unstoppable: 0,
            },
        };
        StatusReport {
            version: self.settings.version,
            pid: std::process::id(),
            uptime_ms: self.settings.uptime_ms(),
            ready: ready(&tree),
            unstoppable: tree.unstoppable_total(),
            agents: self.settings.agents.list().to_vec(),
            reload: self.settings.reload.status(),
            mcp: crate::mcp::status(&tree).await,
            tree,
        }
    }
}

/// Ready means the root and every permanent node below it run, client sessions, chat
/// channels and MCP servers aside: a channel (or MCP server) depends on its platform being reachable (it waits in backoff
/// while it is not), and the gateway serves everything else meanwhile.
pub fn ready(tree: &crate::supervisor::TreeNode) -> bool {
    tree.state == crate::supervisor::NodeState::Running
        && tree
            .children
            .iter()
            .filter(|c| c.kind != "ws" && c.kind != "channel" && c.kind != "mcp")
            .all(ready)
}

#[cfg(test)]
mod tests {
    use super::ready;
    use crate::supervisor::{NodeState, TreeNode};

    fn n(id: &str, kind: &str, state: NodeState, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            id: id.into(),
            kind: kind.into(),
            state,
            restarts: 0,
            last_exit: None,
            started_at: None,
            mailbox: 0,
            next_attempt_at: None,
            children,
            child_count: None,
            unstoppable: 0,
        }
    }

    #[test]
    fn not_ready_while_a_nested_permanent_child_is_down_but_ws_sessions_and_channels_do_not_count()
    {
        use NodeState::*;
        let tree = |agent| {
            n(
                "root",
                "supervisor",
                Running,
                vec![
                    n(
                        "agents",
                        "supervisor",
                        Running,
                        vec![n("agent:main", "agent", agent, vec![])],
                    ),
                    n(
                        "channels",
                        "supervisor",
                        Running,
                        vec![n("telegram:main", "channel", Backoff, vec![])],
                    ),
                    n(
                        "clients",
                        "supervisor",
                        Running,
                        vec![n("ws:1", "ws", Stopped, vec![])],
                    ),
                ],
            )
        };
        assert!(ready(&tree(Running)));
        assert!(!ready(&tree(Restarting)));
        assert!(!ready(&tree(Backoff)));
        assert!(!ready(&tree(Failed)));
    }
}
