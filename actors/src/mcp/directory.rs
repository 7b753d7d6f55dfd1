//! The process's MCP directory: the configured servers (which agents may use them, their
//! call timeouts, whether they are enabled) and the current address of the `mcp`
//! supervisor, whose registry holds the servers' actors. Agents read it at every model
//! call, so a reload that adds, removes or disables a server reaches running agents
//! without restarting them. Like [`LiveAgents`](crate::live_config::LiveAgents), the list
//! is swapped whole and a reader keeps the `Arc` it took.

use std::sync::{Arc, LazyLock, RwLock};

use actix::Addr;

use super::{McpServerSettings, McpServers};
use crate::supervisor::SupervisorActor;

/// The configured servers and where their supervisor is.
#[derive(Default)]
pub struct McpDirectory {
    servers: RwLock<Option<McpServers>>,
    supervisor: RwLock<Option<Addr<SupervisorActor>>>,
}

static DIRECTORY: LazyLock<McpDirectory> = LazyLock::new(McpDirectory::default);

/// The process's directory (one supervision tree per process).
pub fn directory() -> &'static McpDirectory {
    &DIRECTORY
}

impl McpDirectory {
    /// The servers now (empty before the tree is built).
    pub fn servers(&self) -> McpServers {
        let read = match self.servers.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        read.unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Installs the servers of a new config.
    pub fn set_servers(&self, servers: Vec<McpServerSettings>) {
        let list: McpServers = servers.into();
        match self.servers.write() {
            Ok(mut current) => *current = Some(list),
            Err(poisoned) => *poisoned.into_inner() = Some(list),
        }
    }

    /// The `mcp` supervisor's current address.
    pub fn supervisor(&self) -> Option<Addr<SupervisorActor>> {
        match self.supervisor.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records the `mcp` supervisor's address (at each of its starts).
    pub fn set_supervisor(&self, addr: Addr<SupervisorActor>) {
        match self.supervisor.write() {
            Ok(mut current) => *current = Some(addr),
            Err(poisoned) => *poisoned.into_inner() = Some(addr),
        }
    }
}
