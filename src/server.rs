//! `troupe gateway run`: load config, take the PID lock, bind, start the tree and the HTTP
//! server, then drain gracefully on SIGTERM/SIGINT or exit non-zero when the root gives up.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::auth_limit::AuthLimiter;
use crate::gateway::{AuthPolicy, EdgeSettings, Gateway};
use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};
use tokio::sync::oneshot;
use troupe_actors::agent::AgentSettings;
use troupe_actors::gateway::{GatewaySettings, Secret};
use troupe_actors::messages::{AgentId, Shutdown};
use troupe_actors::scheduler::SchedulerSettings;
use troupe_actors::session_queue::{DrainRuns, QueueSettings, SessionQueueActor};
use troupe_actors::supervisor::install_panic_hook;
use troupe_actors::tree::{TreeConfig, start_root};

use crate::cli::RunFlags;
use crate::config::{AuthSetting, Config, Overrides, Sources};
use crate::exit;
use crate::http::connections::{AcceptedConnection, ConnectionLimits};
use crate::http::edge::EdgePolicy;
use crate::paths::StatePaths;
use crate::pidfile::{PidFile, PidFileError};

/// Loads the config for a command: file from `--config`/`TROUPE_CONFIG`, else the state
/// dir's `config.toml` if present.
pub fn load_config(
    paths: &StatePaths,
    config_file: Option<&std::path::Path>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Config, crate::config::ConfigErrors> {
    let file = match config_file {
        Some(p) => Some((p.to_path_buf(), true)),
        None => Some((paths.config_file(), false)),
    };
    Config::load(Sources {
        file,
        env,
        overrides,
    })
}

/// Creates the state dir layout (0700 home).
pub fn ensure_state_dir(paths: &StatePaths) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&paths.home)?;
    std::fs::set_permissions(&paths.home, std::fs::Permissions::from_mode(0o700))?;
    std::fs::create_dir_all(paths.run_dir())?;
    std::fs::create_dir_all(paths.logs_dir())?;
    Ok(())
}

/// The token from config/env/flag, else the token file, generated (0600) on first start.
/// A token file readable by others is made private again, and said so in `notices`.
pub fn resolve_auth(
    config: &Config,
    paths: &StatePaths,
    notices: &mut Vec<String>,
) -> Result<AuthPolicy, String> {
    Ok(match &config.auth {
        AuthSetting::Token(Some(t)) => AuthPolicy::Token(t.clone()),
        AuthSetting::Token(None) => AuthPolicy::Token(Secret(token_file(paths, notices)?)),
        AuthSetting::Password(p) => AuthPolicy::Password(p.clone()),
        AuthSetting::None => AuthPolicy::None,
    })
}

fn token_file(paths: &StatePaths, notices: &mut Vec<String>) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = paths.token_file();
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.is_file() {
            return Err(format!(
                "token file {} is not a regular file (a symlink or directory); remove it and a new token is generated",
                path.display()
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    format!(
                        "token file {} is readable by others (mode {mode:o}) and cannot be made private: {e}",
                        path.display()
                    )
                },
            )?;
            notices.push(format!(
                "token file {} was readable by others (mode {mode:o}); made it private (0600). Consider rotating the token",
                path.display()
            ));
        }
        if let Some(token) = paths.read_token() {
            if token.len() < 16 {
                return Err(format!(
                    "token file {} holds a token shorter than 16 characters; remove it and a new one is generated",
                    path.display()
                ));
            }
            return Ok(token);
        }
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{token}")
    };
    write().map_err(|e| format!("cannot write token file {}: {e}", path.display()))?;
    Ok(token)
}

