//! The baseline: a bare tokio + tokio-tungstenite WebSocket server that speaks just enough of
//! the gateway protocol (`connect.challenge`, `connect`, `health`) for the benchmark client.
//!
//! It runs in its own process (the bench binary re-executed with [`FLAG`]), like the gateway,
//! so both servers get the same treatment: separate address space, same client, same cores.
//! It parses every frame with `serde_json` and answers with a small JSON payload carrying the
//! request id: roughly the least work any JSON-over-WebSocket gateway has to do per request.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::BenchResult;

/// Command-line flag that turns the bench binary into the bare server; the next argument is
/// the file to write the bound port to.
pub const FLAG: &str = "--bare-ws-server";

/// The server exits on its own after this long, whatever happens to the benchmark.
const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A connection that sends nothing for this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Runs the bare server process: binds an ephemeral loopback port, writes it to `port_file`,
/// and serves until killed, until its stdin closes (the benchmark died) or [`MAX_LIFETIME`].
///
/// Like actix-web (under the gateway), it runs one single-threaded runtime per core, all
/// accepting on the same listening socket; a connection stays on the core that accepted it.
pub fn run_process(port_file: &Path) -> BenchResult<()> {
    exit_when_stdin_closes();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, port_file)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(cores);
    for worker in 0..cores {
        let listener = listener.try_clone()?;
        workers.push(std::thread::spawn(move || {
            run_worker(listener, worker, started)
        }));
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a bare server worker panicked")??;
    }
    Ok(())
}

/// One worker: a single-threaded runtime accepting and serving connections for at most
/// [`MAX_LIFETIME`].
fn run_worker(listener: std::net::TcpListener, worker: usize, started: Instant) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        // The accept loop never ends by itself; the time limit ends it.
        let _ = tokio::time::timeout(MAX_LIFETIME, accept_loop(listener, worker, started)).await;
        Ok(())
    })
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

/// Accepts connections, one task each (bounded in time by the caller).
async fn accept_loop(listener: TcpListener, worker: usize, started: Instant) {
    let mut accepted: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, say: back off and keep serving the open ones.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        accepted += 1;
        tokio::spawn(handle_connection(
            stream,
            format!("{worker}-{accepted}"),
            started,
        ));
    }
}

/// Serves one WebSocket connection until it closes, errors, or idles past [`IDLE_LIMIT`].
async fn handle_connection(stream: TcpStream, conn_id: String, started: Instant) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let challenge = json!({
        "type": "event",
        "event": "connect.challenge",
        "payload": {"nonce": format!("bare-{conn_id}"), "ts": unix_millis()},
    });
    if ws.send(Message::text(challenge.to_string())).await.is_err() {
        return;
    }
    let mut connected = false;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(IDLE_LIMIT, ws.next()).await {
        let Message::Text(text) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some(reply) = reply_to(&text, &mut connected, &conn_id, started) else {
            continue;
        };
        if ws.send(Message::text(reply)).await.is_err() {
            break;
        }
    }
}

/// The reply to one request frame, or `None` for frames that are not requests.
fn reply_to(text: &str, connected: &mut bool, conn_id: &str, started: Instant) -> Option<String> {
    let frame: Value = serde_json::from_str(text).ok()?;
    if frame["type"] != "req" {
        return None;
    }
    let id = frame["id"].as_str()?;
    let method = frame["method"].as_str().unwrap_or("");
    let reply = match (method, *connected) {
        ("connect", false) => {
            *connected = true;
            ok_response(id, hello_payload(conn_id))
        }
        ("health", true) => ok_response(
            id,
            json!({"ok": true, "ts": unix_millis(), "uptimeMs": started.elapsed().as_millis() as u64}),
        ),
        _ => json!({
            "type": "res", "id": id, "ok": false,
            "error": {"code": "INVALID_REQUEST", "message": format!("bare server: unexpected {method}")},
        }),
    };
    Some(reply.to_string())
}

/// A successful response frame.
fn ok_response(id: &str, payload: Value) -> Value {
    json!({"type": "res", "id": id, "ok": true, "payload": payload})
}

/// A minimal `hello-ok` payload.
fn hello_payload(conn_id: &str) -> Value {
    json!({
        "type": "hello-ok",
        "protocol": 4,
        "server": {"version": "bare", "connId": conn_id},
        "features": {"methods": ["health"], "events": []},
    })
}

/// Milliseconds since the Unix epoch.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
