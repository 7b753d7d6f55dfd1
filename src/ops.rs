//! Operator commands: `gateway install | uninstall`, `logs`, `doctor`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit;
use crate::paths::StatePaths;
use crate::pidfile::PidFile;

fn unit_path(env: &HashMap<String, String>) -> PathBuf {
    let home = PathBuf::from(env.get("HOME").cloned().unwrap_or_else(|| ".".into()));
    if cfg!(target_os = "macos") {
        home.join("Library/LaunchAgents/ai.troupe.gateway.plist")
    } else {
        let base = env
            .get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        base.join("systemd/user/troupe.service")
    }
}

/// The service unit text that runs `gateway run` in the foreground.
pub fn unit_text(exe: &Path, paths: &StatePaths) -> String {
    if cfg!(target_os = "macos") {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict>\n  <key>Label</key><string>ai.troupe.gateway</string>\n  <key>ProgramArguments</key><array><string>{}</string><string>gateway</string><string>run</string></array>\n  <key>EnvironmentVariables</key><dict><key>TROUPE_HOME</key><string>{}</string></dict>\n  <key>RunAtLoad</key><true/>\n  <key>KeepAlive</key><true/>\n</dict></plist>\n",
            exe.display(),
            paths.home.display()
        )
    } else {
        format!(
            "[Unit]\nDescription=Troupe agent gateway\nAfter=network-online.target\n\n[Service]\nType=simple\nExecStart={} gateway run\nEnvironment=TROUPE_HOME={}\nRestart=on-failure\nRestartSec=2\nTimeoutStopSec=20\nKillSignal=SIGTERM\n\n[Install]\nWantedBy=default.target\n",
            exe.display(),
            paths.home.display()
        )
    }
}

/// Writes the service unit and tells how to enable it.
pub fn install(paths: &StatePaths, env: &HashMap<String, String>) -> i32 {
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("troupe: cannot find my own executable");
        return exit::FAILURE;
    };
    let path = unit_path(env);
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("troupe: cannot create {}: {e}", dir.display());
        return exit::FAILURE;
    }
    if let Err(e) = std::fs::write(&path, unit_text(&exe, paths)) {
        eprintln!("troupe: cannot write {}: {e}", path.display());
        return exit::FAILURE;
    }
    println!("wrote {}", path.display());
    if cfg!(target_os = "macos") {
        println!("enable with: launchctl load -w {}", path.display());
    } else {
        println!(
            "enable with: systemctl --user daemon-reload && systemctl --user enable --now troupe"
        );
    }
    exit::OK
}

/// Removes the service unit.
pub fn uninstall(env: &HashMap<String, String>) -> i32 {
    let path = unit_path(env);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            println!("removed {}", path.display());
            if !cfg!(target_os = "macos") {
                println!("then run: systemctl --user daemon-reload");
            }
            exit::OK
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no service unit at {}", path.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("troupe: cannot remove {}: {e}", path.display());
            exit::FAILURE
        }
    }
}

/// Prints the last `lines` of the log, then follows it if asked.
pub fn logs(paths: &StatePaths, lines: usize, follow: bool) -> i32 {
    let path = paths.log_file();
    let Ok(mut file) = std::fs::File::open(&path) else {
        eprintln!(
            "troupe: no log at {} yet (has the gateway run on this home?)",
            path.display()
        );
        return exit::FAILURE;
    };
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        eprintln!("troupe: cannot read {}", path.display());
        return exit::FAILURE;
    }
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("{line}");
    }
    if !follow {
        return exit::OK;
    }
    let mut pos = text.len() as u64;
    let mut current = std::fs::canonicalize(&path).ok();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        // A rotated log: `troupe.log` now links to a new file; follow it from its start.
        let now = std::fs::canonicalize(&path).ok();
        if now != current
            && let Ok(f) = std::fs::File::open(&path)
        {
            file = f;
            pos = 0;
            current = now;
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0;
        }
        if len > pos && file.seek(SeekFrom::Start(pos)).is_ok() {
            let mut more = String::new();
            if file.read_to_string(&mut more).is_ok() {
                print!("{more}");
                pos += more.len() as u64;
            }
        }
    }
}