/// Checks, before anything starts, that the store file can be opened for writing (and
/// its directory exists), so a bad `store.path` is one clear error instead of a
/// restart loop of the store and everything that needs it.
fn check_store_path(path: &std::path::Path) -> Result<(), String> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent
        && !dir.is_dir()
    {
        return Err(format!(
            "cannot open store.path {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| format!("cannot open store.path {}: {e}", path.display()))
}

/// Checks that every channel account and cron job names a configured agent; each problem
/// names its key.
pub fn check_references(config: &Config, agents: &[AgentSettings]) -> Result<(), Vec<String>> {
    let known = |id: &str| agents.iter().any(|a| a.summary.id == id);
    let mut problems = Vec::new();
    for (i, account) in config.channels.telegram.iter().enumerate() {
        if !known(&account.agent) {
            problems.push(format!(
                "channels.telegram[{i}].agent: no agent {:?} is configured",
                account.agent
            ));
        }
    }
    for (i, account) in config.channels.discord.iter().enumerate() {
        if !known(&account.agent) {
            problems.push(format!(
                "channels.discord[{i}].agent: no agent {:?} is configured",
                account.agent
            ));
        }
    }
    for (i, job) in config.cron_jobs.iter().enumerate() {
        if !known(&job.agent_id) {
            problems.push(format!(
                "cron.jobs[{i}].agent: no agent {:?} is configured",
                job.agent_id.as_str()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What the supervision tree is built from (at start, and again on each config reload).
pub fn tree_config(config: &Config, agents: &[AgentSettings], paths: &StatePaths) -> TreeConfig {
    TreeConfig {
        store_path: paths.resolve(&config.store_path),
        store_retention: config.retention,
        agents: agents.to_vec(),
        root_intensity: config.root_intensity,
        agents_intensity: config.agents_intensity,
        ping_interval: config.ping_interval,
        hang_timeout: config.hang_timeout,
        channels: troupe_actors::channels::ChannelAccounts {
            files: troupe_actors::channels::inbound_files::FileIntake {
                state_dir: Some(paths.home.clone()),
                max_bytes: config.upload_max_bytes,
                timeout: config.download_timeout,
            },
            ..config.channels.clone()
        },
        mcp: config.mcp.clone(),
        scheduler: SchedulerSettings {
            jobs: config.cron_jobs.clone(),
            heartbeats: crate::agents::all_defs(config, paths)
                .map(|defs| crate::agents::heartbeats(&defs))
                .unwrap_or_default(),
            agents: agents
                .iter()
                .map(|a| AgentId::from(a.summary.id.as_str()))
                .collect(),
        },
        queue: QueueSettings {
            max_concurrent: config.max_concurrent_runs,
            lane_capacity: config.lane_capacity,
            max_waiting: config.max_waiting_turns,
            dedupe_window: config.dedupe_window,
            history_limit: config.history_limit,
            max_subscriptions: config.max_subscriptions_per_connection,
            stateless_agents: agents
                .iter()
                .filter(|a| !a.summary.real_model)
                .map(|a| a.summary.id.clone())
                .collect(),
        },
    }
}

/// Runs the gateway in the foreground; returns the process exit code.
pub fn run(
    paths: &StatePaths,
    config_file: Option<&std::path::Path>,
    flags: &RunFlags,
    env: &HashMap<String, String>,
) -> i32 {
    let started = Instant::now();
    // A socket handed over by the previous image (POST /api/restart) or by systemd.
    let inherited = crate::reexec::inherited_listener();
    // Hold SIGTERM/SIGINT from the first instant: one that arrives while starting stays
    // pending and becomes a graceful stop once the handlers are in place (in `serve`).
    let _ = termination_signals().thread_block();
    if let Err(e) = ensure_state_dir(paths) {
        eprintln!(
            "troupe: cannot create state dir {}: {e}",
            paths.home.display()
        );
        return exit::STATE_DIR;
    }
    let overrides = Overrides {
        port: flags.port,
        bind: flags.bind.clone(),
        token: flags.token.clone(),
        verbose: flags.verbose,
    };
    let config = match load_config(paths, config_file, env, &overrides) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("troupe: invalid config: {e}");
            }
            return exit::CONFIG;
        }
    };
    let agents = match crate::agents::build(&config, paths, env) {
        Ok(a) => a,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("troupe: invalid config: {e}");
            }
            return exit::CONFIG;
        }
    };
    if let Err(problems) = check_references(&config, &agents) {
        for problem in problems {
            eprintln!("troupe: invalid config: {problem}");
        }
        return exit::CONFIG;
    }
    if !config.bind.is_loopback() && matches!(config.auth, AuthSetting::None) {
        eprintln!(
            "troupe: refusing to bind {} with gateway.auth.mode = \"none\": anyone on the network could drive your agents; enable token auth or bind loopback",
            config.bind
        );
        return exit::INSECURE_BIND;
    }
    if flags.force && PidFile::is_locked(&paths.pid_file()) {
        eprintln!("troupe: --force: stopping the gateway already running on this home");
        crate::daemon::stop(paths, config.shutdown_timeout);
    }
    // The PID lock comes first: a second instance refused with 75 touches nothing else.
    let pid_file = match PidFile::acquire(&paths.pid_file()) {
        Ok(p) => p,
        Err(e @ PidFileError::AlreadyRunning { .. }) => {
            eprintln!("troupe: {e}");
            return exit::ALREADY_RUNNING;
        }
        Err(e) => {
            eprintln!("troupe: {e}");
            return exit::STATE_DIR;
        }
    };
    if let Err(why) = check_store_path(&paths.resolve(&config.store_path)) {
        eprintln!("troupe: {why}");
        return exit::STATE_DIR;
    }
    let mut notices = Vec::new();
    let auth = match resolve_auth(&config, paths, &mut notices) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("troupe: {why}");
            return exit::STATE_DIR;
        }
    };
    let reused = crate::reexec::reuse(inherited, config.bind, config.port);
    let bound = match reused {
        Some(listener) => Ok(crate::bind::Bound {
            listener,
            fell_back_from: None,
        }),
        None => crate::bind::bind_with_fallback(config.bind, config.port, config.port_fallback),
    };
    let listener = match bound {
        Ok(bound) => {
            if let Some(wanted) = bound.fell_back_from {
                let got = bound.listener.local_addr().map(|a| a.port()).unwrap_or(0);
                notices.push(format!(
                    "port {wanted} was in use; bound port {got} instead (gateway.port_fallback = {})",
                    config.port_fallback
                ));
            }
            bound.listener
        }
        Err(e @ crate::bind::BindError::InUse { .. }) => {
            eprintln!("troupe: {e}");
            return exit::PORT_IN_USE;
        }
        Err(e) => {
            eprintln!("troupe: {e}");
            return exit::FAILURE;
        }
    };
    let file_log = crate::logging::FileLog {
        dir: &paths.logs_dir(),
        rotation: config.log_rotation,
        max_files: config.log_max_files,
    };
    let _log_guard = match crate::logging::init(&config.log_level, file_log) {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("troupe: {why}");
            return exit::STATE_DIR;
        }
    };
    install_panic_hook();
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("troupe: cannot read bound address: {e}");
            return exit::FAILURE;
        }
    };
    tracing::info!(
        port = addr.port(),
        pid = std::process::id(),
        "troupe listening on http://{addr} (ws://{addr}/ws)"
    );
    for notice in &notices {
        tracing::warn!("{notice}");
    }
    if config.fault_injection {
        let warning = "debug.fault_injection is ON: any admin client can crash parts of this gateway (supervisor.crash, POST /api/supervisor/crash); never enable it in production";
        eprintln!("troupe: WARNING: {warning}");
        tracing::warn!("{warning}");
    }
    if pid_file.replaced_stale {
        tracing::warn!(path = %paths.pid_file().display(), "replaced a stale PID file");
    }
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    if let Err(e) = std::fs::write(paths.host_file(), format!("{host}\n")) {
        tracing::error!(error = %e, "cannot write host file");
    }
    if let Err(e) = std::fs::write(paths.port_file(), format!("{}\n", addr.port())) {
        tracing::error!(error = %e, "cannot write port file");
    }
    let source = crate::reload::ReloadSource {
        file: config_file
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| paths.config_file()),
        required: config_file.is_some(),
        env: env.clone(),
        overrides,
    };
    let restart = Arc::new(crate::http::operator::RestartRequest::default());
    let operator = crate::http::operator::OperatorContext {
        paths: paths.clone(),
        config_file: source.file.clone(),
        required: source.required,
        env: env.clone(),
        overrides: source.overrides.clone(),
        restart: restart.clone(),
    };
    // Kept to hand the socket to the next image when a restart is asked for.
    let handover = listener.try_clone().ok();
    let code = match actix_rt::System::new().block_on(serve(
        config, agents, auth, listener, started, source, operator,
    )) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            eprintln!("troupe: the gateway failed: {e}");
            exit::FAILURE
        }
    };
    let reexec = restart.asked() && code == exit::OK && !crate::http::restart::supervised(env);
    // The port and host files stay for a re-exec: the new image serves the same socket.
    if !reexec {
        let _ = std::fs::remove_file(paths.port_file());
        let _ = std::fs::remove_file(paths.host_file());
    }
    drop(pid_file);
    if reexec {
        let Some(listener) = handover else {
            tracing::error!("restart asked, but the listening socket could not be kept; exiting");
            eprintln!("troupe: restart failed: the listening socket could not be kept");
            let _ = std::fs::remove_file(paths.port_file());
            let _ = std::fs::remove_file(paths.host_file());
            return exit::FAILURE;
        };
        tracing::info!("re-executing for the restart asked over REST");
        drop(_log_guard);
        let why = crate::reexec::exec_self(listener);
        eprintln!("troupe: restart failed: {why}");
        let _ = std::fs::remove_file(paths.port_file());
        let _ = std::fs::remove_file(paths.host_file());
        return exit::FAILURE;
    }
    code
}

