//! The benchmark's WebSocket client: the handshake and request/response subset of the gateway
//! protocol, plus the load patterns (closed loop, pipelined window, many connections, idle
//! connections, crash/recover). The same code drives the gateway and the bare server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use super::{BenchResult, within};

/// How long any single connect or read waits before the benchmark gives up on the server.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer per client connection: small, so 10,000 idle clients stay cheap here.
const READ_BUFFER: usize = 8 * 1024;

/// Upper bound on requests in one measured phase, whatever its duration.
const MAX_REQUESTS_PER_PHASE: usize = 20_000_000;

/// Upper bound on frames skipped (events, pings, stray responses) while waiting for one reply.
const MAX_SKIPPED_FRAMES: usize = 100_000;

/// Upper bound on `supervisor.ping` attempts after one crash (time is bounded too).
const MAX_PINGS_PER_CRASH: usize = 1_000_000;

/// Opening idle connections stops after this many failures.
const MAX_OPEN_ERRORS: usize = 10;

/// The fields of a server frame the client looks at; the rest is skipped without building values.
#[derive(Deserialize)]
struct FrameHead {
    /// `res`, `event`, ...
    #[serde(rename = "type")]
    kind: String,
    /// Request id of a response.
    id: Option<String>,
    /// Outcome of a response.
    ok: Option<bool>,
}

/// One response frame (`type: "res"`).
pub struct Response {
    /// The request id it answers.
    pub id: String,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The whole frame.
    pub frame: String,
}

impl Response {
    /// Whether the server answered `error.code == "UNAVAILABLE"`.
    pub fn is_unavailable(&self) -> bool {
        !self.ok
            && serde_json::from_str::<Value>(&self.frame)
                .is_ok_and(|v| v["error"]["code"] == "UNAVAILABLE")
    }

    /// `Ok(())` for a successful response, else an error quoting the frame.
    fn check(&self, method: &str) -> BenchResult<()> {
        if self.ok {
            Ok(())
        } else {
            Err(format!("{method} failed: {}", self.frame).into())
        }
    }
}

/// Outcome of one measured load phase.
#[derive(Default)]
pub struct LoadResult {
    /// Requests answered.
    pub requests: usize,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// One latency per request, in microseconds (unsorted).
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Combines loads that ran side by side: counts add, wall time is the longest.
    pub fn side_by_side(parts: Vec<LoadResult>) -> LoadResult {
        let mut all = LoadResult::default();
        for part in parts {
            all.requests += part.requests;
            all.elapsed = all.elapsed.max(part.elapsed);
            all.latencies_us.extend(part.latencies_us);
        }
        all
    }

    /// Combines loads that ran one after another: counts and wall times add.
    pub fn one_after_another(parts: Vec<LoadResult>) -> LoadResult {
        let mut all = LoadResult::default();
        for part in parts {
            all.requests += part.requests;
            all.elapsed += part.elapsed;
            all.latencies_us.extend(part.latencies_us);
        }
        all
    }
}

/// An authenticated WebSocket connection to a gateway (or the bare server).
pub struct Client {
    /// The socket.
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Counter behind request ids `r0`, `r1`, ...
    next_id: u64,
}

impl Client {
    /// Opens `ws://127.0.0.1:PORT/ws`, waits for `connect.challenge`, and authenticates with
    /// `token` as an operator with admin scope.
    pub async fn connect(port: u16, token: &str) -> BenchResult<Self> {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = within(
            "websocket open",
            IO_TIMEOUT,
            connect_async_with_config(url, Some(config), true),
        )
        .await?;
        let mut client = Client { ws, next_id: 0 };
        client.expect_challenge().await?;
        client.send_text(connect_frame(token)).await?;
        client.wait_for("c1").await?.check("connect")?;
        Ok(client)
    }

