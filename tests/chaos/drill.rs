//! The chaos drill, shared by `tests/chaos.rs` (about 60 s, asserts the invariants) and
//! `benches/soak.rs` (10 minutes or more, prints figures every minute).
//!
//! Against one running gateway it drives, side by side: closed-loop turns in N sessions
//! (one connection each; `chat.send` retried with the same idempotency key until accepted,
//! then `agent.wait` until the run is final), WebSocket connect/disconnect churn, REST reads
//! (`/api/sessions`, `/api/status`), `/metrics` scrapes, and a `supervisor.crash` of a random
//! child every few seconds. It keeps a ledger per idempotency key (the run ids it was given,
//! the final states it saw) and checks it against the store afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest any one request waits for its answer before the connection is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after the load stops a turn may still take to become final (else it is lost).
const GRACE: Duration = Duration::from_secs(90);

/// The children a crash is injected into, one at random each time.
pub const CRASH_TARGETS: [&str; 5] = [
    "agent:main",
    "channels",
    "session-queue",
    "scheduler",
    "store",
];

/// What the drill does, and for how long.
#[derive(Clone, Debug)]
pub struct DrillConfig {
    /// Gateway port (127.0.0.1).
    pub port: u16,
    /// Operator token (admin).
    pub token: String,
    /// How long load is offered.
    pub duration: Duration,
    /// Sessions of closed-loop turns (a connection each).
    pub sessions: usize,
    /// A crash every this long.
    pub crash_every: Duration,
    /// A churn connection (open, connect, health, close) every this long.
    pub churn_every: Duration,
    /// A REST read every this long.
    pub rest_every: Duration,
    /// A `/metrics` scrape every this long.
    pub scrape_every: Duration,
}

/// Counters readable while the drill runs (the soak prints them every minute).
#[derive(Default)]
pub struct Live {
    /// Submit → final latencies (ms) since the last [`Live::take_latencies`].
    latencies_ms: Mutex<Vec<u32>>,
    /// Turns accepted so far.
    pub accepted: AtomicU64,
    /// Turns final so far.
    pub finals: AtomicU64,
    /// Crashes injected so far.
    pub crashes: AtomicU64,
    /// Churn connections completed so far.
    pub churned: AtomicU64,
    /// REST reads and scrapes answered 200 so far.
    pub http_ok: AtomicU64,
    stop: AtomicBool,
}

impl Live {
    /// The latencies recorded since the last call.
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(
            &mut *self
                .latencies_ms
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One idempotency key's history from the client's side.
#[derive(Debug, Default, Clone)]
pub struct KeyRecord {
    /// Every run id an accepting answer named (exactly one expected).
    pub run_ids: HashSet<String>,
    /// The final status (`ok`, `error`, `aborted`, `coalesced`), once seen.
    pub status: Option<String>,
    /// The error of a failed run.
    pub error: Option<String>,
}

/// What the drill saw.
#[derive(Debug, Default)]
pub struct DrillReport {
    /// Per accepted idempotency key.
    pub keys: HashMap<String, KeyRecord>,
    /// Final chat events seen per run id on the turn connections (at most one expected).
    pub final_events: HashMap<String, u32>,
    /// Submissions refused for good (not retryable), with the reason.
    pub refused: BTreeMap<String, u64>,
    /// Crashes injected, and failures to inject one.
    pub crashes: u64,
    /// Failed `supervisor.crash` requests, with the error.
    pub crash_errors: Vec<String>,
    /// Churn connections completed, and ones that failed.
    pub churned: u64,
    /// Churn connections that failed.
    pub churn_errors: u64,
    /// REST reads and scrapes answered 200, and other outcomes.
    pub http_ok: u64,
    /// REST reads and scrapes that failed (status or error).
    pub http_errors: u64,
    /// Every submit → final latency (ms).
    pub latencies_ms: Vec<u32>,
}

impl DrillReport {
    /// Accepted keys whose run ended `ok`.
    pub fn ok(&self) -> usize {
        self.keys
            .values()
            .filter(|k| k.status.as_deref() == Some("ok"))
            .count()
    }
    /// Accepted keys whose run ended otherwise, counted by error text.
    pub fn failed(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for k in self.keys.values() {
            if let Some(status) = k.status.as_deref().filter(|s| *s != "ok") {
                let why = k.error.clone().unwrap_or_else(|| status.to_string());
                *out.entry(format!("{status}: {why}")).or_default() += 1;
            }
        }
        out
    }
    /// Accepted keys never seen final.
    pub fn lost(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, k)| k.status.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }
    /// Keys given more than one run id, and runs whose final event came more than once.
    pub fn twice(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, k)| k.run_ids.len() > 1)
            .map(|(k, r)| format!("key {k}: runs {:?}", r.run_ids))
            .collect();
        v.extend(
            self.final_events
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(run, n)| format!("run {run}: {n} final events")),
        );
        v.sort();
        v
    }
}

