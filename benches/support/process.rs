//! Server child processes (the Troupe gateway and the bare baseline): start one, time it to
//! ready, read its RSS, and stop it, also on error paths (the [`Drop`] guard).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{BenchResult, bare_ws_server};

/// How long a server gets to become ready.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Which server to run.
#[derive(Clone, Copy)]
pub enum ServerKind {
    /// The Troupe gateway (`troupe gateway run --port 0`), ready when `/readyz` answers 200.
    Gateway,
    /// The bare tokio-tungstenite server, ready when its port accepts TCP connections.
    Bare,
}

/// What to prepare before a server starts, beyond the defaults; empty by default.
#[derive(Default)]
pub struct Setup {
    /// Environment variables added to (or overriding) the defaults.
    pub env: Vec<(String, String)>,
    /// Files to write, as paths relative to the home directory and their contents.
    pub files: Vec<(PathBuf, String)>,
}

/// A running server process with its own temporary directory; stopped when dropped.
pub struct ServerProcess {
    /// Which server this is.
    kind: ServerKind,
    /// The process.
    child: Child,
    /// Held open so the bare server notices when the benchmark goes away.
    _stdin: Option<ChildStdin>,
    /// The port it listens on.
    port: u16,
    /// `TROUPE_HOME` (gateway) or scratch directory (bare).
    home: PathBuf,
    /// Where its stdout and stderr go.
    log_path: PathBuf,
    /// Owns `home` and the log; deleted after the process is stopped.
    _dir: TempDir,
}

impl ServerProcess {
    /// Starts a server in a fresh temporary directory and waits until it is ready. Returns it
    /// with the time from just before exec to the first ready answer.
    pub async fn start(kind: ServerKind) -> BenchResult<(Self, Duration)> {
        Self::start_with(kind, &Setup::default()).await
    }

    /// [`ServerProcess::start`], with `setup`'s files written into the fresh home and its
    /// environment variables added (over the defaults) before exec.
    pub async fn start_with(kind: ServerKind, setup: &Setup) -> BenchResult<(Self, Duration)> {
        let dir = tempfile::Builder::new().prefix("troupe-bench-").tempdir()?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home)?;
        for (relative, contents) in &setup.files {
            let path = home.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)?;
        }
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path)?;
        let (mut command, port_file) = match kind {
            ServerKind::Gateway => gateway_command(&home),
            ServerKind::Bare => bare_command(&home)?,
        };
        command.envs(setup.env.iter().map(|(name, value)| (name, value)));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()?;

        let started = Instant::now();
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let mut server = ServerProcess {
            kind,
            child,
            _stdin: stdin,
            port: 0,
            home,
            log_path,
            _dir: dir,
        };
        let ready_after = server.wait_ready(&port_file, &http, started).await?;
        Ok((server, ready_after))
    }

    /// Polls (every [`POLL_INTERVAL`]) for the port file, then for readiness.
    async fn wait_ready(
        &mut self,
        port_file: &Path,
        http: &reqwest::Client,
        started: Instant,
    ) -> BenchResult<Duration> {
        while started.elapsed() < READY_LIMIT {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.failure(&format!("exited ({status}) before it was ready")));
            }
            if self.port == 0 {
                self.port = read_port(port_file).unwrap_or(0);
            }
            if self.port != 0 && is_ready(self.kind, self.port, http).await {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(self.failure(&format!("not ready within {READY_LIMIT:?}")))
    }

    /// The process id (for `/proc` figures: threads, open fds).
    #[allow(dead_code, reason = "used by soak and conn_memory")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `TROUPE_HOME` (gateway) or the scratch directory (bare).
    #[allow(dead_code, reason = "used by turn_load, not by gateway_load")]
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The operator token: the gateway's generated `$TROUPE_HOME/token`; anything for the bare server.
    pub fn token(&self) -> BenchResult<String> {
        if matches!(self.kind, ServerKind::Bare) {
            return Ok("bare".to_owned());
        }
        let path = self.home.join("token");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("reading {}: {error}", path.display()))?;
        Ok(text.trim().to_owned())
    }

    /// Resident set size (`VmRSS`) in KiB; an error with the log's tail if the process exited.
    pub fn rss_kib(&mut self) -> BenchResult<u64> {
        if let Some(status) = self.child.try_wait()? {
            return Err(self.failure(&format!("exited ({status})")));
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS line in /proc/PID/status".into())
    }

    /// Context switches (voluntary + involuntary) of all the process's threads so far: each
    /// is a thread that went to sleep or was preempted, so their count per turn is the
    /// thread hops (wake-ups) a turn costs.
    #[allow(dead_code, reason = "used by turn_load, not by gateway_load")]
    pub fn context_switches(&mut self) -> BenchResult<u64> {
        if let Some(status) = self.child.try_wait()? {
            return Err(self.failure(&format!("exited ({status})")));
        }
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            // A thread may end between the listing and the read: it then counts nothing.
            let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
                continue;
            };
            total += status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// `RssAnon` and `RssFile` (KiB) from `/proc/PID/status`.
    #[allow(dead_code, reason = "used by turn_load, not by gateway_load")]
    pub fn rss_parts_kib(&mut self) -> BenchResult<(u64, u64)> {
        if let Some(status) = self.child.try_wait()? {
            return Err(self.failure(&format!("exited ({status})")));
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Ok((field("RssAnon:"), field("RssFile:")))
    }

    /// CPU time (user + system) the process has used so far; an error if it exited.
    #[allow(dead_code, reason = "used by turn_load, not by gateway_load")]
    pub fn cpu_time(&mut self) -> BenchResult<Duration> {
        /// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
        const TICKS_PER_SEC: u64 = 100;
        if let Some(status) = self.child.try_wait()? {
            return Err(self.failure(&format!("exited ({status})")));
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces), from `state`: utime is the
        // 12th and stime the 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|field| field.parse::<u64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => Ok(Duration::from_millis(
                (user + system) * 1000 / TICKS_PER_SEC,
            )),
            _ => Err(format!("no utime/stime in /proc/PID/stat: {stat}").into()),
        }
    }

    /// An error naming `what` went wrong, with the tail of the server's log.
    fn failure(&self, what: &str) -> super::BoxError {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("server {what}; last log lines:\n{tail}").into()
    }

    /// SIGTERM, wait up to [`STOP_LIMIT`], then SIGKILL.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The gateway command line and environment, and where it will write its port. The binary
