//! Test support: start the real gateway binary on port 0 in a fresh state dir, talk to it
//! over real sockets, and wait with `eventually` instead of sleeping.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// The troupe binary under test.
pub fn troupe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_troupe")
}

/// Polls `cond` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant of [`eventually`] for tests without a runtime.
pub fn eventually_sync<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Generous bound for anything on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// A gateway process with its own state dir; killed on drop.
pub struct TestGateway {
    pub home: tempfile::TempDir,
    pub child: Child,
    pub port: u16,
    pub token: String,
}

/// Builder for [`TestGateway`].
#[derive(Default)]
pub struct GatewayBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    removed_env: Vec<String>,
}

impl GatewayBuilder {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Leaves a variable the builder sets by default (e.g. `TROUPE__LOGGING__LEVEL`) unset.
    pub fn without_env(mut self, k: &str) -> Self {
        self.removed_env.push(k.into());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }
    /// Fault injection on, quick hang detection.
    pub fn chaos(self) -> Self {
        self.env("TROUPE__DEBUG__FAULT_INJECTION", "true")
            .env("TROUPE__SUPERVISOR__PING_INTERVAL_MS", "100")
            .env("TROUPE__SUPERVISOR__HANG_TIMEOUT_MS", "1000")
    }
    pub fn start(self) -> TestGateway {
        self.start_in(tempfile::tempdir().expect("tempdir"))
    }
    /// Starts in an existing state dir (to restart over the same store).
    pub fn start_in(self, home: tempfile::TempDir) -> TestGateway {
        let _ = std::fs::remove_file(home.path().join("run/troupe.port"));
        let child = self.spawn_in(home.path());
        let port_file = home.path().join("run/troupe.port");
        let port: u16 = eventually_sync(WAIT, "the gateway writes run/troupe.port", || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        let token = std::fs::read_to_string(home.path().join("token"))
            .unwrap_or_default()
            .trim()
            .to_string();
        TestGateway {
            home,
            child,
            port,
            token,
        }
    }
    pub fn spawn_in(&self, home: &Path) -> Child {
        let mut cmd = Command::new(troupe_bin());
        cmd.args(["gateway", "run", "--port", "0"]).args(&self.args);
        cmd.env("TROUPE_HOME", home)
            .env("TROUPE__LOGGING__LEVEL", "info");
        cmd.env_remove("TROUPE_GATEWAY_TOKEN")
            .env_remove("TROUPE_GATEWAY_PORT");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.removed_env {
            cmd.env_remove(k);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn troupe")
    }
}

impl TestGateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    /// The body of `GET path`, as text.
    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(self.http(path))
            .await
            .expect("GET")
            .text()
            .await
            .expect("body")
    }
    pub fn home(&self) -> &Path {
        self.home.path()
    }
    /// A connected, authenticated admin client.
    pub async fn client(&self) -> WsClient {
        let mut c = WsClient::open(&self.ws_url()).await;
        let hello = c.connect(&self.token, &["operator.admin"]).await;
        assert_eq!(hello["ok"], true, "handshake failed: {hello}");
        c
    }
    /// The status tree over HTTP.
    pub async fn tree(&self) -> Value {
        let res = reqwest::Client::new()
            .get(self.http("/api/status"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /api/status");
        res.json::<Value>().await.expect("status JSON")["tree"].clone()
    }
    /// Waits until child `id` runs again after `restarts` restarts; returns its tree node.
    pub async fn child_restarted(&self, id: &str, restarts: u64) -> Value {
        let what = format!("{id} running after {restarts} restart(s)");
        eventually(WAIT, &what, || async {
            let tree = self.tree().await;
            let n = node(&tree, id)?.clone();
            (n["restarts"] == restarts && n["state"] == "running").then_some(n)
        })
        .await
    }
    /// Waits until `/readyz` says ready.
    pub async fn wait_ready(&self) {
        let url = self.http("/readyz");
        eventually(WAIT, "gateway ready", || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await
    }
    /// SIGKILL, then hands back the state dir for a restart.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.home, tempfile::tempdir().expect("tempdir"))
    }
    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit()
    }
    /// Sends SIGTERM without waiting.
    pub fn terminate_nowait(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
    pub fn wait_exit(&mut self) -> ExitStatus {
        eventually_sync(WAIT, "gateway process exits", || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds a node by id in a status tree.
pub fn node<'a>(tree: &'a Value, id: &str) -> Option<&'a Value> {
    if tree["id"] == id {
        return Some(tree);
    }
    tree["children"]
        .as_array()?
        .iter()
        .find_map(|c| node(c, id))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server sent next.
#[derive(Debug)]
pub enum Received {
    Frame(Value),
    Pong(Vec<u8>),
    Closed(Option<CloseFrame>),
}

/// A raw protocol client.
pub struct WsClient {
    ws: Socket,
    next_id: u64,
    /// Events seen while waiting for responses.
    pub events: Vec<Value>,
    /// Responses read while waiting for something else (pipelined requests).
    pub stashed: Vec<Value>,
    /// `server.connId` from `hello-ok`.
    pub conn_id: String,
}

impl WsClient {
    /// Opens the socket and reads `connect.challenge`.
    pub async fn open(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut c = Self {
            ws,
            next_id: 0,
            events: Vec::new(),
            stashed: Vec::new(),
            conn_id: String::new(),
        };
        match c.recv().await {
            Received::Frame(f) => assert_eq!(f["event"], "connect.challenge", "first frame: {f}"),
            other => panic!("expected connect.challenge, got {other:?}"),
        }
        c
    }
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }
    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }
    /// The next frame, pong or close, within [`WAIT`].
    pub async fn recv(&mut self) -> Received {
        let next = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a frame within the wait");
        match next {
            None | Some(Err(_)) => Received::Closed(None),
            Some(Ok(Message::Text(t))) => {
                Received::Frame(serde_json::from_str(&t).expect("JSON frame"))
            }
            Some(Ok(Message::Pong(p))) => Received::Pong(p.to_vec()),
            Some(Ok(Message::Close(f))) => Received::Closed(f),
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
        }
    }
    /// Sends `connect` and returns the response frame.
    pub async fn connect(&mut self, token: &str, scopes: &[&str]) -> Value {
        let params = json!({
            "minProtocol": 3, "maxProtocol": 4,
            "client": { "id": "test", "version": "0", "platform": "linux", "mode": "test", "instanceId": "x" },
            "role": "operator", "scopes": scopes, "auth": { "token": token },
            "caps": [], "commands": [], "permissions": {}, "locale": "en-US", "userAgent": "tests/1",
        });
        let res = self.request("connect", Some(params)).await;
        if let Some(id) = res["payload"]["server"]["connId"].as_str() {
            self.conn_id = id.to_string();
        }
        res
    }
    /// Sends a request and returns its response frame (events are kept in `events`).
    pub async fn request(&mut self, method: &str, params: Option<Value>) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let mut frame = json!({ "type": "req", "id": id, "method": method });
        if let Some(p) = params {
            frame["params"] = p;
        }
        self.send_text(&frame.to_string()).await;
        self.response(&id).await
    }
    /// Waits for the response with this id.
    pub async fn response(&mut self, id: &str) -> Value {
        if let Some(pos) = self.stashed.iter().position(|f| f["id"] == id) {
            return self.stashed.remove(pos);
        }
        loop {
            match self.recv().await {
                Received::Frame(f) if f["type"] == "res" && f["id"] == id => return f,
                Received::Frame(f) if f["type"] == "event" => self.events.push(f),
                Received::Frame(f) if f["type"] == "res" => self.stashed.push(f),
                Received::Frame(f) => panic!("unexpected frame {f}"),
                other => panic!("connection ended waiting for {id}: {other:?}"),
            }
        }
    }
    /// Reads until an event satisfies `pred` (responses in between are an error).
    pub async fn event_where(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        if let Some(pos) = self.events.iter().position(&mut pred) {
            return self.events.remove(pos);
        }
        loop {
            match self.recv().await {
                Received::Frame(f) if f["type"] == "event" => {
                    if pred(&f) {
                        return f;
                    }
                    self.events.push(f);
                }
                Received::Frame(f) if f["type"] == "res" => self.stashed.push(f),
                Received::Frame(f) => panic!("unexpected frame while waiting for an event: {f}"),
                Received::Pong(_) => {}
                Received::Closed(c) => panic!("closed while waiting for an event: {c:?}"),
            }
        }
    }
    /// Waits for the lifecycle `start` event of a run.
    pub async fn run_started(&mut self, run_id: &str) -> Value {
        self.event_where(|e| {
            e["event"] == "agent"
                && e["payload"]["runId"] == run_id
                && e["payload"]["data"]["phase"] == "start"
        })
        .await
    }
    /// Sends a request without waiting; returns its id.
    pub async fn send_request(&mut self, method: &str, params: Value) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let frame = json!({ "type": "req", "id": id, "method": method, "params": params });
        self.send_text(&frame.to_string()).await;
        id
    }
    /// Writes request frames back to back on this connection (one flush, nothing read in
    /// between), the way a pipelining client does; returns their ids in order.
    pub async fn burst(&mut self, frames: &[(&str, Value)]) -> Vec<String> {
        let mut ids = Vec::new();
        for (method, params) in frames {
            self.next_id += 1;
            let id = format!("r{}", self.next_id);
            let frame = json!({ "type": "req", "id": id, "method": method, "params": params });
            self.ws
                .feed(Message::text(frame.to_string()))
                .await
                .expect("feed");
            ids.push(id);
        }
        self.ws.flush().await.expect("flush");
        ids
    }
    /// Collects one response per id, in whatever order they come, skipping responses that
    /// `skip` says are interim (`agent`'s `accepted`); events go to `events`.
    pub async fn responses_to(
        &mut self,
        ids: &[String],
        mut skip: impl FnMut(&Value) -> bool,
    ) -> std::collections::HashMap<String, Value> {
        let mut out = std::collections::HashMap::new();
        for f in std::mem::take(&mut self.stashed) {
            let id = f["id"].as_str().unwrap_or_default().to_string();
            if ids.contains(&id) && !skip(&f) {
                out.insert(id, f);
            } else if !ids.contains(&id) {
                self.stashed.push(f);
            }
        }
        while out.len() < ids.len() {
            match self.recv().await {
                Received::Frame(f) if f["type"] == "res" => {
                    let id = f["id"].as_str().unwrap_or_default().to_string();
                    if ids.contains(&id) && !skip(&f) {
                        out.insert(id, f);
                    } else if !ids.contains(&id) {
                        self.stashed.push(f);
                    }
                }
                Received::Frame(f) if f["type"] == "event" => self.events.push(f),
                Received::Frame(f) => panic!("unexpected frame {f}"),
                Received::Pong(_) => {}
                Received::Closed(c) => panic!(
                    "closed while collecting responses: {c:?}; got {out:?}; stashed {:?}",
                    self.stashed
                ),
            }
        }
        out
    }
    /// Reads until the connection closes; returns the frames before it and the close frame.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<CloseFrame>) {
        let mut frames = Vec::new();
        loop {
            match self.recv().await {
                Received::Frame(f) => frames.push(f),
                Received::Pong(_) => {}
                Received::Closed(c) => return (frames, c),
            }
        }
    }
}

