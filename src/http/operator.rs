//! What the operator routes (`/api/agent-info`, `/api/models`, `/api/usage/pricing`,
//! `/api/config` edits, `/api/restart`) need beyond the gateway handle: where the config
//! comes from (to read the config as it is now, as a reload would), and the restart request
//! the server's main loop waits on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use tokio::sync::Notify;
use troupe_actors::agent::AgentSettings;

use super::ApiError;
use crate::config::{Config, Overrides, Sources};
use crate::paths::StatePaths;

/// Where the running config came from, and the restart switch.
pub struct OperatorContext {
    /// The state dir.
    pub paths: StatePaths,
    /// The config file (the state dir's `config.toml` unless `--config` named one).
    pub config_file: PathBuf,
    /// Whether the file must exist.
    pub required: bool,
    /// The environment the config was loaded with.
    pub env: HashMap<String, String>,
    /// The command-line overrides.
    pub overrides: Overrides,
    /// Set, then notified, by `POST /api/restart`.
    pub restart: Arc<RestartRequest>,
}

/// A restart asked for over REST: the server's main loop waits on it like on SIGTERM.
#[derive(Debug, Default)]
pub struct RestartRequest {
    asked: AtomicBool,
    notify: Notify,
}

impl RestartRequest {
    /// Asks for a restart (the first ask counts; later ones are no-ops).
    pub fn ask(&self) -> bool {
        let first = !self.asked.swap(true, Ordering::SeqCst);
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Whether a restart was asked for.
    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }

    /// Resolves once a restart is asked for.
    pub async fn wait(&self) {
        if !self.asked() {
            self.notify.notified().await;
        }
    }
}

impl OperatorContext {
    /// The config and agents as the file says now (loaded and validated as a reload would),
    /// off the actor threads.
    pub async fn load(&self) -> Result<(Config, Vec<AgentSettings>), ApiError> {
        let (file, required) = (self.config_file.clone(), self.required);
        let (env, overrides, paths) =
            (self.env.clone(), self.overrides.clone(), self.paths.clone());
        let work = move || {
            let config = Config::load(Sources {
                file: Some((file, required)),
                env: &env,
                overrides: &overrides,
            })
            .map_err(|e| e.to_string())?;
            let agents = crate::agents::build(&config, &paths, &env).map_err(|e| e.to_string())?;
            Ok::<_, String>((config, agents))
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| unavailable(format!("the config reader failed: {e}")))?
            .map_err(|why| unavailable(format!("cannot read the config: {why}")))
    }
}

/// 503 with a reason.
pub(crate) fn unavailable(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", why)
}

/// 400 with a reason.
pub(crate) fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", why)
}

/// 404 with a reason.
pub(crate) fn not_found(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", why)
}
