//! The supervision tree in one place: [`root_specs`] lists the root's children in start
//! order (stopped in reverse), like OTP's `init/1`. Adding a child is one line here.
//! [`reconfigure`] brings a running tree to a new config by restarting only what changed.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::agent::{AgentActor, AgentSettings};
use crate::channels::ChannelAccounts;
use crate::mcp::McpServerSettings;
use crate::scheduler::{SchedulerActor, SchedulerSettings};
use crate::session_queue::{QueueSettings, SessionQueueActor};
use crate::store::StoreActor;
mod reconfigure;

pub use reconfigure::{ChildChanges, TreeChanges, reconfigure};

use crate::supervisor::{
    ChildHandle, ChildId, ChildLink, ChildSpec, Intensity, Strategy, SupervisorActor,
    SupervisorConfig,
};

/// Restart intensity of `channels`: its children back off (1 s .. 5 min), so a platform
/// that stays down never comes near it and never escalates to the root.
const CHANNELS_INTENSITY: Intensity = Intensity {
    max_restarts: 1000,
    period: Duration::from_secs(60),
};

/// What the tree needs from the gateway's configuration.
#[derive(Clone, Debug)]
pub struct TreeConfig {
    /// SQLite file.
    pub store_path: PathBuf,
    /// Finished runs older than this are deleted (`None`: kept).
    pub store_retention: Option<Duration>,
    /// Agents to run.
    pub agents: Vec<AgentSettings>,
    /// Root restart intensity (past it the process exits non-zero).
    pub root_intensity: Intensity,
    /// Restart intensity of the `agents` supervisor (past it, escalate to root).
    pub agents_intensity: Intensity,
    /// Session-queue limits.
    pub queue: QueueSettings,
    /// Liveness ping interval.
    pub ping_interval: Duration,
    /// A child silent for this long is hung and restarted.
    pub hang_timeout: Duration,
    /// Chat-platform accounts, one `channels` child each.
    pub channels: ChannelAccounts,
    /// Cron jobs from config and agents' heartbeats.
    pub scheduler: SchedulerSettings,
    /// MCP tool servers (`[[mcp]]`), one `mcp` child each when enabled.
    pub mcp: Vec<McpServerSettings>,
}

impl TreeConfig {
    fn supervisor(&self, id: &str, strategy: Strategy, intensity: Intensity) -> SupervisorConfig {
        SupervisorConfig {
            id: ChildId::new(id),
            strategy,
            intensity,
            ping_interval: self.ping_interval,
            hang_timeout: self.hang_timeout,
            list_limit: 100,
        }
    }
}

/// The root's children, in start order.
pub fn root_specs(cfg: &TreeConfig) -> Vec<ChildSpec> {
    vec![
        StoreActor::spec(cfg.store_path.clone(), cfg.store_retention),
        SessionQueueActor::spec(cfg.queue.clone()),
        mcp_spec(cfg),
        agents_spec(cfg),
        channels_spec(cfg),
        SchedulerActor::spec(cfg.scheduler.clone()),
        supervisor_spec(
            cfg.supervisor(
                "clients",
                Strategy::OneForOne,
                Intensity {
                    max_restarts: u32::MAX,
                    period: Duration::from_secs(1),
                },
            ),
            Vec::new,
        ),
    ]
}

/// `agents`: one `agent:<id>` per configured agent.
pub fn agents_spec(cfg: &TreeConfig) -> ChildSpec {
    supervisor_spec(
        cfg.supervisor("agents", Strategy::OneForOne, cfg.agents_intensity),
        {
            let agents = cfg.agents.clone();
            move || agents.iter().cloned().map(AgentActor::spec).collect()
        },
    )
}

/// `channels`: one `telegram:<account>` / `discord:<account>` per configured account.
pub fn channels_spec(cfg: &TreeConfig) -> ChildSpec {
    crate::channels::supervisor_spec(
        cfg.supervisor("channels", Strategy::OneForOne, CHANNELS_INTENSITY),
        cfg.channels.clone(),
    )
}

/// `mcp`: one `mcp:<name>` per enabled MCP tool server (restarted with backoff like a
/// channel: a server that keeps dying never escalates to the root).
pub fn mcp_spec(cfg: &TreeConfig) -> ChildSpec {
    crate::mcp::supervisor_spec(
        cfg.supervisor("mcp", Strategy::OneForOne, CHANNELS_INTENSITY),
        cfg.mcp.clone(),
    )
}

/// Starts the root supervisor on the current arbiter; `escalation` fires if it gives up.
pub fn start_root(cfg: &TreeConfig, escalation: oneshot::Sender<String>) -> Addr<SupervisorActor> {
    crate::mcp::directory().set_servers(cfg.mcp.clone());
    let config = cfg.supervisor("root", Strategy::OneForOne, cfg.root_intensity);
    SupervisorActor::root(config, root_specs(cfg), escalation).start()
}

/// A child that is itself a supervisor; `children` builds its specs at every (re)start.
/// It runs on its own arbiter, so a hung one is killed with its thread, and its drop
/// kills its children: nothing of the old subtree outlives it.
fn supervisor_spec(
    config: SupervisorConfig,
    children: impl Fn() -> Vec<ChildSpec> + Send + 'static,
) -> ChildSpec {
    let id = config.id.to_string();
    ChildSpec::new(id, "supervisor", move |link: ChildLink| {
        let arbiter = crate::supervisor::child_arbiter(&link.id.to_string());
        let config = config.clone();
        let specs = children();
        let addr = SupervisorActor::start_in_arbiter(&arbiter.handle(), move |_| {
            SupervisorActor::new(config, specs, Some(link))
        });
        Ok(ChildHandle::of_supervisor(addr).on_arbiter(arbiter.handle()))
    })
    .shutdown(Duration::from_secs(15))
}