    /// Sends `method` with `params` and waits for its response.
    pub async fn request(&mut self, method: &str, params: Option<Value>) -> BenchResult<Response> {
        let id = self.fresh_id();
        self.send_text(request_frame(&id, method, params)).await?;
        self.wait_for(&id).await
    }

    /// Sends `method` with `params` and returns the payload of its successful response.
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> BenchResult<Value> {
        let response = self.request(method, params).await?;
        response.check(method)?;
        let mut frame: Value = serde_json::from_str(&response.frame)?;
        Ok(frame["payload"].take())
    }

    /// Sends `method` with `params` without waiting for the answer, and returns the request
    /// id its response will carry (to be read with [`Client::next_frame`]).
    #[allow(dead_code, reason = "used by turn_load, not by gateway_load")]
    pub async fn send_request(
        &mut self,
        method: &str,
        params: Option<Value>,
    ) -> BenchResult<String> {
        let id = self.fresh_id();
        self.send_text(request_frame(&id, method, params)).await?;
        Ok(id)
    }

    /// The next text frame from the server, response or event, as received.
    #[allow(dead_code, reason = "used by turn_load, not by gateway_load")]
    pub async fn next_frame(&mut self) -> BenchResult<String> {
        self.read_text().await
    }

    /// Closes the connection politely (best effort, bounded).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    /// Reads frames (answering pings) until the server closes or the task is aborted.
    async fn hold_open(mut self) {
        while let Some(Ok(_)) = self.ws.next().await {}
    }

    /// One `health` request at a time for `duration`: window 1.
    pub async fn closed_loop(&mut self, duration: Duration) -> BenchResult<LoadResult> {
        let start = Instant::now();
        let mut latencies_us = Vec::with_capacity(64 * 1024);
        while start.elapsed() < duration && latencies_us.len() < MAX_REQUESTS_PER_PHASE {
            let sent_at = Instant::now();
            self.request("health", None).await?.check("health")?;
            latencies_us.push(micros(sent_at.elapsed()));
        }
        Ok(LoadResult {
            requests: latencies_us.len(),
            elapsed: start.elapsed(),
            latencies_us,
        })
    }

    /// Keeps `window` `health` requests outstanding on this one connection for `duration`,
    /// then waits for the stragglers.
    pub async fn pipelined(
        &mut self,
        window: usize,
        duration: Duration,
    ) -> BenchResult<LoadResult> {
        let start = Instant::now();
        let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
        let mut latencies_us = Vec::with_capacity(64 * 1024);
        for _ in 0..window {
            let (seq, text) = self.health_frame();
            in_flight.insert(seq, Instant::now());
            self.ws.feed(Message::text(text)).await?;
        }
        self.ws.flush().await?;
        while !in_flight.is_empty() {
            let response = self.next_response().await?;
            let Some(sent_at) = parse_seq(&response.id).and_then(|seq| in_flight.remove(&seq))
            else {
                continue;
            };
            response.check("health")?;
            latencies_us.push(micros(sent_at.elapsed()));
            let sent = latencies_us.len() + in_flight.len();
            if start.elapsed() < duration && sent < MAX_REQUESTS_PER_PHASE {
                let (seq, text) = self.health_frame();
                in_flight.insert(seq, Instant::now());
                self.send_text(text).await?;
            }
        }
        Ok(LoadResult {
            requests: latencies_us.len(),
            elapsed: start.elapsed(),
            latencies_us,
        })
    }

