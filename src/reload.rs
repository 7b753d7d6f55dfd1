//! Config hot reload (`gateway.reload = "hybrid" | "off"`): one task owns the running
//! config and applies every change in turn, whether it comes from the file watch
//! (hybrid), `SIGHUP` or `config.patch`. A change is loaded and validated like at start;
//! an invalid one keeps the running config and says why (log + `status.reload.lastError`).
//! A valid one is diffed against the running file ([`diff`]) and applied by restarting
//! only the children it concerns ([`troupe_actors::tree::reconfigure`]); hooks and the
//! log level change in place; keys that need a new process (port, bind, auth, store, ...)
//! are listed in `status.reload.pendingRestart`, never half-applied. Connected clients
//! are never touched.

pub mod diff;
pub mod files;
pub mod secret_text;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;

use actix_web::web;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use toml::Table;
use troupe_actors::agent::AgentSettings;
use troupe_actors::gateway::Gateway;
use troupe_actors::live_config::{ConfigCallError, ConfigFuture, ConfigService};
use troupe_actors::tree::{ChildChanges, TreeChanges, reconfigure};

use crate::config::hooks::LiveHooks;
use crate::config::{Config, Overrides, Sources};
use crate::paths::StatePaths;
use files::{FileState, redacted};

/// Requests waiting for the reload task before new ones are refused.
const QUEUE: usize = 64;

/// Where the config comes from, as at start.
pub struct ReloadSource {
    /// The config file (the state dir's `config.toml` unless `--config` named one).
    pub file: PathBuf,
    /// Whether the file must exist (it was named explicitly).
    pub required: bool,
    /// The environment the config was loaded with.
    pub env: HashMap<String, String>,
    /// The command-line overrides.
    pub overrides: Overrides,
}

/// What the reload task starts from.
pub struct ReloadSetup {
    /// Where the config comes from.
    pub source: ReloadSource,
    /// The state dir.
    pub paths: StatePaths,
    /// The running config.
    pub config: Config,
    /// The running agents.
    pub agents: Vec<AgentSettings>,
    /// The gateway (tree root and shared settings).
    pub gateway: Gateway,
    /// The webhook settings the HTTP routes read.
    pub hooks: web::Data<LiveHooks>,
}

enum Request {
    Reload(&'static str),
    Get(oneshot::Sender<Result<Value, ConfigCallError>>),
    Patch {
        raw: String,
        base_hash: String,
        reply: oneshot::Sender<Result<Value, ConfigCallError>>,
    },
}

/// The `config.get` / `config.patch` service: a mailbox of the reload task.
#[derive(Debug, Clone)]
struct ReloadHandle(mpsc::Sender<Request>);

impl ReloadHandle {
    fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Value, ConfigCallError>>) -> Request,
    ) -> ConfigFuture {
        let (tx, rx) = oneshot::channel();
        let sent = self.0.try_send(make(tx));
        Box::pin(async move {
            sent.map_err(|_| {
                ConfigCallError::Unavailable("config reload is busy or stopped".into())
            })?;
            rx.await
                .map_err(|_| ConfigCallError::Unavailable("config reload stopped".into()))?
        })
    }
}

impl ConfigService for ReloadHandle {
    fn get(&self) -> ConfigFuture {
        self.ask(Request::Get)
    }
    fn patch(&self, raw: String, base_hash: String) -> ConfigFuture {
        self.ask(|reply| Request::Patch {
            raw,
            base_hash,
            reply,
        })
    }
}

/// A loaded and validated config, ready to apply.
struct Loaded {
    config: Config,
    agents: Vec<AgentSettings>,
    table: Table,
}

/// What one reload did.
struct Outcome {
    hash: String,
    applied: Vec<String>,
    pending_restart: Vec<String>,
}

struct Controller {
    setup: ReloadSetup,
    /// The running file as parsed (what the next change is diffed against).
    raw: Table,
    /// The file the process started with (restart-only keys are diffed against it).
    boot_raw: Table,
    hash: String,
    hybrid: bool,
    watch: Option<watch::FileWatch>,
    changed_tx: mpsc::Sender<()>,
}

