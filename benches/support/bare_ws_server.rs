//! The baseline: a bare tokio + tokio-tungstenite WebSocket server that speaks just enough of
//! the gateway protocol (`connect.challenge`, `connect`, `health`) for the benchmark client.
//!
//! It runs in its own process (the bench binary re-executed with [`FLAG`]), like the gateway,
//! so both servers get the same treatment: separate address space, same client, same cores.
//! It parses every frame with `serde_json` into a typed struct and answers with a small typed
//! JSON payload carrying the request id: roughly the least work any JSON-over-WebSocket
//! gateway has to do per request.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;

use super::BenchResult;

/// Command-line flag that turns the bench binary into the bare server; the next argument is
/// the file to write the bound port to.
pub const FLAG: &str = "--bare-ws-server";

/// The server exits on its own after this long, whatever happens to the benchmark.
const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The acceptor stops after this many connections.
const MAX_CONNECTIONS: usize = 1_000_000;

/// Most requests answered before one flush.
const MAX_BATCH: usize = 1_024;

/// A connection that sends nothing for this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Runs the bare server process: binds an ephemeral loopback port, writes it to `port_file`,
/// and serves until killed, until its stdin closes (the benchmark died) or [`MAX_LIFETIME`].
///
/// Its shape is actix-web's, the server under the gateway: one thread accepts and hands each
/// connection, round robin, to one of N workers (N = cores), each a single-threaded tokio
/// runtime that keeps the connection for its life. This is faster on a request/response
/// ping-pong than tokio's work-stealing runtime, so the comparison is with the best shape.
pub fn run_process(port_file: &Path) -> BenchResult<()> {
    exit_when_stdin_closes();
    exit_after(MAX_LIFETIME);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, port_file)?;
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = (0..cores)
        .map(|_| spawn_worker(started))
        .collect::<BenchResult<Vec<_>>>()?;
    for (n, accepted) in listener.incoming().take(MAX_CONNECTIONS).enumerate() {
        let Ok(stream) = accepted else {
            // Out of file descriptors, say: back off and keep serving the open ones.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if workers[n % cores].send((stream, n as u64)).is_err() {
            return Err("a bare server worker stopped".into());
        }
    }
    Ok(())
}

/// Starts a worker thread running a single-threaded runtime; connections sent to the
/// returned channel (with their ids) are served there.
fn spawn_worker(started: Instant) -> BenchResult<UnboundedSender<(std::net::TcpStream, u64)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sender, mut connections) = unbounded_channel::<(std::net::TcpStream, u64)>();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            // Ends when the acceptor goes away (its loop is bounded) or the process exits.
            while let Some((stream, conn_id)) = connections.recv().await {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if let Ok(stream) = TcpStream::from_std(stream) {
                    tokio::spawn(handle_connection(stream, conn_id, started));
                }
            }
        });
    });
    Ok(sender)
}

/// Exits the process when the parent closes our stdin, so an aborted benchmark leaves no
/// server behind.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        // Read until EOF or error; the parent never writes, so this blocks until it goes away.
        while let Ok(n) = std::io::Read::read(&mut stdin, &mut sink) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
}

/// Exits the process after `lifetime`, whatever else is going on.
fn exit_after(lifetime: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        std::process::exit(0);
    });
}