/// Checks everything a gateway needs and prints one line per check; non-zero if any fails.
pub fn doctor(
    paths: &StatePaths,
    config_file: Option<&Path>,
    env: &HashMap<String, String>,
) -> i32 {
    let mut failed = 0;
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    };
    let config = crate::server::load_config(paths, config_file, env, &Default::default());
    match &config {
        Ok(_) => check(true, "config is valid".into()),
        Err(errors) => {
            for e in &errors.0 {
                check(false, format!("config: {e}"));
            }
        }
    }
    let writable = crate::server::ensure_state_dir(paths).is_ok();
    check(
        writable,
        format!("state dir {} is writable", paths.home.display()),
    );
    if let Ok(meta) = std::fs::symlink_metadata(paths.token_file()) {
        use std::os::unix::fs::PermissionsExt;
        let path = paths.token_file();
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() {
            check(
                false,
                format!(
                    "token file {} is not a regular file (a symlink or directory): remove it",
                    path.display()
                ),
            );
        } else if mode & 0o077 != 0 {
            check(
                false,
                format!(
                    "token file {} is readable by others (mode {mode:o}): run `chmod 600 {}` (the gateway also fixes it at start) and consider rotating the token",
                    path.display(),
                    path.display()
                ),
            );
        } else {
            check(
                true,
                format!("token file {} is private (mode {mode:o})", path.display()),
            );
        }
    }
    let running = PidFile::is_locked(&paths.pid_file());
    if paths.pid_file().exists() && !running {
        check(
            false,
            format!(
                "stale PID file {} (no gateway holds it; `troupe gateway start` replaces it)",
                paths.pid_file().display()
            ),
        );
    }
    if let Ok(config) = &config {
        if running {
            let port = paths.read_port().unwrap_or(config.port);
            let ready =
                crate::daemon::http_get_status(&paths.read_host(), port, "/readyz") == Some(200);
            check(ready, format!("gateway running on port {port} and ready"));
        } else {
            let free = std::net::TcpListener::bind((config.bind, config.port)).is_ok();
            check(
                free,
                format!(
                    "port {} on {} is free for the gateway",
                    config.port, config.bind
                ),
            );
        }
        for (ok, what) in crate::channel_checks::checks(config, paths, env, running) {
            check(ok, what);
        }
        match crate::agents::build(config, paths, env) {
            Err(errors) => {
                for e in &errors.0 {
                    check(false, format!("agent config: {e}"));
                }
            }
            Ok(agents) => {
                for agent in agents.iter().map(|a| &a.summary) {
                    let note = match crate::agents::key_status(&agent.provider, config, env) {
                        Some(key) => format!(" ({key})"),
                        None => {
                            " — the built-in echo provider, not a real model: configure a provider"
                                .to_string()
                        }
                    };
                    println!(
                        "info agent {} uses {}/{}{note}",
                        agent.id, agent.provider, agent.model
                    );
                }
            }
        }
        let db = paths.resolve(&config.store_path);
        let dir_ok = db
            .parent()
            .is_none_or(|d| d.as_os_str().is_empty() || d.is_dir());
        if !dir_ok || db.is_dir() {
            check(
                false,
                format!(
                    "store.path {} cannot be opened: {}",
                    db.display(),
                    if db.is_dir() {
                        "it is a directory"
                    } else {
                        "its directory does not exist"
                    }
                ),
            );
        } else {
            println!(
                "info store {}{}",
                db.display(),
                if db.exists() {
                    ""
                } else {
                    " (created at first start)"
                }
            );
        }
    }
    println!("info no channels configured");
    if failed == 0 { exit::OK } else { exit::FAILURE }
}