/// Starts the reload task on the current (actix) runtime and installs `config.get` /
/// `config.patch`. `SIGHUP` reloads in either mode; the file is watched in `hybrid`.
pub fn start(setup: ReloadSetup) -> std::io::Result<()> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (tx, mut rx) = mpsc::channel::<Request>(QUEUE);
    let (changed_tx, mut changed_rx) = mpsc::channel::<()>(4);
    let state = FileState::read(&setup.source.file);
    let raw = state.table().unwrap_or_default();
    let hybrid = setup.config.reload_hybrid;
    let settings = setup.gateway.settings.clone();
    settings
        .reload
        .set_service(Box::new(ReloadHandle(tx.clone())));
    let mut controller = Controller {
        boot_raw: raw.clone(),
        raw,
        hash: state.hash.clone(),
        hybrid,
        watch: None,
        changed_tx,
        setup,
    };
    controller.set_watch();
    settings.reload.update(|s| {
        s.mode = mode_name(hybrid).into();
        s.file = Some(controller.setup.source.file.display().to_string());
        s.hash = state.hash;
    });
    actix_rt::spawn(async move {
        loop {
            let request = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                Some(()) = changed_rx.recv() => Request::Reload("file change"),
                Some(()) = hangup.recv() => Request::Reload("SIGHUP"),
            };
            controller.handle(request).await;
        }
    });
    Ok(())
}

fn mode_name(hybrid: bool) -> &'static str {
    if hybrid { "hybrid" } else { "off" }
}

