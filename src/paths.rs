//! The state directory (`~/.troupe`, or `TROUPE_HOME`) and the files in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every path the gateway and CLI use.
#[derive(Debug, Clone)]
pub struct StatePaths {
    /// The state dir itself.
    pub home: PathBuf,
}

impl StatePaths {
    /// `TROUPE_HOME`, else `$HOME/.troupe`.
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        let home = match env.get("TROUPE_HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => PathBuf::from(env.get("HOME").cloned().unwrap_or_else(|| ".".into()))
                .join(".troupe"),
        };
        Self { home }
    }
    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.toml")
    }
    /// `run/`.
    pub fn run_dir(&self) -> PathBuf {
        self.home.join("run")
    }
    /// `run/troupe.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("troupe.pid")
    }
    /// `run/troupe.port`.
    pub fn port_file(&self) -> PathBuf {
        self.run_dir().join("troupe.port")
    }
    /// `token`.
    pub fn token_file(&self) -> PathBuf {
        self.home.join("token")
    }
    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    /// `logs/troupe.log`.
    pub fn log_file(&self) -> PathBuf {
        self.logs_dir().join("troupe.log")
    }
    /// A path from config, relative to the state dir unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.home.join(path)
        }
    }
    /// `run/troupe.host`: the address local clients reach the running gateway on.
    pub fn host_file(&self) -> PathBuf {
        self.run_dir().join("troupe.host")
    }
    /// The host a running gateway wrote (127.0.0.1 unless it is bound to one other address).
    pub fn read_host(&self) -> String {
        std::fs::read_to_string(self.host_file())
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into())
    }
    /// The port a running gateway wrote, if any.
    pub fn read_port(&self) -> Option<u16> {
        std::fs::read_to_string(self.port_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    /// The PID a gateway wrote, if any.
    pub fn read_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    /// The token in the token file, if any.
    pub fn read_token(&self) -> Option<String> {
        let t = std::fs::read_to_string(self.token_file()).ok()?;
        let t = t.trim().to_string();
        (!t.is_empty()).then_some(t)
    }
}
