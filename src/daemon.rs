//! Background lifecycle: `gateway start | stop | restart | status`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::cli::{ClientFlags, RunFlags};
use crate::client::{Target, call};
use crate::exit;
use crate::paths::StatePaths;
use crate::pidfile::PidFile;

/// How long `start` waits for the gateway to become ready.
const READY_WAIT: Duration = Duration::from_secs(20);

/// Starts `troupe gateway run` in the background and waits until `/readyz` answers 200.
pub fn start(paths: &StatePaths, config_file: Option<&std::path::Path>, flags: &RunFlags) -> i32 {
    if let Err(e) = crate::server::ensure_state_dir(paths) {
        eprintln!(
            "troupe: cannot create state dir {}: {e}",
            paths.home.display()
        );
        return exit::STATE_DIR;
    }
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("troupe: cannot find my own executable");
        return exit::FAILURE;
    };
    let out_path = paths.logs_dir().join("daemon.out");
    let Ok(out) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
    else {
        eprintln!("troupe: cannot open {}", out_path.display());
        return exit::STATE_DIR;
    };
    let offset = out.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(exe);
    cmd.args(["gateway", "run"]);
    if let Some(c) = config_file {
        cmd.arg("--config").arg(c);
    }
    if let Some(p) = flags.port {
        cmd.args(["--port", &p.to_string()]);
    }
    if let Some(b) = &flags.bind {
        cmd.args(["--bind", b]);
    }
    if let Some(t) = &flags.token {
        // Through the environment, not argv: a command line is readable by every local user.
        cmd.env("TROUPE_GATEWAY_TOKEN", t);
    }
    if flags.force {
        cmd.arg("--force");
    }
    if flags.verbose {
        cmd.arg("--verbose");
    }
    use std::os::unix::process::CommandExt;
    cmd.env("TROUPE_HOME", &paths.home)
        .stdin(Stdio::null())
        .process_group(0);
    let (Ok(o1), Ok(o2)) = (out.try_clone(), out.try_clone()) else {
        return exit::FAILURE;
    };
    cmd.stdout(o1).stderr(o2);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("troupe: cannot start the gateway: {e}");
            return exit::FAILURE;
        }
    };
    let deadline = Instant::now() + READY_WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let code = status.code().unwrap_or(exit::FAILURE);
            eprint!("{}", tail_since(&out_path, offset));
            eprintln!(
                "troupe: the gateway exited during start (code {code}); see {}",
                out_path.display()
            );
            return code;
        }
        let ours = paths.read_pid() == Some(child.id() as i32);
        if let (true, Some(port)) = (ours, paths.read_port())
            && http_get_status(&paths.read_host(), port, "/readyz") == Some(200)
        {
            println!(
                "troupe gateway started (pid {}) on http://{}:{port}",
                child.id(),
                paths.read_host()
            );
            return exit::OK;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "troupe: the gateway did not become ready within {READY_WAIT:?}; see {}",
        out_path.display()
    );
    exit::FAILURE
}

fn tail_since(path: &std::path::Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned()
}