impl Controller {
    /// Watches the file in hybrid mode; stops watching otherwise.
    fn set_watch(&mut self) {
        if !self.hybrid {
            self.watch = None;
            return;
        }
        if self.watch.is_some() {
            return;
        }
        match watch::watch(&self.setup.source.file, self.changed_tx.clone()) {
            Ok(w) => self.watch = Some(w),
            Err(why) => {
                tracing::error!(error = %why, "config file not watched; SIGHUP still reloads")
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Reload(source) => {
                let _ = self.reload(source).await;
            }
            Request::Get(reply) => {
                let _ = reply.send(self.get().await);
            }
            Request::Patch {
                raw,
                base_hash,
                reply,
            } => {
                let _ = reply.send(self.patch(raw, base_hash).await);
            }
        }
    }

    /// Reads the file and applies it if its content changed.
    async fn reload(&mut self, source: &'static str) -> Result<Outcome, String> {
        let file = self.setup.source.file.clone();
        let state = blocking(move || Ok(FileState::read(&file))).await?;
        if state.hash == self.hash {
            tracing::debug!(source, "config file unchanged; nothing to reload");
            // Back to the running config (an invalid edit reverted): nothing is wrong now.
            self.setup
                .gateway
                .settings
                .reload
                .update(|s| s.last_error = None);
            return Ok(self.unchanged());
        }
        let loaded = match self
            .load(self.setup.source.file.clone(), self.setup.source.required)
            .await
        {
            Ok(l) => l,
            Err(why) => {
                tracing::error!(source, error = %why, "config change refused; the running config is kept");
                let message = why.clone();
                self.setup
                    .gateway
                    .settings
                    .reload
                    .update(|s| s.last_error = Some(message));
                return Err(why);
            }
        };
        self.apply(loaded, state.hash, source).await
    }

    fn unchanged(&self) -> Outcome {
        let status = self.setup.gateway.settings.reload.status();
        Outcome {
            hash: self.hash.clone(),
            applied: Vec::new(),
            pending_restart: status.pending_restart,
        }
    }

    /// Loads and validates a config file like at start (off the actor threads).
    async fn load(&self, file: PathBuf, required: bool) -> Result<Loaded, String> {
        let env = self.setup.source.env.clone();
        let overrides = self.setup.source.overrides.clone();
        let paths = self.setup.paths.clone();
        blocking(move || {
            let config = Config::load(Sources {
                file: Some((file.clone(), required)),
                env: &env,
                overrides: &overrides,
            })
            .map_err(|e| e.to_string())?;
            let agents = crate::agents::build(&config, &paths, &env).map_err(|e| e.to_string())?;
            crate::server::check_references(&config, &agents)
                .map_err(|p| format!("invalid config: {}", p.join("; ")))?;
            let table = FileState::read(&file)
                .table()
                .map_err(|e| format!("invalid config: {e}"))?;
            Ok(Loaded {
                config,
                agents,
                table,
            })
        })
        .await
    }

    /// Applies a validated config: restarts what changed, swaps hooks and log level.
    async fn apply(
        &mut self,
        loaded: Loaded,
        hash: String,
        source: &'static str,
    ) -> Result<Outcome, String> {
        let d = diff::diff(&self.raw, &loaded.table);
        let changes = tree_changes(
            &d,
            &self.setup.agents,
            &loaded.agents,
            &self.setup.config,
            &loaded.config,
        );
        let mut applied: Vec<String> = changes
            .agents
            .start
            .iter()
            .chain(&changes.agents.remove)
            .chain(&changes.channels.start)
            .chain(&changes.channels.remove)
            .chain(&changes.mcp.start)
            .chain(&changes.mcp.remove)
            .cloned()
            .collect();
        if changes.scheduler {
            applied.push("scheduler".into());
        }
        let settings = self.setup.gateway.settings.clone();
        // The level first, so the restarts below already log at the new one.
        if d.log_level {
            match crate::logging::set_level(&loaded.config.log_level) {
                Ok(()) => applied.push("logging.level".into()),
                Err(why) => tracing::warn!(error = %why, "log level not changed"),
            }
        }
        let tree = crate::server::tree_config(&loaded.config, &loaded.agents, &self.setup.paths);
        if let Err(why) = reconfigure(&self.setup.gateway.root, &tree, &changes).await {
            tracing::error!(source, error = %why, "config change only partly applied");
            let message = why.clone();
            settings.reload.update(|s| s.last_error = Some(message));
            return Err(why);
        }
        let summaries: Vec<_> = loaded.agents.iter().map(|a| a.summary.clone()).collect();
        settings.agents.set(summaries);
        if d.hooks {
            self.setup.hooks.set(loaded.config.hooks.clone());
            applied.push("hooks".into());
        }
        if d.reload_mode {
            self.hybrid = loaded.config.reload_hybrid;
            self.set_watch();
            applied.push("gateway.reload".into());
        }
        let pending_restart = diff::diff(&self.boot_raw, &loaded.table).restart_keys;
        if !pending_restart.is_empty() {
            tracing::warn!(
                keys = %pending_restart.join(", "),
                "config changes that need a restart of the gateway are not applied until then"
            );
        }
        tracing::info!(source, applied = %applied.join(", "), "config reloaded");
        self.raw = loaded.table;
        self.hash = hash.clone();
        self.setup.config = loaded.config;
        self.setup.agents = loaded.agents;
        let now = troupe_actors::now_ms();
        let (hybrid, done, pending) = (self.hybrid, applied.clone(), pending_restart.clone());
        let new_hash = hash.clone();
        settings.reload.update(move |s| {
            s.mode = mode_name(hybrid).into();
            s.hash = new_hash;
            s.last_applied_at = Some(now);
            s.last_applied = done;
            s.pending_restart = pending;
            s.last_error = None;
        });
        troupe_actors::event_bus::publish(
            "config",
            json!({
                "hash": hash, "source": source, "applied": applied,
                "pendingRestart": pending_restart, "ts": now,
            }),
        );
        Ok(Outcome {
            hash,
            applied,
            pending_restart,
        })
    }

    /// `config.get`: the file (secrets redacted) and its hash.
    async fn get(&self) -> Result<Value, ConfigCallError> {
        let file = self.setup.source.file.clone();
        let state = blocking(move || Ok(FileState::read(&file)))
            .await
            .map_err(ConfigCallError::Unavailable)?;
        let mut payload = json!({
            "file": self.setup.source.file.display().to_string(),
            "hash": state.hash,
        });
        match state.table() {
            Ok(table) => {
                let (config, secrets) = redacted(&table);
                payload["config"] = config;
                payload["redacted"] = json!(secrets);
                // The raw text only when it holds no secret, not even in a comment.
                let text = state.text();
                match secret_text::redact_text(&text) {
                    Some(hidden) if secrets.is_empty() && hidden == text => {
                        payload["raw"] = json!(text);
                    }
                    // For an editor: the text, secrets hidden (restored by `config.patch`).
                    Some(hidden) => payload["rawRedacted"] = json!(hidden),
                    None => {}
                }
            }
            Err(why) => {
                payload["config"] = Value::Null;
                payload["parseError"] = json!(why);
            }
        }
        Ok(payload)
    }

    /// `config.patch {raw, baseHash}`: validates `raw`, writes it atomically (temp file +
    /// rename, 0600) if the file still has `base_hash`, then reloads it.
    async fn patch(&mut self, raw: String, base_hash: String) -> Result<Value, ConfigCallError> {
        let file = self.setup.source.file.clone();
        let current = blocking(move || Ok(FileState::read(&file)))
            .await
            .map_err(ConfigCallError::Unavailable)?;
        if current.hash != base_hash {
            return Err(ConfigCallError::Invalid {
                code: "STALE_BASE_HASH",
                message: format!(
                    "baseHash {base_hash:?} is not the config file's current hash {:?}: the file changed since it was read; call config.get and apply the edit again",
                    current.hash
                ),
            });
        }
        // `"<redacted>"` left in the text (from `rawRedacted`) keeps the stored secret.
        let raw =
            match current.table() {
                Ok(table) => secret_text::restore_secrets(&raw, &table, &current.text()).map_err(
                    |message| ConfigCallError::Invalid {
                        code: "INVALID_CONFIG",
                        message: format!("{message}; the config file was not changed"),
                    },
                )?,
                Err(_) => raw,
            };
        let file = self.setup.source.file.clone();
        let temp = blocking(move || files::write_temp(&file, &raw)).await;
        let temp = temp.map_err(ConfigCallError::Unavailable)?;
        if let Err(why) = self.load(temp.clone(), true).await {
            let _ = std::fs::remove_file(&temp);
            return Err(ConfigCallError::Invalid {
                code: "INVALID_CONFIG",
                message: format!("{why}; the config file was not changed"),
            });
        }
        let file = self.setup.source.file.clone();
        blocking(move || {
            std::fs::rename(&temp, &file)
                .map_err(|e| format!("cannot replace {}: {e}", file.display()))
        })
        .await
        .map_err(ConfigCallError::Unavailable)?;
        let outcome =
            self.reload("config.patch")
                .await
                .map_err(|why| ConfigCallError::Invalid {
                    code: "INVALID_CONFIG",
                    message: why,
                })?;
        Ok(json!({
            "ok": true,
            "hash": outcome.hash,
            "applied": outcome.applied,
            "pendingRestart": outcome.pending_restart,
        }))
    }
}

/// The children a diff concerns. Agents are compared by the built lists (agents on disk
/// count too); a changed definition restarts only its agent.
fn tree_changes(
    d: &diff::ConfigDiff,
    old_agents: &[AgentSettings],
    new_agents: &[AgentSettings],
    old: &Config,
    new: &Config,
) -> TreeChanges {
    let ids = |list: &[AgentSettings]| -> Vec<String> {
        list.iter().map(|a| a.summary.id.clone()).collect()
    };
    let (before, after) = (ids(old_agents), ids(new_agents));
    let mut agents = ChildChanges::default();
    for id in &after {
        let touched =
            !before.contains(id) || d.agents.changed.contains(id) || d.agents.added.contains(id);
        if touched {
            agents.start.push(format!("agent:{id}"));
        }
    }
    for id in before.iter().filter(|id| !after.contains(id)) {
        agents.remove.push(format!("agent:{id}"));
    }
    let accounts = |c: &Config| -> Vec<String> {
        c.channels
            .telegram
            .iter()
            .map(|t| format!("telegram:{}", t.account))
            .chain(
                c.channels
                    .discord
                    .iter()
                    .map(|t| format!("discord:{}", t.account)),
            )
            .collect()
    };
    let (before, after) = (accounts(old), accounts(new));
    let mut channels = ChildChanges::default();
    let changed: Vec<String> = d
        .telegram
        .changed
        .iter()
        .chain(&d.telegram.added)
        .map(|a| format!("telegram:{a}"))
        .chain(
            d.discord
                .changed
                .iter()
                .chain(&d.discord.added)
                .map(|a| format!("discord:{a}")),
        )
        .collect();
    for id in &after {
        if !before.contains(id) || changed.contains(id) {
            channels.start.push(id.clone());
        }
    }
    for id in before.iter().filter(|id| !after.contains(id)) {
        channels.remove.push(id.clone());
    }
    let scheduler = d.cron || !agents.is_empty();
    TreeChanges {
        agents,
        channels,
        scheduler,
        mcp: mcp_changes(&old.mcp, &new.mcp),
    }
}

/// The `mcp:<name>` children to (re)start or remove: a server added, changed (enabling or
/// disabling it included) or removed; the others keep running.
fn mcp_changes(
    old: &[troupe_actors::mcp::McpServerSettings],
    new: &[troupe_actors::mcp::McpServerSettings],
) -> ChildChanges {
    let mut out = ChildChanges::default();
    for server in new {
        if !old.contains(server) {
            out.start.push(server.child_id());
        }
    }
    for server in old {
        if !new.iter().any(|s| s.name == server.name) {
            out.remove.push(server.child_id());
        }
    }
    out
}

/// Runs blocking work (file I/O, config parsing) off the actor threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("config reload worker failed: {e}"))?
}
