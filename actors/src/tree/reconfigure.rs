//! Config hot reload of the running tree: given the new [`TreeConfig`] and which children
//! changed, each supervisor concerned gets one [`ChangeChildren`]; nothing else restarts
//! (the `clients` subtree, and with it every WebSocket session, is never touched).

use actix::Addr;

use super::{TreeConfig, agents_spec, channels_spec, mcp_spec};
use crate::agent::AgentActor;
use crate::mcp::McpActor;
use crate::scheduler::SchedulerActor;
use crate::supervisor::{ChangeChildren, ChildId, SpecChange, SupervisorActor, lookup};

/// Children of one supervisor to (re)start or remove, by tree id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildChanges {
    /// Added or changed: started from the new config (a running one is replaced).
    pub start: Vec<String>,
    /// Gone from the config: stopped and removed.
    pub remove: Vec<String>,
}

impl ChildChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.remove.is_empty()
    }
}

/// What a reload changes in the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeChanges {
    /// `agent:<id>` children of `agents`.
    pub agents: ChildChanges,
    /// `telegram:<account>` / `discord:<account>` children of `channels`.
    pub channels: ChildChanges,
    /// Whether the scheduler's jobs or heartbeats changed (it is restarted).
    pub scheduler: bool,
    /// `mcp:<name>` children of `mcp` (added, changed, enabled or disabled servers).
    pub mcp: ChildChanges,
}

/// Applies `changes` to the tree under `root`, building new children from `cfg`. The
/// `agents` and `channels` supervisors also keep the new config for their next restart.
pub async fn reconfigure(
    root: &Addr<SupervisorActor>,
    cfg: &TreeConfig,
    changes: &TreeChanges,
) -> Result<(), String> {
    let mut at_root = vec![
        SpecChange::Keep(agents_spec(cfg)),
        SpecChange::Keep(channels_spec(cfg)),
        SpecChange::Keep(mcp_spec(cfg)),
    ];
    // Agents read the server list at every model call: a removed or disabled server's
    // tools are gone from the next one.
    crate::mcp::directory().set_servers(cfg.mcp.clone());
    if changes.scheduler {
        at_root.push(SpecChange::Start(SchedulerActor::spec(
            cfg.scheduler.clone(),
        )));
    }
    // The root first: a supervisor restarting meanwhile then starts from the new config.
    root.send(ChangeChildren { changes: at_root })
        .await
        .map_err(|e| format!("the root supervisor is unreachable: {e}"))?;
    if !changes.agents.is_empty() {
        let mut list: Vec<SpecChange> = remove_all(&changes.agents);
        for agent in &cfg.agents {
            let id = format!("agent:{}", agent.summary.id);
            if changes.agents.start.contains(&id) {
                list.push(SpecChange::Start(AgentActor::spec(agent.clone())));
            }
        }
        send_to(root, "agents", list).await?;
    }
    if !changes.channels.is_empty() {
        let mut list: Vec<SpecChange> = remove_all(&changes.channels);
        for spec in crate::channels::account_specs(&cfg.channels, root) {
            if changes.channels.start.contains(&spec.id.0) {
                list.push(SpecChange::Start(spec));
            }
        }
        send_to(root, "channels", list).await?;
    }
    if !changes.mcp.is_empty() {
        let mut list: Vec<SpecChange> = remove_all(&changes.mcp);
        for id in &changes.mcp.start {
            match cfg.mcp.iter().find(|s| &s.child_id() == id) {
                Some(server) if server.enabled => {
                    list.push(SpecChange::Start(McpActor::spec(server.clone())))
                }
                // Disabled (or gone): its child leaves the tree.
                _ => list.push(SpecChange::Remove(ChildId::new(id.clone()))),
            }
        }
        send_to(root, "mcp", list).await?;
    }
    Ok(())
}

fn remove_all(changes: &ChildChanges) -> Vec<SpecChange> {
    changes
        .remove
        .iter()
        .map(|id| SpecChange::Remove(ChildId::new(id.clone())))
        .collect()
}

async fn send_to(
    root: &Addr<SupervisorActor>,
    supervisor: &str,
    changes: Vec<SpecChange>,
) -> Result<(), String> {
    let addr = lookup::<SupervisorActor>(root, supervisor)
        .await
        .map_err(|e| {
            format!("supervisor {supervisor:?} not reachable ({e}); changes not applied")
        })?;
    addr.send(ChangeChildren { changes })
        .await
        .map_err(|e| format!("supervisor {supervisor:?} is unreachable: {e}"))
}