/// Runs the drill; `live` is updated as it goes.
pub async fn run(config: DrillConfig, live: Arc<Live>) -> DrillReport {
    let started = Instant::now();
    let mut turns = Vec::new();
    for i in 0..config.sessions {
        turns.push(tokio::spawn(turn_loop(
            config.clone(),
            i,
            live.clone(),
            started,
        )));
    }
    let crash = tokio::spawn(crash_loop(config.clone(), live.clone()));
    let churn = tokio::spawn(churn_loop(config.clone(), live.clone()));
    let rest = tokio::spawn(http_loop(
        config.clone(),
        live.clone(),
        &["/api/sessions", "/api/status"],
        config.rest_every,
    ));
    let scrape = tokio::spawn(http_loop(
        config.clone(),
        live.clone(),
        &["/metrics"],
        config.scrape_every,
    ));
    tokio::time::sleep(config.duration).await;
    live.stop.store(true, Ordering::Relaxed);
    let mut report = DrillReport::default();
    if let Ok((crashes, errors)) = crash.await {
        report.crashes = crashes;
        report.crash_errors = errors;
    }
    if let Ok((ok, errors)) = churn.await {
        report.churned = ok;
        report.churn_errors = errors;
    }
    for h in [rest, scrape] {
        if let Ok((ok, errors)) = h.await {
            report.http_ok += ok;
            report.http_errors += errors;
        }
    }
    for t in turns {
        if let Ok(part) = t.await {
            report.keys.extend(part.keys);
            for (run, n) in part.final_events {
                *report.final_events.entry(run).or_default() += n;
            }
            for (why, n) in part.refused {
                *report.refused.entry(why).or_default() += n;
            }
            report.latencies_ms.extend(part.latencies_ms);
        }
    }
    report
}

/// A minimal protocol client that reports errors instead of panicking.
struct Conn {
    ws: Socket,
    next_id: u64,
}

impl Conn {
    async fn open(port: u16, token: &str) -> Result<Self, String> {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let (ws, _) = tokio::time::timeout(IO_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| "websocket open timed out".to_string())?
            .map_err(|e| format!("websocket open: {e}"))?;
        let mut conn = Conn { ws, next_id: 0 };
        let params = json!({
            "minProtocol": 3, "maxProtocol": 4,
            "client": { "id": "drill", "version": "0", "platform": "linux", "mode": "cli" },
            "role": "operator",
            "scopes": ["operator.read", "operator.write", "operator.admin"],
            "auth": { "token": token },
        });
        let res = conn.call("connect", params, &mut HashMap::new()).await?;
        if res["ok"] != true {
            return Err(format!("connect refused: {res}"));
        }
        Ok(conn)
    }

    /// Sends a request and reads until its response; final chat events on the way are counted.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        finals: &mut HashMap<String, u32>,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("d{}", self.next_id);
        let frame = json!({ "type": "req", "id": id, "method": method, "params": params });
        tokio::time::timeout(IO_TIMEOUT, self.ws.send(Message::text(frame.to_string())))
            .await
            .map_err(|_| format!("{method}: send timed out"))?
            .map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| format!("{method}: no answer within {IO_TIMEOUT:?}"))?;
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(c))) => return Err(format!("{method}: closed: {c:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{method}: {e}")),
                None => return Err(format!("{method}: connection ended")),
            };
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))?;
            if v["type"] == "res" && v["id"] == id.as_str() {
                return Ok(v);
            }
            let p = &v["payload"];
            if v["event"] == "chat"
                && matches!(p["state"].as_str(), Some("final" | "error" | "aborted"))
                && let Some(run) = p["runId"].as_str()
            {
                *finals.entry(run.to_string()).or_default() += 1;
            }
        }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// What one session's loop saw.
#[derive(Default)]
struct TurnPart {
    keys: HashMap<String, KeyRecord>,
    final_events: HashMap<String, u32>,
    refused: BTreeMap<String, u64>,
    latencies_ms: Vec<u32>,
}

