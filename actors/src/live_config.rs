//! The parts of the gateway's settings that a config hot reload changes while clients are
//! connected: the agent list every route reads, the reload's own status (shown in
//! `status`), and the service behind `config.get` / `config.patch` (implemented by the
//! binary, which owns config parsing).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use serde_json::Value;

use crate::gateway::AgentSummary;

/// The configured agents, swapped as a whole by a reload. A reader takes the list as it is
/// now ([`LiveAgents::list`], a cheap `Arc` clone) and keeps it as long as it likes; the
/// previous list is freed when its last reader drops it.
pub struct LiveAgents(RwLock<Arc<[AgentSummary]>>);

impl LiveAgents {
    /// The list at start.
    pub fn new(agents: Vec<AgentSummary>) -> Self {
        Self(RwLock::new(agents.into()))
    }

    /// Installs a new list (readers see it from their next read).
    pub fn set(&self, agents: Vec<AgentSummary>) {
        let list: Arc<[AgentSummary]> = agents.into();
        match self.0.write() {
            Ok(mut current) => *current = list,
            Err(poisoned) => *poisoned.into_inner() = list,
        }
    }

    /// The list now.
    pub fn list(&self) -> Arc<[AgentSummary]> {
        match self.0.read() {
            Ok(list) => list.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl fmt::Debug for LiveAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list().iter()).finish()
    }
}

impl Serialize for LiveAgents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.list().serialize(s)
    }
}

/// The state of config hot reload, in `status` as `reload`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// `hybrid` (the file is watched and changes apply live) or `off`.
    pub mode: String,
    /// The config file watched (`None`: none).
    pub file: Option<String>,
    /// Hash of the config file content now applied.
    pub hash: String,
    /// When a change was last applied (ms since the epoch).
    pub last_applied_at: Option<u64>,
    /// What the last applied change restarted or changed (`agent:x`, `hooks`, ...).
    pub last_applied: Vec<String>,
    /// Changed keys that take effect only after a restart of the process.
    pub pending_restart: Vec<String>,
    /// Why the last edit was refused (the running config was kept); `None` once one applies.
    pub last_error: Option<String>,
}

/// The live settings a reload updates, shared by every route.
#[derive(Debug, Default)]
pub struct ReloadState {
    status: RwLock<ReloadStatus>,
    service: OnceLock<Box<dyn ConfigService>>,
}

impl ReloadState {
    /// A copy of the current status.
    pub fn status(&self) -> ReloadStatus {
        match self.status.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the status.
    pub fn update(&self, change: impl FnOnce(&mut ReloadStatus)) {
        match self.status.write() {
            Ok(mut s) => change(&mut s),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    /// Installs the service behind `config.get` / `config.patch` (once).
    pub fn set_service(&self, service: Box<dyn ConfigService>) {
        let _ = self.service.set(service);
    }

    /// The service, once installed.
    pub fn service(&self) -> Option<&dyn ConfigService> {
        self.service.get().map(|s| s.as_ref())
    }
}

/// Why a config call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigCallError {
    /// Bad params or an invalid config: `code` goes in `details.code`.
    #[error("{message}")]
    Invalid {
        /// `INVALID_CONFIG`, `STALE_BASE_HASH`, `INVALID_PARAMS`, ...
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The config could not be read or written, or reload is busy.
    #[error("{0}")]
    Unavailable(String),
}

/// A boxed future of a config call.
pub type ConfigFuture = Pin<Box<dyn Future<Output = Result<Value, ConfigCallError>> + Send>>;

/// `config.get` and `config.patch`, implemented where config is parsed.
pub trait ConfigService: Send + Sync + fmt::Debug {
    /// `{raw, config, hash}` with secrets redacted.
    fn get(&self) -> ConfigFuture;
    /// Writes `raw` if the file still hashes to `base_hash`, then reloads.
    fn patch(&self, raw: String, base_hash: String) -> ConfigFuture;
}