    /// Crashes `child` `crashes` times with `supervisor.crash`; after each crash, pings it in
    /// a tight loop until it answers. Each sample runs from sending the crash request to the
    /// first successful `supervisor.ping` (so it includes the crash request's round trip).
    pub async fn crash_and_recover(
        &mut self,
        child: &str,
        crashes: usize,
        recovery_limit: Duration,
    ) -> BenchResult<CrashResult> {
        let target = json!({"id": child});
        self.request("supervisor.ping", Some(target.clone()))
            .await?
            .check("supervisor.ping")?;
        let mut result = CrashResult {
            latencies_us: Vec::with_capacity(crashes),
            saw_unavailable: 0,
        };
        for _ in 0..crashes {
            let crashed_at = Instant::now();
            self.request("supervisor.crash", Some(target.clone()))
                .await?
                .check("supervisor.crash")?;
            let mut saw_unavailable = false;
            let mut back = false;
            for _ in 0..MAX_PINGS_PER_CRASH {
                let ping = self
                    .request("supervisor.ping", Some(target.clone()))
                    .await?;
                back = ping.ok;
                if back {
                    break;
                }
                if !ping.is_unavailable() {
                    ping.check("supervisor.ping")?;
                }
                saw_unavailable = true;
                if crashed_at.elapsed() > recovery_limit {
                    break;
                }
            }
            if !back {
                return Err(
                    format!("{child} not back within {recovery_limit:?} of a crash").into(),
                );
            }
            result.latencies_us.push(micros(crashed_at.elapsed()));
            result.saw_unavailable += usize::from(saw_unavailable);
        }
        Ok(result)
    }

    /// Waits for the `connect.challenge` event the server sends on open.
    async fn expect_challenge(&mut self) -> BenchResult<()> {
        let text = self.read_text().await?;
        let frame: Value = serde_json::from_str(&text)?;
        if frame["type"] == "event" && frame["event"] == "connect.challenge" {
            Ok(())
        } else {
            Err(format!("expected a connect.challenge event first, got {text}").into())
        }
    }

    /// Reads responses until the one for `id`, skipping events and other responses.
    async fn wait_for(&mut self, id: &str) -> BenchResult<Response> {
        for _ in 0..MAX_SKIPPED_FRAMES {
            let response = self.next_response().await?;
            if response.id == id {
                return Ok(response);
            }
        }
        Err(format!("no response for {id} among {MAX_SKIPPED_FRAMES} frames").into())
    }

    /// The next response frame, skipping events.
    async fn next_response(&mut self) -> BenchResult<Response> {
        for _ in 0..MAX_SKIPPED_FRAMES {
            let text = self.read_text().await?;
            let head: FrameHead = serde_json::from_str(&text)?;
            if head.kind != "res" {
                continue;
            }
            return Ok(Response {
                id: head.id.unwrap_or_default(),
                ok: head.ok == Some(true),
                frame: text,
            });
        }
        Err(format!("no response among {MAX_SKIPPED_FRAMES} frames").into())
    }

    /// The next text frame, skipping control and binary frames.
    async fn read_text(&mut self) -> BenchResult<String> {
        for _ in 0..MAX_SKIPPED_FRAMES {
            let message = within("websocket read", IO_TIMEOUT, async {
                self.ws
                    .next()
                    .await
                    .unwrap_or(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
            })
            .await?;
            match message {
                Message::Text(text) => return Ok(text.as_str().to_owned()),
                Message::Close(frame) => {
                    return Err(format!("server closed the socket: {frame:?}").into());
                }
                _ => continue,
            }
        }
        Err(format!("no text frame among {MAX_SKIPPED_FRAMES} frames").into())
    }

    /// Sends one text frame and flushes it.
    async fn send_text(&mut self, text: String) -> BenchResult<()> {
        within(
            "websocket send",
            IO_TIMEOUT,
            self.ws.send(Message::text(text)),
        )
        .await
    }

    /// A fresh request id.
    fn fresh_id(&mut self) -> String {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        id
    }

    /// A `health` request with a fresh id, and that id's sequence number.
    fn health_frame(&mut self) -> (u64, String) {
        let seq = self.next_id;
        let id = self.fresh_id();
        (seq, request_frame(&id, "health", None))
    }
}

/// Outcome of the crash/recover phase.
pub struct CrashResult {
    /// Crash-to-answer times, in microseconds.
    pub latencies_us: Vec<u32>,
    /// How many crashes were followed by at least one `UNAVAILABLE` ping.
    pub saw_unavailable: usize,
}

/// Runs [`Client::closed_loop`] on every client at once for `duration`; the clients stay
/// open and are handed back in `clients` (all of them, unless a load task failed).
pub async fn closed_loops(
    clients: &mut Vec<Client>,
    duration: Duration,
) -> BenchResult<LoadResult> {
    let mut tasks = JoinSet::new();
    for mut client in clients.drain(..) {
        tasks.spawn(async move {
            let result = client.closed_loop(duration).await;
            (client, result)
        });
    }
    let mut parts = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        let (client, result) = joined?;
        clients.push(client);
        parts.push(result?);
    }
    Ok(LoadResult::side_by_side(parts))
}

