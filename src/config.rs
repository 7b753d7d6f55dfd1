//! Configuration: embedded defaults < file < `TROUPE__SECTION__KEY` env < flags, validated
//! into an immutable typed [`Config`]; every error names its key.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

mod channels;
pub mod cron;
pub mod hooks;
pub mod mcp;
pub mod transcription;

use config::{Environment, File, FileFormat};
use serde::Deserialize;
use troupe_actors::gateway::{AgentSummary, Secret};
use troupe_actors::supervisor::Intensity;

mod strict;

/// The most HTTP worker threads `gateway.workers` may ask for.
pub const MAX_WORKERS: usize = 256;
/// The most later ports `gateway.port_fallback` may try.
pub const MAX_PORT_FALLBACK: u16 = 100;

/// The defaults compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`gateway.port`), or the file for a parse error.
    pub key: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.why)
    }
}

/// Every error found, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn error(key: &str, why: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        key: key.into(),
        why: why.into(),
    }])
}

/// Flag values that override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--port`.
    pub port: Option<u16>,
    /// `--bind`.
    pub bind: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--verbose`.
    pub verbose: bool,
}

/// How clients must authenticate.
#[derive(Debug, Clone)]
pub enum AuthSetting {
    /// A token; `None` means: use (or generate) the state dir's token file.
    Token(Option<Secret>),
    /// A password.
    Password(Secret),
    /// No authentication.
    None,
}

/// The validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Port to bind (0 = ephemeral).
    pub port: u16,
    /// Later ports tried when `port` is in use (0: none, exit 98).
    pub port_fallback: u16,
    /// Address to bind.
    pub bind: IpAddr,
    /// HTTP worker threads.
    pub workers: usize,
    /// Graceful drain limit.
    pub shutdown_timeout: Duration,
    /// Authentication.
    pub auth: AuthSetting,
    /// Failed authentication attempts allowed per address per minute.
    pub auth_max_failures: u32,
    /// Extra `Host` names (lower case, no port) that name this gateway, besides loopback
    /// names and addresses and the bound address (DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// Open connections (HTTP and WebSocket) at once; beyond, 503 + `Retry-After`.
    pub max_connections: usize,
    /// Open connections from one client address at once; beyond, 503 + `Retry-After`.
    pub max_connections_per_ip: usize,
    /// Time allowed to receive a request's headers, and then its body.
    pub request_timeout: Duration,
    /// Largest inbound WS frame.
    pub max_payload: usize,
    /// Outbound bytes a WS client may leave unsent.
    pub max_buffered_bytes: usize,
    /// `tick` interval.
    pub tick_interval: Duration,
    /// Time allowed for `connect`.
    pub handshake_timeout: Duration,
    /// Root restart intensity.
    pub root_intensity: Intensity,
    /// `agents` restart intensity.
    pub agents_intensity: Intensity,
    /// Liveness ping interval.
    pub ping_interval: Duration,
    /// Hang detection threshold.
    pub hang_timeout: Duration,
    /// Fault injection switch.
    pub fault_injection: bool,
    /// Concurrent runs across sessions.
    pub max_concurrent_runs: usize,
    /// Waiting turns per session.
    pub lane_capacity: usize,
    /// Waiting turns across all sessions.
    pub max_waiting_turns: usize,
    /// Sessions one WS connection may follow at once.
    pub max_subscriptions_per_connection: usize,
    /// Idempotency window.
    pub dedupe_window: Duration,
    /// Delay between echo deltas.
    pub echo_delta_delay: Duration,
    /// Transcript messages given as context.
    pub history_limit: usize,
    /// OpenAI-compatible endpoint.
    pub openai: EndpointConfig,
    /// Anthropic endpoint.
    pub anthropic: EndpointConfig,
    /// Timeouts and retries of HTTP providers.
    pub http_policy: troupe_actors::provider::HttpPolicy,
    /// (model, USD per million input tokens, per million output tokens).
    pub pricing: Vec<(String, f64, f64)>,
    /// Agents defined in the config (disk agents are added at start).
    pub agent_defs: Vec<AgentDef>,
    /// Tracing filter.
    pub log_level: String,
    /// How often the log file is rotated.
    pub log_rotation: crate::logging::LogRotation,
    /// Rotated log files kept (the current one included).
    pub log_max_files: usize,
    /// SQLite file (relative to the state dir unless absolute).
    pub store_path: PathBuf,
    /// Finished runs and their transcripts older than this are deleted (`None`: kept).
    pub retention: Option<Duration>,
    /// Agents.
    pub agents: Vec<AgentSummary>,
    /// Chat-platform accounts (`[[channels.telegram]]`, `[[channels.discord]]`).
    pub channels: troupe_actors::channels::ChannelAccounts,
    /// Cron jobs from config (`[[cron.jobs]]`).
    pub cron_jobs: Vec<troupe_actors::store::cron::CronJob>,
    /// Webhooks (`[hooks]`).
    pub hooks: hooks::HooksConfig,
    /// `gateway.reload = "hybrid"`: the config file is watched and changes apply live.
    pub reload_hybrid: bool,
    /// Largest file `POST /api/upload` accepts, bytes (`uploads.max_bytes`); also the
    /// largest file a channel downloads from a user.
    pub upload_max_bytes: u64,
    /// Time allowed to download one file a user sent on a channel
    /// (`uploads.download_timeout_secs`).
    pub download_timeout: Duration,
    /// MCP tool servers (`[[mcp]]`).
    pub mcp: Vec<troupe_actors::mcp::McpServerSettings>,
    /// Audio transcription (`[transcription]`; `None`: off).
    pub transcription: Option<transcription::TranscriptionConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    gateway: RawGateway,
    sessions: RawSessions,
    providers: RawProviders,
    supervisor: RawSupervisor,
    debug: RawDebug,
    logging: RawLogging,
    store: RawStore,
    agents: Vec<RawAgent>,
    #[serde(default)]
    pricing: Vec<RawPrice>,
    #[serde(default)]
    channels: channels::RawChannels,
    #[serde(default)]
    cron: cron::RawCron,
    #[serde(default)]
    hooks: hooks::RawHooks,
    #[serde(default)]
    uploads: RawUploads,
    #[serde(default)]
    mcp: Vec<mcp::RawMcp>,
    #[serde(default)]
    transcription: transcription::RawTranscription,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUploads {
    max_bytes: u64,
    #[serde(default = "default_download_timeout_secs")]
    download_timeout_secs: u64,
}

fn default_download_timeout_secs() -> u64 {
    60
}

impl Default for RawUploads {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            download_timeout_secs: default_download_timeout_secs(),
        }
    }
}

/// The largest `uploads.max_bytes`: 1 GiB.
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    model: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    port: u16,
    port_fallback: u16,
    bind: String,
    workers: usize,
    shutdown_timeout_ms: u64,
    allowed_hosts: Vec<String>,
    max_connections: usize,
    max_connections_per_ip: usize,
    request_timeout_ms: u64,
    reload: String,
    auth: RawAuth,
    ws: RawWs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mode: String,
    max_failures_per_minute: u32,
    token: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWs {
    max_payload: usize,
    max_buffered_bytes: usize,
    tick_interval_ms: u64,
    handshake_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    max_restarts: u32,
    period_secs: u64,
    ping_interval_ms: u64,
    hang_timeout_ms: u64,
    agents: RawIntensity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntensity {
    max_restarts: u32,
    period_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    max_concurrent_runs: usize,
    lane_capacity: usize,
    max_waiting_turns: usize,
    max_subscriptions_per_connection: usize,
    dedupe_window_secs: u64,
    history_limit: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviders {
    echo: RawEcho,
    openai: RawEndpoint,
    anthropic: RawEndpoint,
    http: RawHttp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    base_url: String,
    api_key_env: String,
    api_key_file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    connect_timeout_ms: u64,
    first_byte_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_retries: u32,
    retry_backoff_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEcho {
    delta_delay_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebug {
    fault_injection: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    level: String,
    rotation: String,
    max_files: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    retention_days: u64,
}

/// An agent as written in config or `agents/<id>/agent.toml`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// Agent id (the directory name for agents on disk).
    #[serde(default)]
    pub id: String,
    /// echo | openai | anthropic.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Output token limit.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Enabled built-in tools.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Model calls per turn.
    #[serde(default)]
    pub max_iterations: Option<u32>,
    /// Inline system prompt (persona.md wins when present).
    #[serde(default)]
    pub persona: Option<String>,
    /// Periodic heartbeat turns (off unless set).
    #[serde(default)]
    pub heartbeat: Option<cron::HeartbeatDef>,
}

type RawAgent = AgentDef;

/// Where a provider lives and how its key is found.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Base URL.
    pub base_url: String,
    /// Environment variable holding the key.
    pub api_key_env: String,
    /// File holding the key (empty = none).
    pub api_key_file: String,
}

/// Where configuration comes from; the environment is injected so tests need not mutate
/// the process's own.
pub struct Sources<'a> {
    /// The config file, if any (missing is an error only when given explicitly).
    pub file: Option<(PathBuf, bool)>,
    /// Environment variables.
    pub env: &'a HashMap<String, String>,
    /// Flags.
    pub overrides: &'a Overrides,
}

impl Config {
    /// Loads and validates, collecting every error.
    pub fn load(sources: Sources<'_>) -> Result<Self, ConfigErrors> {
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some((path, required)) = &sources.file {
            if *required && !path.exists() {
                return Err(error(&path.display().to_string(), "config file not found"));
            }
            if path.exists() {
                strict::check_file_syntax(path).map_err(|e| ConfigErrors(vec![e]))?;
            }
            builder = builder.add_source(
                File::from(path.clone())
                    .format(FileFormat::Toml)
                    .required(*required),
            );
        }
        Self::load_layers(builder, sources.env, sources.overrides)
    }

    /// Loads and validates config file text (as [`Config::load`] would the file holding
    /// it), with no process environment or flags: the entry point of the config fuzz
    /// target and property tests.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigErrors> {
        strict::check_text_syntax(text, "config").map_err(|e| ConfigErrors(vec![e]))?;
        let builder = config::Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(text, FileFormat::Toml));
        Self::load_layers(builder, &HashMap::new(), &Overrides::default())
    }

    /// Adds the `TROUPE__*` environment over `builder`'s files, then checks and validates.
    fn load_layers(
        mut builder: config::ConfigBuilder<config::builder::DefaultState>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigErrors> {
        let troupe_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("TROUPE__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("TROUPE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("gateway.allowed_hosts")
                .source(Some(troupe_env)),
        );
        let merged = builder
            .build()
            .map_err(|e| error(&key_of(&e), e.to_string()))?;
        let strict_errors = strict::check(&table(DEFAULT_TOML)?, &merged_table(&merged)?);
        if !strict_errors.is_empty() {
            return Err(ConfigErrors(strict_errors));
        }
        let raw: Raw = merged
            .try_deserialize()
            .map_err(|e| error(&key_of(&e), e.to_string()))?;
        validate(raw, env, overrides)
    }
}

/// The embedded defaults as a table of values.
fn table(toml: &str) -> Result<config::Map<String, config::Value>, ConfigErrors> {
    let built = config::Config::builder()
        .add_source(File::from_str(toml, FileFormat::Toml))
        .build()
        .map_err(|e| error("config", e.to_string()))?;
    merged_table(&built)
}

fn merged_table(
    merged: &config::Config,
) -> Result<config::Map<String, config::Value>, ConfigErrors> {
    merged
        .clone()
        .try_deserialize()
        .map_err(|e| error(&key_of(&e), e.to_string()))
}

fn key_of(err: &config::ConfigError) -> String {
    let text = err.to_string();
    if let Some(start) = text.find("for key `") {
        let rest = &text[start + 9..];
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    if let Some(start) = text.find("unknown field `") {
        let rest = &text[start + 15..];
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    "config".to_string()
}

