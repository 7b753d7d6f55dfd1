//! `mcp`: the supervisor of MCP tool-server connections, one child `mcp:<name>` per enabled
//! `[[mcp]]` server ([`McpActor`](client::McpActor)), each on its own arbiter and restarted
//! with exponential backoff and jitter (1 s .. 5 min) when its process dies, its connection
//! closes or it stops answering pings.
//!
//! Agents reach the servers through this module, by typed messages to the child's current
//! address (looked up in the `mcp` supervisor's registry): [`tool_specs`] lists the tools
//! an agent may use at the start of each model call, [`call`] runs one. A server that is
//! down, restarting or slow gives an error result to the model, never a failed turn.
//!
//! - [`client`]: the child actor (rmcp client over stdio or streamable HTTP).
//! - [`directory`]: which servers are configured, for which agents, and where the `mcp`
//!   supervisor is (swapped whole by a config reload).
//! - [`naming`]: `<server>__<tool>` names valid for every provider.

pub mod client;
pub mod directory;
pub mod naming;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::gateway::Secret;
use crate::provider::{ToolCall, ToolSpec};
use crate::supervisor::{
    Backoff, ChildHandle, ChildLink, ChildSpec, SupervisorActor, SupervisorConfig, lookup,
};
pub use client::{CallMcpTool, DescribeMcp, McpActor, McpSnapshot, McpTool};
pub use directory::{McpDirectory, directory};

/// Restart delay of an MCP server: 1 s doubling to 5 min, with jitter.
pub const MCP_BACKOFF: Backoff = Backoff {
    min: Duration::from_secs(1),
    max: Duration::from_secs(300),
};

/// How long a turn waits for one server's tool list before going on without it.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// How an MCP server is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A child process speaking MCP on its stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment (values may be secrets: never logged).
        env: Vec<(String, Secret)>,
        /// Working directory (default: the gateway's).
        cwd: Option<PathBuf>,
    },
    /// A streamable HTTP endpoint.
    Http {
        /// The endpoint URL.
        url: String,
        /// Extra request headers (values may be secrets: never logged).
        headers: Vec<(String, Secret)>,
        /// Sent as `Authorization: Bearer <token>`.
        bearer_token: Option<Secret>,
    },
}

impl McpTransport {
    /// `stdio` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdio { .. } => "stdio",
            Self::Http { .. } => "http",
        }
    }
}

/// One `[[mcp]]` server.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerSettings {
    /// Server name (tree id `mcp:<name>`, tool prefix `<name>__`).
    pub name: String,
    /// How it is reached.
    pub transport: McpTransport,
    /// Disabled servers are not started and offer no tools.
    pub enabled: bool,
    /// Agents that may use it (empty: every agent).
    pub agents: Vec<String>,
    /// How long one tool call may take.
    pub call_timeout: Duration,
}

impl McpServerSettings {
    /// The server's tree id.
    pub fn child_id(&self) -> String {
        format!("mcp:{}", self.name)
    }

    /// Whether `agent` may use this server's tools.
    pub fn serves(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|a| a == agent)
    }
}

/// Errors of an MCP server connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum McpError {
    /// The server could not be started or reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server broke the protocol or closed the connection.
    #[error("{0}")]
    Protocol(String),
    /// The server is not running (down, restarting, disabled).
    #[error("mcp server '{server}' is unavailable: {why}")]
    Unavailable {
        /// Server name.
        server: String,
        /// What is wrong.
        why: String,
    },
}

/// The child spec of the `mcp` supervisor: one child per enabled server. Each start of the
/// supervisor tells the [`directory`] where it is.
pub fn supervisor_spec(config: SupervisorConfig, servers: Vec<McpServerSettings>) -> ChildSpec {
    let id = config.id.to_string();
    ChildSpec::new(id, "supervisor", move |link: ChildLink| {
        let specs = server_specs(&servers);
        let addr = SupervisorActor::new(config.clone(), specs, Some(link)).start();
        directory().set_supervisor(addr.clone());
        Ok(ChildHandle::of_supervisor(addr))
    })
    .shutdown(Duration::from_secs(15))
}

/// The child specs of the enabled servers.
pub fn server_specs(servers: &[McpServerSettings]) -> Vec<ChildSpec> {
    servers
        .iter()
        .filter(|s| s.enabled)
        .cloned()
        .map(McpActor::spec)
        .collect()
}

/// The current address of server `name`'s actor, if it runs.
pub async fn server_addr(name: &str) -> Option<Addr<McpActor>> {
    let supervisor = directory().supervisor()?;
    lookup::<McpActor>(&supervisor, &format!("mcp:{name}"))
        .await
        .ok()
}