/// Closed-loop turns in session `drill-<i>` until the drill stops.
async fn turn_loop(config: DrillConfig, i: usize, live: Arc<Live>, started: Instant) -> TurnPart {
    let mut part = TurnPart::default();
    let session = format!("agent:main:drill-{i}");
    let mut conn: Option<Conn> = None;
    let give_up = started + config.duration + GRACE;
    let mut n = 0u64;
    while !live.stopping() {
        n += 1;
        let key = format!("drill-{i}-{n}");
        let sent_at = Instant::now();
        let params = json!({ "sessionKey": session, "message": format!("turn {n} of session {i}"), "idempotencyKey": key });
        // Submit, with the same key, until accepted or refused for good.
        let run_id = loop {
            if Instant::now() > give_up {
                break None;
            }
            let Some(c) = connected(&mut conn, &config).await else {
                continue;
            };
            match c
                .call("chat.send", params.clone(), &mut part.final_events)
                .await
            {
                Ok(res) if res["ok"] == true => match res["payload"]["runId"].as_str() {
                    Some(run) => break Some(run.to_string()),
                    None => {
                        *part
                            .refused
                            .entry(format!("no runId in {res}"))
                            .or_default() += 1;
                        break None;
                    }
                },
                Ok(res)
                    if res["error"]["retryable"] == true
                        || res["error"]["code"] == "UNAVAILABLE" =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(res) => {
                    let why = res["error"]["message"].as_str().unwrap_or("?").to_string();
                    *part.refused.entry(why).or_default() += 1;
                    break None;
                }
                Err(_) => conn = None,
            }
        };
        let Some(run_id) = run_id else { continue };
        live.accepted.fetch_add(1, Ordering::Relaxed);
        let record = part.keys.entry(key.clone()).or_default();
        record.run_ids.insert(run_id.clone());
        // Wait until the run is final (the queue may restart meanwhile).
        while Instant::now() < give_up {
            let Some(c) = connected(&mut conn, &config).await else {
                continue;
            };
            let wait = json!({ "runId": run_id, "timeoutMs": 5000 });
            match c.call("agent.wait", wait, &mut part.final_events).await {
                Ok(res) if res["ok"] == true => {
                    let status = res["payload"]["status"].as_str().unwrap_or("").to_string();
                    if matches!(status.as_str(), "ok" | "error" | "aborted" | "coalesced") {
                        let record = part.keys.entry(key.clone()).or_default();
                        record.error = res["payload"]["error"].as_str().map(str::to_string);
                        record.status = Some(status);
                        live.finals.fetch_add(1, Ordering::Relaxed);
                        let ms = sent_at.elapsed().as_millis().min(u32::MAX as u128) as u32;
                        part.latencies_ms.push(ms);
                        live.latencies_ms
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(ms);
                        break;
                    }
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => conn = None,
            }
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
    part
}

/// The connection, opened again if it is gone (after a short pause on failure).
async fn connected<'a>(conn: &'a mut Option<Conn>, config: &DrillConfig) -> Option<&'a mut Conn> {
    if conn.is_none() {
        match Conn::open(config.port, &config.token).await {
            Ok(c) => *conn = Some(c),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return None;
            }
        }
    }
    conn.as_mut()
}