async fn serve(
    config: Config,
    agents: Vec<AgentSettings>,
    auth: AuthPolicy,
    listener: TcpListener,
    started: Instant,
    source: crate::reload::ReloadSource,
    operator: crate::http::operator::OperatorContext,
) -> std::io::Result<i32> {
    let paths = operator.paths.clone();
    let restart = operator.restart.clone();
    let operator = web::Data::new(operator);
    let signal = shutdown_signal()?;
    let (escalation_tx, escalation_rx) = oneshot::channel();
    let tree = tree_config(&config, &agents, &paths);
    let root = start_root(&tree, escalation_tx);
    let settings = GatewaySettings {
        version: env!("CARGO_PKG_VERSION"),
        fault_injection: config.fault_injection,
        started,
        agents: troupe_actors::live_config::LiveAgents::new(
            agents.iter().map(|a| a.summary.clone()).collect(),
        ),
        reload: Default::default(),
        stopping: Default::default(),
    };
    let edge = EdgeSettings {
        auth,
        max_payload: config.max_payload,
        max_buffered_bytes: config.max_buffered_bytes,
        tick_interval: config.tick_interval,
        handshake_timeout: config.handshake_timeout,
        max_subscriptions: config.max_subscriptions_per_connection,
        auth_limiter: AuthLimiter::new(config.auth_max_failures, Duration::from_secs(60)),
        log_file: Some(paths.log_file()),
        state_dir: paths.home.clone(),
    };
    let gateway = Gateway {
        core: troupe_actors::gateway::Gateway {
            settings: Arc::new(settings),
            root: root.clone(),
        },
        edge: Arc::new(edge),
    };
    let data = web::Data::new(gateway);
    let gateway_data = data.clone();
    let edge = web::Data::new(EdgePolicy {
        allowed_hosts: config.allowed_hosts.clone(),
        request_timeout: config.request_timeout,
    });
    let hooks = web::Data::new(crate::config::hooks::LiveHooks::new(config.hooks.clone()));
    crate::reload::start(crate::reload::ReloadSetup {
        source,
        paths: paths.clone(),
        config: config.clone(),
        agents: agents.clone(),
        gateway: gateway_data.get_ref().core.clone(),
        hooks: hooks.clone(),
    })?;
    let uploads = web::Data::new(crate::http::upload::UploadSettings {
        home: paths.home.clone(),
        max_bytes: config.upload_max_bytes,
    });
    let vaults = web::Data::new(crate::http::vault::VaultDirs::new(
        agents
            .iter()
            .map(|a| (a.summary.id.clone(), a.memory_dir.clone())),
    ));
    let limits = ConnectionLimits::new(config.max_connections, config.max_connections_per_ip);
    let make_app = move || {
        App::new()
            .app_data(data.clone())
            .app_data(edge.clone())
            .app_data(hooks.clone())
            .app_data(vaults.clone())
            .app_data(uploads.clone())
            .app_data(operator.clone())
            .app_data(web::PayloadConfig::new(crate::http::BODY_LIMIT))
            .wrap(actix_web::middleware::from_fn(crate::http::edge::guard))
            .configure(crate::http::routes)
    };
    let request_timeout = config.request_timeout;
    let addr = listener.local_addr()?;
    // actix-server and actix-http's HttpService, as actix-web's HttpServer builds them, plus
    // an upgrade service: a WebSocket handshake is answered by the same App, then the socket
    // leaves the HTTP/1 dispatcher and its fixed 8 KiB buffers (`gateway::ws::upgrade`).
    let builder = actix_server::Server::build();
    let graceful = builder.graceful_shutdown_signal();
    let server = builder
        .workers(config.workers)
        // A worker stops accepting past `max_connections`: admitted connections are at most
        // that in all, so the rest is room to answer refusals with 503.
        .max_concurrent_connections(config.max_connections.saturating_mul(2))
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
        .listen("troupe-http", listener, move || {
            let graceful = graceful.clone();
            let limits = limits.clone();
            let app = make_app()
                .into_factory()
                .map_err(|err| err.error_response());
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                // Headers must arrive within the request timeout (the body's own deadline
                // is in the edge middleware).
                .client_request_timeout(request_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .on_connect_ext(move |tcp: &actix_web::rt::net::TcpStream, ext| {
                    // Small frames (a turn's deltas, a response after a request) must not
                    // wait on Nagle's algorithm meeting the client's delayed ACK.
                    let _ = tcp.set_nodelay(true);
                    let admission = match tcp.peer_addr() {
                        Ok(peer) => limits.admit(peer.ip()).map(Arc::new),
                        Err(e) => Err(format!("cannot read the client address: {e}")),
                    };
                    ext.insert(AcceptedConnection {
                        local: tcp.local_addr().ok(),
                        admission,
                    });
                })
                .upgrade(crate::gateway::ws::upgrade::factory(
                    make_app().into_factory(),
                ))
                .finish(map_config(app, move |_| AppConfig::default()))
                .tcp()
        })?
        .run();
    let handle = server.handle();
    let server_task = actix_rt::spawn(server);
    tracing::info!(
        ready_in_ms = started.elapsed().as_millis() as u64,
        "gateway started"
    );

    let escalated = tokio::select! {
        signal = signal => {
            tracing::info!(signal, "shutting down");
            None
        }
        why = escalation_rx => why.ok(),
        () = restart.wait() => {
            tracing::info!("restarting: stopping as on SIGTERM first");
            None
        }
    };
    handle.pause().await;
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    if escalated.is_none() {
        gateway_data
            .settings
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drain_runs(&gateway_data, config.shutdown_timeout).await;
    }
    if tokio::time::timeout_at(deadline, root.send(Shutdown))
        .await
        .is_err()
    {
        tracing::warn!("supervision tree did not stop within the shutdown timeout");
    }
    handle.stop(true).await;
    let _ = server_task.await;
    Ok(match escalated {
        Some(why) => {
            tracing::error!(reason = %why, "root supervisor gave up; exiting non-zero");
            eprintln!(
                "troupe: the root supervisor gave up ({why}); exiting {}",
                exit::ESCALATED
            );
            exit::ESCALATED
        }
        None => {
            tracing::info!("stopped cleanly");
            exit::OK
        }
    })
}

/// Lets running turns finish (their finals reach the clients, still connected) within most
/// of the shutdown budget, the rest being the tree's to stop; waiting turns stay queued.
async fn drain_runs(gateway: &Gateway, budget: Duration) {
    let grace = budget.mul_f32(0.6);
    let drain = async {
        let queue = gateway
            .lookup::<SessionQueueActor>("session-queue")
            .await
            .ok()?;
        queue.send(DrainRuns { grace }).await.ok()
    };
    match tokio::time::timeout(budget.mul_f32(0.8), drain).await {
        Ok(Some(report)) => tracing::info!(
            running = report.running,
            aborted = report.aborted,
            queued = report.queued,
            "turns drained"
        ),
        Ok(None) => tracing::warn!("session queue unreachable; no turns drained"),
        Err(_) => tracing::warn!("turns did not drain within the shutdown timeout"),
    }
}

fn termination_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set
}

/// Installs the SIGTERM/SIGINT handlers, then lets the signals in (one held since start is
/// delivered now); the future resolves with the first one.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _ = termination_signals().thread_unblock();
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