/// The MCP tools `agent` may use now, as the model sees them. A server that is down or slow
/// to answer is left out of this call's list.
pub async fn tool_specs(agent: &str) -> Vec<ToolSpec> {
    let servers = directory().servers();
    let asks = servers
        .iter()
        .filter(|s| s.enabled && s.serves(agent))
        .map(|s| async move {
            let addr = server_addr(&s.name).await?;
            tokio::time::timeout(LIST_TIMEOUT, addr.send(DescribeMcp))
                .await
                .ok()?
                .ok()
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .flat_map(|snapshot| snapshot.tools.iter().map(McpTool::spec).collect::<Vec<_>>())
        .collect()
}

/// Whether `name` is an MCP tool name (`<server>__...` of a configured server) `agent`
/// may call.
pub fn is_mcp_tool(agent: &str, name: &str) -> bool {
    let servers = directory().servers();
    let visible = servers.iter().filter(|s| s.serves(agent));
    naming::server_of(name, visible.map(|s| s.name.as_str())).is_some()
}

/// Runs one MCP tool call for `agent`; `Err` is an error result for the model (the server
/// is down, disabled or slow, or the tool said it failed).
pub async fn call(agent: &str, call: &ToolCall) -> Result<String, String> {
    let servers = directory().servers();
    let visible = servers.iter().filter(|s| s.serves(agent));
    let Some(server) = naming::server_of(&call.name, visible.map(|s| s.name.as_str()))
        .and_then(|name| servers.iter().find(|s| s.name == name))
    else {
        return Err(format!("unknown tool {:?}", call.name));
    };
    let unavailable = |why: String| {
        McpError::Unavailable {
            server: server.name.clone(),
            why,
        }
        .to_string()
    };
    if !server.enabled {
        return Err(unavailable("it is disabled".into()));
    }
    let arguments = if call.arguments.trim().is_empty() {
        None
    } else {
        match serde_json::from_str::<Value>(&call.arguments) {
            Ok(Value::Object(map)) => Some(map),
            Ok(Value::Null) => None,
            Ok(other) => {
                return Err(format!(
                    "arguments must be a JSON object, got {}",
                    kind_of(&other)
                ));
            }
            Err(e) => return Err(format!("arguments are not valid JSON: {e}")),
        }
    };
    let Some(addr) = server_addr(&server.name).await else {
        return Err(unavailable(
            "it is not running (starting, restarting after a failure, or waiting out a backoff)"
                .into(),
        ));
    };
    let ask = addr.send(CallMcpTool {
        exposed: call.name.clone(),
        arguments,
        timeout: server.call_timeout,
    });
    match tokio::time::timeout(server.call_timeout, ask).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(unavailable(format!(
            "its actor stopped during the call ({e})"
        ))),
        Err(_) => Err(format!(
            "mcp tool {:?} did not answer within {} s (call_timeout_secs)",
            call.name,
            server.call_timeout.as_secs()
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One server as `GET /api/mcps` shows it (secrets never included).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServerStatus {
    /// Server name.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// `stdio` or `http`.
    pub transport: &'static str,
    /// Tree state (`running`, `backoff`, ...), `disabled`, or `absent`.
    pub state: String,
    /// Restarts since the gateway started.
    pub restarts: u32,
    /// Agents that may use it (empty: every agent).
    pub agents: Vec<String>,
    /// Tools offered, by exposed name.
    pub tools: Vec<String>,
    /// The most recent error (the server's or its last exit's).
    pub last_error: Option<String>,
    /// When the current connection was made (ms).
    pub connected_since: Option<u64>,
}

/// Every configured server's status, from the tree (`tree`: the status tree's root).
pub async fn status(tree: &crate::supervisor::TreeNode) -> Vec<McpServerStatus> {
    let servers = directory().servers();
    let mut out = Vec::new();
    for server in servers.iter() {
        let node = tree.find(&server.child_id());
        let snapshot = match (server.enabled, node) {
            (true, Some(_)) => match server_addr(&server.name).await {
                Some(addr) => tokio::time::timeout(LIST_TIMEOUT, addr.send(DescribeMcp))
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            },
            _ => None,
        };
        let state = match (server.enabled, node) {
            (false, _) => "disabled".to_string(),
            (true, Some(node)) => serde_json::to_value(node.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            (true, None) => "absent".to_string(),
        };
        let last_error = snapshot
            .as_ref()
            .and_then(|s| s.last_error.clone())
            .or_else(|| {
                node.and_then(|n| n.last_exit.as_ref())
                    .and_then(|e| e.message.clone())
            });
        out.push(McpServerStatus {
            name: server.name.clone(),
            enabled: server.enabled,
            transport: server.transport.kind(),
            state,
            restarts: node.map(|n| n.restarts).unwrap_or(0),
            agents: server.agents.clone(),
            tools: snapshot
                .as_ref()
                .map(|s| s.tools.iter().map(|t| t.exposed.clone()).collect())
                .unwrap_or_default(),
            last_error,
            connected_since: snapshot.and_then(|s| s.connected_since),
        });
    }
    out
}

/// The MCP tools of each agent in `agents` (exposed names), for `agents.list`.
pub async fn tools_by_agent(agents: &[String]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for agent in agents {
        let names = tool_specs(agent)
            .await
            .into_iter()
            .map(|t| t.name)
            .collect();
        out.push((agent.clone(), names));
    }
    out
}

/// Shared by the settings of the tree: the servers' list with a cheap clone.
pub type McpServers = Arc<[McpServerSettings]>;