/// Serves one WebSocket connection until it closes, errors, or idles past [`IDLE_LIMIT`].
async fn handle_connection(stream: TcpStream, conn_id: u64, started: Instant) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let challenge = Event {
        kind: "event",
        event: "connect.challenge",
        payload: Challenge {
            nonce: format!("bare-{conn_id}"),
            ts: unix_millis(),
        },
    };
    let Ok(challenge) = serde_json::to_string(&challenge) else {
        return;
    };
    if ws.send(Message::text(challenge)).await.is_err() {
        return;
    }
    let mut session = Session {
        connected: false,
        conn_id,
        started,
    };
    // Answer what has arrived, then flush once: one write for a burst of pipelined requests.
    while let Ok(Some(Ok(first))) = tokio::time::timeout(IDLE_LIMIT, ws.next()).await {
        let mut next = Some(first);
        for _ in 0..MAX_BATCH {
            let Some(message) = next.take() else {
                break;
            };
            if matches!(message, Message::Close(_)) {
                return;
            }
            if let Some(reply) = session.reply_to(&message)
                && ws.feed(Message::text(reply)).await.is_err()
            {
                return;
            }
            next = match ws.next().now_or_never() {
                Some(Some(Ok(message))) => Some(message),
                Some(_) => return,
                None => None,
            };
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// What one connection remembers.
struct Session {
    /// Whether `connect` succeeded.
    connected: bool,
    /// This connection's id.
    conn_id: u64,
    /// When the server started.
    started: Instant,
}

impl Session {
    /// The reply to one frame, or `None` for frames that are not text requests.
    fn reply_to(&mut self, message: &Message) -> Option<String> {
        let Message::Text(text) = message else {
            return None;
        };
        reply_to(text, &mut self.connected, self.conn_id, self.started)
    }
}

/// A request frame; fields other than these (`params`, ...) are skipped.
#[derive(Deserialize)]
struct Request<'a> {
    /// Must be `req`.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// Echoed in the response.
    #[serde(borrow)]
    id: Cow<'a, str>,
    /// `connect` or `health`.
    #[serde(borrow)]
    method: Cow<'a, str>,
}

/// An event frame.
#[derive(Serialize)]
struct Event<P> {
    /// Always `event`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Event name.
    event: &'static str,
    /// Event payload.
    payload: P,
}

/// The `connect.challenge` payload.
#[derive(Serialize)]
struct Challenge {
    /// Per-connection nonce.
    nonce: String,
    /// Server time, ms since the epoch.
    ts: u64,
}

/// A response frame.
#[derive(Serialize)]
struct Response<'a, P> {
    /// Always `res`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The request id.
    id: &'a str,
    /// Success or not.
    ok: bool,
    /// The payload of a success.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
    /// The error of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorShape>,
}

/// An error in a failed response.
#[derive(Serialize)]
struct ErrorShape {
    /// Error code.
    code: &'static str,
    /// What went wrong.
    message: String,
}

/// The `hello-ok` payload (minimal).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Hello {
    /// Always `hello-ok`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Protocol version spoken.
    protocol: u32,
    /// This connection's id.
    conn_id: u64,
}

/// The `health` payload.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// Always true.
    ok: bool,
    /// Server time, ms since the epoch.
    ts: u64,
    /// Time since the server started.
    uptime_ms: u64,
}

/// The reply to one request frame, or `None` for frames that are not requests.
fn reply_to(text: &str, connected: &mut bool, conn_id: u64, started: Instant) -> Option<String> {
    let request: Request<'_> = serde_json::from_str(text).ok()?;
    if request.kind != "req" {
        return None;
    }
    let id = &*request.id;
    let reply = match (&*request.method, *connected) {
        ("connect", false) => {
            *connected = true;
            let hello = Hello {
                kind: "hello-ok",
                protocol: 4,
                conn_id,
            };
            serde_json::to_string(&success(id, hello))
        }
        ("health", true) => {
            let health = Health {
                ok: true,
                ts: unix_millis(),
                uptime_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            serde_json::to_string(&success(id, health))
        }
        (method, _) => serde_json::to_string(&Response::<()> {
            kind: "res",
            id,
            ok: false,
            payload: None,
            error: Some(ErrorShape {
                code: "INVALID_REQUEST",
                message: format!("bare server: unexpected {method}"),
            }),
        }),
    };
    reply.ok()
}

/// A successful response frame.
fn success<P>(id: &str, payload: P) -> Response<'_, P> {
    Response {
        kind: "res",
        id,
        ok: true,
        payload: Some(payload),
        error: None,
    }
}

/// Milliseconds since the Unix epoch.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