fn endpoint(raw: &RawEndpoint) -> EndpointConfig {
    EndpointConfig {
        base_url: raw.base_url.clone(),
        api_key_env: raw.api_key_env.clone(),
        api_key_file: raw.api_key_file.clone(),
    }
}

/// `gateway.allowed_hosts` as lower-case host names or addresses (IPv6 without brackets);
/// an entry with a scheme, path, port or whitespace is an error.
fn allowed_hosts(entries: &[String], bad: &mut impl FnMut(&str, String)) -> Vec<String> {
    let mut hosts = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let name = entry.trim().to_ascii_lowercase();
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(&name);
        let is_ip = bare.parse::<IpAddr>().is_ok();
        let valid = !bare.is_empty()
            && (is_ip
                || bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if valid {
            hosts.push(bare.to_string());
        } else {
            bad(
                &format!("gateway.allowed_hosts[{i}]"),
                format!(
                    "{entry:?} must be a host name or IP address, without scheme, port or path"
                ),
            );
        }
    }
    hosts
}

fn validate(
    raw: Raw,
    env: &HashMap<String, String>,
    flags: &Overrides,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut bad = |key: &str, why: String| {
        errors.push(ConfigError {
            key: key.into(),
            why,
        })
    };

    let port = match (flags.port, env.get("TROUPE_GATEWAY_PORT")) {
        (Some(p), _) => p,
        (None, Some(v)) => v.parse().unwrap_or_else(|_| {
            bad(
                "TROUPE_GATEWAY_PORT",
                format!("{v:?} is not a port number (0-65535)"),
            );
            0
        }),
        (None, None) => raw.gateway.port,
    };
    let bind_text = flags.bind.clone().unwrap_or(raw.gateway.bind);
    let bind = match bind_text.as_str() {
        "loopback" | "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.parse().unwrap_or_else(|_| {
            bad(
                "gateway.bind",
                format!("{other:?} is neither \"loopback\" nor an IP address"),
            );
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }),
    };
    let token = flags
        .token
        .clone()
        .or_else(|| env.get("TROUPE_GATEWAY_TOKEN").cloned())
        .or(raw.gateway.auth.token)
        .filter(|t| !t.is_empty());
    let auth = match raw.gateway.auth.mode.as_str() {
        "token" => AuthSetting::Token(token.map(Secret)),
        "password" => match raw.gateway.auth.password.filter(|p| !p.is_empty()) {
            Some(p) => AuthSetting::Password(Secret(p)),
            None => {
                bad(
                    "gateway.auth.password",
                    "required when gateway.auth.mode = \"password\"".into(),
                );
                AuthSetting::None
            }
        },
        "none" => AuthSetting::None,
        other => {
            bad(
                "gateway.auth.mode",
                format!("{other:?} is not one of token, password, none"),
            );
            AuthSetting::None
        }
    };
    if let AuthSetting::Token(Some(t)) = &auth
        && t.0.len() < 16
    {
        bad(
            "gateway.auth.token",
            "must be at least 16 characters".into(),
        );
    }
    if raw.gateway.port_fallback > MAX_PORT_FALLBACK {
        bad(
            "gateway.port_fallback",
            format!(
                "{} is too many ports to try; at most {MAX_PORT_FALLBACK}",
                raw.gateway.port_fallback
            ),
        );
    }
    let allowed_hosts = allowed_hosts(&raw.gateway.allowed_hosts, &mut bad);
    for (key, n) in [
        ("gateway.max_connections", raw.gateway.max_connections),
        (
            "gateway.max_connections_per_ip",
            raw.gateway.max_connections_per_ip,
        ),
    ] {
        if n == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    if raw.gateway.request_timeout_ms == 0 {
        bad(
            "gateway.request_timeout_ms",
            "must be greater than 0".into(),
        );
    }
    let ws = &raw.gateway.ws;
    if ws.max_payload < 1024 {
        bad(
            "gateway.ws.max_payload",
            "must be at least 1024 bytes".into(),
        );
    }
    if ws.max_buffered_bytes < ws.max_payload {
        bad(
            "gateway.ws.max_buffered_bytes",
            "must be at least gateway.ws.max_payload".into(),
        );
    }
    for (key, ms) in [
        ("gateway.ws.tick_interval_ms", ws.tick_interval_ms),
        ("gateway.ws.handshake_timeout_ms", ws.handshake_timeout_ms),
        (
            "supervisor.ping_interval_ms",
            raw.supervisor.ping_interval_ms,
        ),
        ("supervisor.hang_timeout_ms", raw.supervisor.hang_timeout_ms),
    ] {
        if ms == 0 {
            bad(key, "must be greater than 0".into());
        }
    }
    if raw.supervisor.hang_timeout_ms < raw.supervisor.ping_interval_ms {
        bad(
            "supervisor.hang_timeout_ms",
            "must be at least supervisor.ping_interval_ms".into(),
        );
    }
    if raw.supervisor.period_secs == 0 {
        bad("supervisor.period_secs", "must be greater than 0".into());
    }
    if raw.supervisor.agents.period_secs == 0 {
        bad(
            "supervisor.agents.period_secs",
            "must be greater than 0".into(),
        );
    }
    let mut agents = Vec::new();
    for (i, agent) in raw.agents.iter().enumerate() {
        let valid_id = !agent.id.is_empty()
            && agent
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            bad(
                &format!("agents[{i}].id"),
                format!("{:?} must be non-empty letters, digits, - or _", agent.id),
            );
        }
        if agents.iter().any(|a: &AgentSummary| a.id == agent.id) {
            bad(
                &format!("agents[{i}].id"),
                format!("duplicate agent id {:?}", agent.id),
            );
        }
        for e in crate::agents::check_def(agent) {
            bad(&format!("agents[{i}].{}", e.key), e.why);
        }
        agents.push(AgentSummary {
            id: agent.id.clone(),
            provider: agent.provider.clone(),
            model: agent.model.clone(),
            real_model: agent.provider != "echo",
        });
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.logging.level) {
        bad(
            "logging.level",
            format!("{:?} is not a valid filter: {e}", raw.logging.level),
        );
    }
    let workers = match raw.gateway.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    if workers > MAX_WORKERS {
        bad(
            "gateway.workers",
            format!("{workers} is too many: at most {MAX_WORKERS} (0 = one per core)"),
        );
    }
    let log_rotation =
        crate::logging::LogRotation::parse(&raw.logging.rotation).unwrap_or_else(|why| {
            bad("logging.rotation", why);
            crate::logging::LogRotation::Never
        });
    if raw.logging.max_files == 0 {
        bad("logging.max_files", "must be at least 1".into());
    }
    if raw.sessions.lane_capacity == 0 {
        bad("sessions.lane_capacity", "must be at least 1".into());
    }
    if raw.sessions.max_waiting_turns == 0 {
        bad("sessions.max_waiting_turns", "must be at least 1".into());
    }
    if raw.sessions.max_subscriptions_per_connection == 0 {
        bad(
            "sessions.max_subscriptions_per_connection",
            "must be at least 1".into(),
        );
    }
    if raw.store.retention_days > 36_500 {
        bad(
            "store.retention_days",
            "must be at most 36500 (100 years); 0 keeps everything".into(),
        );
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let max_concurrent_runs = match raw.sessions.max_concurrent_runs {
        0 => (4 * cores).max(8),
        n => n,
    };
    let channels = channels::accounts(raw.channels, env, &mut bad);
    let agent_ids: Vec<String> = raw.agents.iter().map(|a| a.id.clone()).collect();
    let cron_jobs = cron::jobs(raw.cron, &agent_ids, &mut bad);
    let hooks = hooks::hooks(raw.hooks, &mut bad);
    let mcp = mcp::servers(raw.mcp, env, &mut bad);
    let reload_hybrid = match raw.gateway.reload.as_str() {
        "hybrid" => true,
        "off" => false,
        other => {
            bad(
                "gateway.reload",
                format!("{other:?} is not one of hybrid, off"),
            );
            false
        }
    };
    let openai = endpoint(&raw.providers.openai);
    let transcription = transcription::settings(raw.transcription, &openai, &mut bad);
    if raw.uploads.download_timeout_secs == 0 {
        bad("uploads.download_timeout_secs", "must be at least 1".into());
    }
    if !(1..=MAX_UPLOAD_BYTES).contains(&raw.uploads.max_bytes) {
        bad(
            "uploads.max_bytes",
            format!("must be between 1 and {MAX_UPLOAD_BYTES} (1 GiB)"),
        );
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let log_level = if flags.verbose {
        "debug".to_string()
    } else {
        raw.logging.level
    };
    Ok(Config {
        port,
        port_fallback: raw.gateway.port_fallback,
        bind,
        workers,
        shutdown_timeout: Duration::from_millis(raw.gateway.shutdown_timeout_ms),
        auth,
        auth_max_failures: raw.gateway.auth.max_failures_per_minute.max(1),
        allowed_hosts,
        max_connections: raw.gateway.max_connections,
        max_connections_per_ip: raw.gateway.max_connections_per_ip,
        request_timeout: Duration::from_millis(raw.gateway.request_timeout_ms),
        max_payload: ws.max_payload,
        max_buffered_bytes: ws.max_buffered_bytes,
        tick_interval: Duration::from_millis(ws.tick_interval_ms),
        handshake_timeout: Duration::from_millis(ws.handshake_timeout_ms),
        root_intensity: Intensity {
            max_restarts: raw.supervisor.max_restarts,
            period: Duration::from_secs(raw.supervisor.period_secs),
        },
        agents_intensity: Intensity {
            max_restarts: raw.supervisor.agents.max_restarts,
            period: Duration::from_secs(raw.supervisor.agents.period_secs),
        },
        ping_interval: Duration::from_millis(raw.supervisor.ping_interval_ms),
        hang_timeout: Duration::from_millis(raw.supervisor.hang_timeout_ms),
        fault_injection: raw.debug.fault_injection,
        max_concurrent_runs,
        lane_capacity: raw.sessions.lane_capacity,
        max_waiting_turns: raw.sessions.max_waiting_turns,
        max_subscriptions_per_connection: raw.sessions.max_subscriptions_per_connection,
        dedupe_window: Duration::from_secs(raw.sessions.dedupe_window_secs),
        echo_delta_delay: Duration::from_millis(raw.providers.echo.delta_delay_ms),
        history_limit: raw.sessions.history_limit,
        openai,
        anthropic: endpoint(&raw.providers.anthropic),
        http_policy: troupe_actors::provider::HttpPolicy {
            connect: Duration::from_millis(raw.providers.http.connect_timeout_ms),
            first_byte: Duration::from_millis(raw.providers.http.first_byte_timeout_ms),
            idle: Duration::from_millis(raw.providers.http.idle_timeout_ms),
            max_retries: raw.providers.http.max_retries,
            backoff: Duration::from_millis(raw.providers.http.retry_backoff_ms),
        },
        pricing: raw
            .pricing
            .iter()
            .map(|p| (p.model.clone(), p.input_per_mtok, p.output_per_mtok))
            .collect(),
        agent_defs: raw.agents.clone(),
        log_level,
        log_rotation,
        log_max_files: raw.logging.max_files,
        store_path: raw.store.path,
        retention: (raw.store.retention_days > 0)
            .then(|| Duration::from_secs(raw.store.retention_days.min(36_500) * 86_400)),
        agents,
        channels,
        cron_jobs,
        hooks,
        reload_hybrid,
        upload_max_bytes: raw.uploads.max_bytes,
        download_timeout: Duration::from_secs(raw.uploads.download_timeout_secs),
        mcp,
        transcription,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)], overrides: Overrides) -> Result<Config, ConfigErrors> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(Sources {
            file: None,
            env: &env,
            overrides: &overrides,
        })
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let cfg = load(&[], Overrides::default()).expect("defaults load");
        assert_eq!(cfg.port, 18789);
        assert!(cfg.bind.is_loopback());
        assert!(matches!(cfg.auth, AuthSetting::Token(None)));
        assert_eq!(cfg.agents.len(), 1);
        assert!(!cfg.fault_injection);
    }

    #[test]
    fn port_precedence_is_flag_then_env_then_file() {
        let env = [
            ("TROUPE_GATEWAY_PORT", "2000"),
            ("TROUPE__GATEWAY__PORT", "3000"),
        ];
        assert_eq!(
            load(&env[1..], Overrides::default()).expect("ok").port,
            3000
        );
        assert_eq!(load(&env, Overrides::default()).expect("ok").port, 2000);
        let flags = Overrides {
            port: Some(1000),
            ..Overrides::default()
        };
        assert_eq!(load(&env, flags).expect("ok").port, 1000);
    }

    #[test]
    fn nested_env_keys_set_values() {
        let cfg = load(
            &[
                ("TROUPE__DEBUG__FAULT_INJECTION", "true"),
                ("TROUPE__SUPERVISOR__AGENTS__MAX_RESTARTS", "77"),
            ],
            Overrides::default(),
        )
        .expect("ok");
        assert!(cfg.fault_injection);
        assert_eq!(cfg.agents_intensity.max_restarts, 77);
    }

    #[test]
    fn every_error_names_its_key() {
        let err = load(
            &[
                ("TROUPE__GATEWAY__BIND", "nowhere"),
                ("TROUPE__GATEWAY__AUTH__MODE", "magic"),
            ],
            Overrides::default(),
        )
        .expect_err("invalid");
        let keys: Vec<_> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["gateway.bind", "gateway.auth.mode"]);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err =
            load(&[("TROUPE__GATEWAY__PORT", "many")], Overrides::default()).expect_err("invalid");
        assert_eq!(err.0[0].key, "gateway.port", "{err}");
    }

    #[test]
    fn config_agents_may_use_real_providers_and_bad_fields_name_the_key() {
        let env: HashMap<String, String> = HashMap::new();
        let dir = std::env::temp_dir().join(format!("troupe-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            "[[agents]]\nid = \"a\"\nprovider = \"anthropic\"\nmodel = \"claude\"\n",
        )
        .expect("write");
        let ok = Config::load(Sources {
            file: Some((file.clone(), true)),
            env: &env,
            overrides: &Overrides::default(),
        })
        .expect("valid");
        assert_eq!(ok.agent_defs[0].provider, "anthropic");
        std::fs::write(
            &file,
            "[[agents]]\nid = \"a\"\nprovider = \"openai\"\nmodel = \"m\"\ntools = [\"rm_rf\"]\n",
        )
        .expect("write");
        let err = Config::load(Sources {
            file: Some((file, true)),
            env: &env,
            overrides: &Overrides::default(),
        })
        .expect_err("invalid");
        assert_eq!(err.0[0].key, "agents[0].tools", "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn edge_limits_load_and_bad_values_name_their_key() {
        let cfg = load(
            &[
                ("TROUPE__GATEWAY__ALLOWED_HOSTS", "Troupe.Example.com,[::2]"),
                ("TROUPE__GATEWAY__MAX_CONNECTIONS", "7"),
            ],
            Overrides::default(),
        )
        .expect("ok");
        assert_eq!(cfg.allowed_hosts, ["troupe.example.com", "::2"]);
        assert_eq!(cfg.max_connections, 7);
        let err = load(
            &[
                ("TROUPE__GATEWAY__ALLOWED_HOSTS", "https://evil.example/"),
                ("TROUPE__GATEWAY__MAX_CONNECTIONS_PER_IP", "0"),
            ],
            Overrides::default(),
        )
        .expect_err("invalid");
        let keys: Vec<_> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["gateway.allowed_hosts[0]", "gateway.max_connections_per_ip"]
        );
    }

    #[test]
    fn short_token_is_rejected() {
        let err =
            load(&[("TROUPE_GATEWAY_TOKEN", "short")], Overrides::default()).expect_err("invalid");
        assert_eq!(err.0[0].key, "gateway.auth.token");
    }

    #[test]
    fn booleans_are_strict_but_env_true_and_false_work() {
        for bad in ["yes", "on", "1", "Y"] {
            let err = load(
                &[("TROUPE__DEBUG__FAULT_INJECTION", bad)],
                Overrides::default(),
            )
            .expect_err(bad);
            assert_eq!(err.0[0].key, "debug.fault_injection", "{bad}: {err}");
            assert!(err.0[0].why.contains("true or false"), "{err}");
        }
        for (text, on) in [("true", true), ("FALSE", false)] {
            let cfg = load(
                &[("TROUPE__DEBUG__FAULT_INJECTION", text)],
                Overrides::default(),
            )
            .expect(text);
            assert_eq!(cfg.fault_injection, on);
        }
    }

    #[test]
    fn numbers_are_strict_and_bounded() {
        for (key, env, value) in [
            ("gateway.workers", "TROUPE__GATEWAY__WORKERS", "1.5"),
            ("gateway.port", "TROUPE__GATEWAY__PORT", "true"),
            (
                "sessions.lane_capacity",
                "TROUPE__SESSIONS__LANE_CAPACITY",
                "2.7",
            ),
            (
                "gateway.shutdown_timeout_ms",
                "TROUPE__GATEWAY__SHUTDOWN_TIMEOUT_MS",
                "99999999999999999999",
            ),
            (
                "gateway.shutdown_timeout_ms",
                "TROUPE__GATEWAY__SHUTDOWN_TIMEOUT_MS",
                "9223372036854775807",
            ),
            ("gateway.workers", "TROUPE__GATEWAY__WORKERS", "100000"),
            ("logging.rotation", "TROUPE__LOGGING__ROTATION", "weekly"),
            ("logging.max_files", "TROUPE__LOGGING__MAX_FILES", "0"),
        ] {
            let err = load(&[(env, value)], Overrides::default()).expect_err(value);
            assert_eq!(err.0[0].key, key, "{env}={value}: {err}");
        }
    }

    #[test]
    fn a_string_for_a_boolean_in_the_file_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[debug]\nfault_injection = \"yes\"\n").expect("write");
        let err = Config::load(Sources {
            file: Some((file, true)),
            env: &HashMap::new(),
            overrides: &Overrides::default(),
        })
        .expect_err("invalid");
        assert_eq!(err.0[0].key, "debug.fault_injection", "{err}");
    }
}