/// A minimal HTTP/1.0 GET on loopback, returning the status code.
pub fn http_get_status(host: &str, port: u16, path: &str) -> Option<u16> {
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Stops the gateway of this home: SIGTERM, wait for the drain, SIGKILL past the timeout.
pub fn stop(paths: &StatePaths, drain: Duration) -> i32 {
    let pid_path = paths.pid_file();
    if !PidFile::is_locked(&pid_path) {
        if pid_path.exists() {
            let _ = std::fs::remove_file(&pid_path);
            let _ = std::fs::remove_file(paths.port_file());
            println!("troupe gateway is not running (removed a stale PID file)");
        } else {
            println!("troupe gateway is not running");
        }
        return exit::OK;
    }
    let Some(pid) = paths.read_pid() else {
        eprintln!(
            "troupe: PID file {} is locked but unreadable",
            pid_path.display()
        );
        return exit::FAILURE;
    };
    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
        eprintln!("troupe: cannot signal pid {pid}: {e}");
        return exit::FAILURE;
    }
    let deadline = Instant::now() + drain + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !PidFile::is_locked(&pid_path) {
            println!("troupe gateway stopped (pid {pid})");
            return exit::OK;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("troupe: pid {pid} did not stop within {drain:?}; killing it");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_file(&pid_path);
    let _ = std::fs::remove_file(paths.port_file());
    exit::OK
}

/// Prints pid, uptime, URL and agents (and the tree with `deep`); exit 3 when not running.
pub fn status(
    paths: &StatePaths,
    env: &HashMap<String, String>,
    json_out: bool,
    deep: bool,
    flags: &ClientFlags,
) -> i32 {
    let running = PidFile::is_locked(&paths.pid_file());
    if !running && flags.url.is_none() {
        if json_out {
            println!("{}", json!({ "running": false, "home": paths.home }));
        } else {
            println!(
                "troupe gateway: not running (home {})",
                paths.home.display()
            );
        }
        return exit::NOT_RUNNING;
    }
    let target = Target::resolve(flags, paths, env);
    let Some(runtime) = crate::client::command_runtime() else {
        return exit::FAILURE;
    };
    let params = deep.then(|| json!({ "clients": "all" }));
    let reply = runtime.block_on(call(
        &target,
        "status",
        params,
        false,
        Duration::from_secs(flags.timeout),
    ));
    let mut report = match reply {
        Ok(v) => v,
        Err(e) => {
            eprintln!("troupe: gateway process is running but does not answer: {e}");
            return exit::FAILURE;
        }
    };
    let url = target
        .url
        .replace("ws://", "http://")
        .trim_end_matches("/ws")
        .to_string();
    let channels = channels_summary(&report["tree"]);
    if json_out {
        if let Some(obj) = report.as_object_mut() {
            obj.insert("channels".into(), channels);
            if !deep {
                obj.remove("tree");
            }
        }
        println!(
            "{}",
            json!({ "running": true, "url": url, "status": report })
        );
        return exit::OK;
    }
    println!("troupe gateway: running");
    println!("  pid      {}", report["pid"]);
    println!(
        "  uptime   {}",
        human_ms(report["uptimeMs"].as_u64().unwrap_or(0))
    );
    println!("  url      {url}");
    println!("  ready    {}", report["ready"]);
    for agent in report["agents"].as_array().into_iter().flatten() {
        let note = if agent["realModel"] == false {
            " (built-in echo, not a real model)"
        } else {
            ""
        };
        println!(
            "  agent    {} via {}/{}{note}",
            agent["id"].as_str().unwrap_or("?"),
            agent["provider"].as_str().unwrap_or("?"),
            agent["model"].as_str().unwrap_or("?")
        );
    }
    match channels["accounts"].as_array().filter(|a| !a.is_empty()) {
        None => println!("  channels none configured"),
        Some(accounts) => {
            let list: Vec<String> = accounts
                .iter()
                .map(|a| {
                    format!(
                        "{} {}",
                        a["id"].as_str().unwrap_or("?"),
                        a["state"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            println!("  channels {}: {}", accounts.len(), list.join(", "));
        }
    }
    if deep {
        println!("supervision tree:");
        print_tree(&report["tree"], 1);
    }
    exit::OK
}

/// `{count, accounts: [{id, state, restarts, nextAttemptAt?}]}` from the status tree's
/// `channels` supervisor (none configured: count 0).
fn channels_summary(tree: &Value) -> Value {
    fn find<'a>(node: &'a Value, id: &str) -> Option<&'a Value> {
        if node["id"] == id {
            return Some(node);
        }
        node["children"]
            .as_array()?
            .iter()
            .find_map(|c| find(c, id))
    }
    let accounts: Vec<Value> = find(tree, "channels")
        .and_then(|c| c["children"].as_array())
        .into_iter()
        .flatten()
        .map(|n| {
            let mut a = json!({ "id": n["id"], "state": n["state"], "restarts": n["restarts"] });
            if let Some(next) = n.get("nextAttemptAt") {
                a["nextAttemptAt"] = next.clone();
            }
            a
        })
        .collect();
    json!({ "count": accounts.len(), "accounts": accounts })
}

fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
}

fn print_tree(node: &Value, depth: usize) {
    let exit = match &node["lastExit"] {
        Value::Null => String::new(),
        e => format!(
            "  last exit: {} {}",
            e["reason"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ),
    };
    println!(
        "{}{} [{}] {} restarts={} mailbox={}{exit}",
        "  ".repeat(depth),
        node["id"].as_str().unwrap_or("?"),
        node["kind"].as_str().unwrap_or("?"),
        node["state"].as_str().unwrap_or("?"),
        node["restarts"],
        node["mailbox"]
    );
    for child in node["children"].as_array().into_iter().flatten() {
        print_tree(child, depth + 1);
    }
    if let Some(count) = node["childCount"].as_u64() {
        println!("{}... {count} in all", "  ".repeat(depth + 1));
    }
}