/// is the one cargo built for this profile, or `TROUPE_BENCH_BIN` (a saved build, to
/// compare two versions in the same run conditions).
fn gateway_command(home: &Path) -> (Command, PathBuf) {
    let binary =
        std::env::var_os("TROUPE_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_troupe").into());
    let mut command = Command::new(binary);
    command
        .args(["gateway", "run", "--port", "0"])
        .env("TROUPE_HOME", home)
        .env("TROUPE__DEBUG__FAULT_INJECTION", "true")
        .env("TROUPE__SUPERVISOR__AGENTS__MAX_RESTARTS", "100000")
        .env("TROUPE__LOGGING__LEVEL", "warn")
        // Every load client is 127.0.0.1: lift the per-address and total connection
        // bounds (1024 / 256 by default) above what the benches open.
        .env("TROUPE__GATEWAY__MAX_CONNECTIONS", "20000")
        .env("TROUPE__GATEWAY__MAX_CONNECTIONS_PER_IP", "20000")
        .env_remove("TROUPE_GATEWAY_PORT")
        .env_remove("TROUPE_GATEWAY_TOKEN");
    (command, home.join("run").join("troupe.port"))
}

/// The bare server command line (this bench binary, re-executed), and its port file.
fn bare_command(home: &Path) -> BenchResult<(Command, PathBuf)> {
    let port_file = home.join("bare.port");
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(bare_ws_server::FLAG).arg(&port_file);
    Ok((command, port_file))
}

/// The port in a port file, once it holds one.
fn read_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|port| *port != 0)
}

/// One readiness probe.
async fn is_ready(kind: ServerKind, port: u16, http: &reqwest::Client) -> bool {
    match kind {
        ServerKind::Gateway => http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == reqwest::StatusCode::OK),
        ServerKind::Bare => tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok(),
    }
}