/// Authenticated connections held open and idle. Each has a task reading (and dropping) what
/// the server sends, so pings are answered; dropping the pool closes them all.
#[derive(Default)]
pub struct IdlePool {
    /// One task per open connection.
    tasks: JoinSet<()>,
}

/// How an attempt to grow an [`IdlePool`] went.
pub struct OpenOutcome {
    /// Connections open in the pool afterwards.
    pub open: usize,
    /// Failed attempts.
    pub errors: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl IdlePool {
    /// Opens connections, `concurrency` at a time, until the pool holds `target`, until
    /// [`MAX_OPEN_ERRORS`] attempts have failed, or until `time_limit` has passed.
    pub async fn grow_to(
        &mut self,
        port: u16,
        token: &str,
        target: usize,
        concurrency: usize,
        time_limit: Duration,
    ) -> OpenOutcome {
        let deadline = tokio::time::Instant::now() + time_limit;
        let wanted = target.saturating_sub(self.open());
        let mut attempts = futures_util::stream::iter(0..wanted)
            .map(|_| Client::connect(port, token))
            .buffer_unordered(concurrency.max(1));
        let mut outcome = OpenOutcome {
            open: 0,
            errors: 0,
            first_error: None,
        };
        while outcome.errors < MAX_OPEN_ERRORS {
            match tokio::time::timeout_at(deadline, attempts.next()).await {
                Ok(Some(Ok(client))) => {
                    self.tasks.spawn(client.hold_open());
                }
                Ok(Some(Err(error))) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert_with(|| error.to_string());
                }
                Ok(None) => break,
                Err(_) => {
                    outcome
                        .first_error
                        .get_or_insert_with(|| format!("stopped after {time_limit:?}"));
                    break;
                }
            }
        }
        outcome.open = self.open();
        outcome
    }

    /// Connections still open (tasks whose socket the server closed are reaped first).
    pub fn open(&mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.len()
    }

    /// Closes every connection (without close frames: the sockets just go away).
    pub async fn close_all(mut self) {
        self.tasks.shutdown().await;
    }
}

/// The `connect` request.
fn connect_frame(token: &str) -> String {
    json!({
        "type": "req",
        "id": "c1",
        "method": "connect",
        "params": {
            "minProtocol": 3,
            "maxProtocol": 4,
            "client": {"id": "bench", "version": "0.1.0", "platform": "linux", "mode": "cli"},
            "role": "operator",
            "scopes": ["operator.admin"],
            "auth": {"token": token},
        },
    })
    .to_string()
}

/// A request frame; ids and methods are the benchmark's own plain ASCII, so no escaping.
fn request_frame(id: &str, method: &str, params: Option<Value>) -> String {
    match params {
        None => format!(r#"{{"type":"req","id":"{id}","method":"{method}"}}"#),
        Some(params) => {
            json!({"type": "req", "id": id, "method": method, "params": params}).to_string()
        }
    }
}

/// The sequence number inside a request id `rN`.
fn parse_seq(id: &str) -> Option<u64> {
    id.strip_prefix('r')?.parse().ok()
}

/// A duration in whole microseconds, saturating.
fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}