/// Runs the troupe CLI with this state dir; returns (exit code, stdout, stderr).
pub fn cli(home: &Path, args: &[&str]) -> (i32, String, String) {
    cli_env(home, args, &[])
}

/// [`cli`] with extra environment variables.
pub fn cli_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(troupe_bin());
    cmd.args(args)
        .env("TROUPE_HOME", home)
        .env_remove("TROUPE_GATEWAY_TOKEN")
        .env_remove("TROUPE_GATEWAY_PORT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run troupe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh state dir path (not created).
pub fn fresh_home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    (dir, home)
}

/// Parses a `/metrics` text with a Prometheus text parser (`prometheus-parse`). That parser
/// skips what it cannot read, so every line is checked first: a `# HELP`, `# TYPE` or
/// `# UNIT` comment, `# EOF` as the last line, or a sample whose name, labels (quoted,
/// escaped values) and value are well formed. Panics naming the first malformed line.
pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    use prometheus_parse::LineInfo;
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "an empty /metrics");
    for (i, line) in lines.iter().enumerate() {
        let at = format!("line {} of /metrics: {line:?}", i + 1);
        if *line == "# EOF" {
            assert_eq!(i + 1, lines.len(), "# EOF before the end: {at}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            assert!(rest.split(' ').count() == 2, "{at}");
            continue;
        }
        match LineInfo::parse(line) {
            LineInfo::Doc { metric_name, .. } => {
                assert!(metric_name_ok(metric_name), "bad metric name: {at}");
            }
            LineInfo::Type { .. } => {}
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                timestamp,
            } => {
                assert!(metric_name_ok(metric_name), "bad metric name: {at}");
                assert!(timestamp.is_none(), "no timestamps are written: {at}");
                assert!(
                    value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                    "bad value: {at}"
                );
                let rebuilt = match labels {
                    Some(labels) => {
                        assert!(labels_ok(labels), "bad labels: {at}");
                        format!("{metric_name}{{{labels}}} {value}")
                    }
                    None => format!("{metric_name} {value}"),
                };
                assert_eq!(rebuilt, *line, "a sample line read back differently: {at}");
            }
            other => panic!("not a comment or a sample ({other:?}): {at}"),
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text parser reads /metrics")
}

fn metric_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name="value",...` with names `[a-zA-Z_][a-zA-Z0-9_]*` and values escaping `\`, `"`
/// and newlines.
fn labels_ok(labels: &str) -> bool {
    let mut rest = labels;
    loop {
        let Some((name, after)) = rest.split_once("=\"") else {
            return false;
        };
        if !metric_name_ok(name) || name.contains(':') {
            return false;
        }
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return false,
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return false,
                Some(_) => {}
            }
        };
        rest = &after[end + 1..];
        if rest.is_empty() {
            return true;
        }
        let Some(next) = rest.strip_prefix(',') else {
            return false;
        };
        rest = next;
    }
}