/// A pseudo-random number (xorshift seeded from the clock; good enough to pick a target).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `supervisor.crash` of a random child every `crash_every`.
async fn crash_loop(config: DrillConfig, live: Arc<Live>) -> (u64, Vec<String>) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
        | 1;
    let (mut crashes, mut errors) = (0, Vec::new());
    let mut conn: Option<Conn> = None;
    let mut tick = tokio::time::interval(config.crash_every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if live.stopping() {
            break;
        }
        let target = CRASH_TARGETS[(next_random(&mut seed) % CRASH_TARGETS.len() as u64) as usize];
        let Some(c) = connected(&mut conn, &config).await else {
            errors.push(format!("crash {target}: cannot connect"));
            continue;
        };
        match c
            .call(
                "supervisor.crash",
                json!({ "id": target }),
                &mut HashMap::new(),
            )
            .await
        {
            Ok(res) if res["ok"] == true => {
                crashes += 1;
                live.crashes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(res) => errors.push(format!("crash {target}: {}", res["error"])),
            Err(e) => {
                errors.push(format!("crash {target}: {e}"));
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
    (crashes, errors)
}

/// Connections that open, authenticate, ask `health` and close, one every `churn_every`.
async fn churn_loop(config: DrillConfig, live: Arc<Live>) -> (u64, u64) {
    let (mut ok, mut errors) = (0, 0);
    while !live.stopping() {
        tokio::time::sleep(config.churn_every).await;
        let once = async {
            let mut c = Conn::open(config.port, &config.token).await?;
            let res = c.call("health", json!({}), &mut HashMap::new()).await?;
            c.close().await;
            (res["ok"] == true)
                .then_some(())
                .ok_or(format!("health: {res}"))
        };
        match once.await {
            Ok(()) => {
                ok += 1;
                live.churned.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => errors += 1,
        }
    }
    (ok, errors)
}

/// GETs of `paths` in turn, one every `every`, with the token.
async fn http_loop(
    config: DrillConfig,
    live: Arc<Live>,
    paths: &'static [&'static str],
    every: Duration,
) -> (u64, u64) {
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(IO_TIMEOUT)
        .build()
    else {
        return (0, 1);
    };
    let (mut ok, mut errors) = (0, 0);
    let mut i = 0usize;
    while !live.stopping() {
        tokio::time::sleep(every).await;
        let path = paths[i % paths.len()];
        i += 1;
        let url = format!("http://127.0.0.1:{}{path}", config.port);
        let answered = match http.get(url).bearer_auth(&config.token).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if answered {
            ok += 1;
            live.http_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            errors += 1;
        }
    }
    (ok, errors)
}

/// What the store holds for the drill's keys.
#[derive(Debug, Default)]
pub struct StoreCheck {
    /// Accepted keys checked.
    pub checked: usize,
    /// Accepted keys with no run in the store.
    pub missing: Vec<String>,
    /// Accepted keys whose run is not final (queued or running).
    pub not_final: Vec<String>,
    /// Keys with more than one run, or whose run is not the one the client was given.
    pub twice: Vec<String>,
    /// Runs with more than one stored reply.
    pub replied_twice: Vec<String>,
}

/// Reads the store (`troupe.db`, read-only, beside a running gateway) and checks that each
/// accepted key has exactly one run, the one the client was given, and that it is final.
pub fn check_store(db: &Path, report: &DrillReport) -> Result<StoreCheck, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("open {}: {e}", db.display()))?;
    let mut runs: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT idempotency_key, id, status FROM runs WHERE session_key LIKE 'agent:main:drill-%'")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    for row in rows {
        let (key, id, status) = row.map_err(|e| e.to_string())?;
        runs.entry(key.unwrap_or_default())
            .or_default()
            .push((id, status));
    }
    let mut check = StoreCheck::default();
    for (key, record) in &report.keys {
        check.checked += 1;
        match runs.get(key).map(Vec::as_slice) {
            None | Some([]) => check.missing.push(key.clone()),
            Some([(id, status)]) => {
                if !record.run_ids.contains(id) {
                    check.twice.push(format!(
                        "{key}: store has {id}, client got {:?}",
                        record.run_ids
                    ));
                }
                if matches!(status.as_str(), "queued" | "running") {
                    check.not_final.push(format!("{key}: {status}"));
                }
            }
            Some(many) => check.twice.push(format!("{key}: {many:?}")),
        }
    }
    let mut stmt = conn
        .prepare(
            "SELECT run_id, COUNT(*) FROM messages WHERE role = 'assistant' AND session_key LIKE 'agent:main:drill-%'
             GROUP BY run_id HAVING COUNT(*) > 1",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok(format!(
                "{}: {} replies",
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, i64>(1)?
            ))
        })
        .map_err(|e| e.to_string())?;
    for row in rows {
        check.replied_twice.push(row.map_err(|e| e.to_string())?);
    }
    Ok(check)
}

/// RSS (KiB), threads and open fds of a process, from `/proc`.
pub fn proc_stats(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, field("Threads:")?, fds))
}

/// Every node of a status tree that is not `running`, as `id: state`.
pub fn not_running(tree: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![tree];
    while let Some(n) = stack.pop() {
        if n["state"] != "running" {
            out.push(format!("{}: {}", n["id"], n["state"]));
        }
        if let Some(children) = n["children"].as_array() {
            stack.extend(children.iter());
        }
    }
    out
}

/// `p50` and `p99` of latencies (ms).
pub fn p50_p99(samples: &[u32]) -> (u32, u32) {
    if samples.is_empty() {
        return (0, 0);
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}
