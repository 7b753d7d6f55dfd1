//! New WebSocket connections opened back to back while the `clients` supervisor restarts
//! again and again (DESIGN.md §2, §5): each is either served (handshake, then a whole
//! `chat.send` turn) or, if it was open before a restart, closed with 1012 (reconnect).
//! None is closed with 1011, refused, or cut without a close frame.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// Connections opened at once, each in a loop of its own.
const CONNECTORS: usize = 4;
/// Restarts of `clients` in the test.
const RESTARTS: u64 = 8;

/// How one connection ended.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read through Debug, in failure messages"
)]
enum Outcome {
    /// Handshake done (`hello-ok`) and a `chat.send` turn ran to its end (`ok`).
    Served,
    /// Closed by the server with this close frame (code, reason); `None`: no close frame.
    Closed(Option<(u16, String)>, &'static str),
    /// Never became a WebSocket, or broke another way (reset, 503, a failed request).
    Failed(String),
}

/// One connection's life: when it was opened (before the upgrade request) and when it
/// ended.
#[derive(Debug)]
struct Attempt {
    opened: Instant,
    ended: Instant,
    outcome: Outcome,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame as JSON, or how the connection ended.
async fn next_frame(ws: &mut Socket, stage: &'static str) -> Result<Value, Outcome> {
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .map_err(|_| Outcome::Failed(format!("nothing within {WAIT:?} at {stage}")))?;
        match next {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t)
                    .map_err(|e| Outcome::Failed(format!("not JSON at {stage}: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return Err(Outcome::Closed(frame, stage));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => return Err(Outcome::Failed(format!("{other:?} at {stage}"))),
            Some(Err(e)) => return Err(Outcome::Failed(format!("{e} at {stage}"))),
            None => return Err(Outcome::Closed(None, stage)),
        }
    }
}

/// The response to request `id` (events in between are skipped).
async fn response(ws: &mut Socket, id: &str, stage: &'static str) -> Result<Value, Outcome> {
    loop {
        let frame = next_frame(ws, stage).await?;
        if frame["type"] == "res" && frame["id"] == id {
            return Ok(frame);
        }
    }
}

/// Sends a request; a failed write is reported as the close that caused it, if any.
async fn request(
    ws: &mut Socket,
    id: &str,
    method: &str,
    params: Value,
    stage: &'static str,
) -> Result<Value, Outcome> {
    let frame = json!({ "type": "req", "id": id, "method": method, "params": params });
    if let Err(e) = ws.send(Message::text(frame.to_string())).await {
        // The server may have closed first: read its close frame.
        return match next_frame(ws, stage).await {
            Err(closed @ Outcome::Closed(Some(_), _)) => Err(closed),
            _ => Err(Outcome::Failed(format!("send failed at {stage}: {e}"))),
        };
    }
    let res = response(ws, id, stage).await?;
    if res["ok"] != true {
        return Err(Outcome::Failed(format!("{stage}: {res}")));
    }
    Ok(res)
}

/// Opens a connection, authenticates, runs one `chat.send` turn to its end, and closes.
async fn serve_one(gw_url: &str, token: &str, n: usize) -> Outcome {
    let (mut ws, _) = match tokio_tungstenite::connect_async(gw_url).await {
        Ok(ok) => ok,
        Err(e) => return Outcome::Failed(format!("upgrade: {e}")),
    };
    let turn = async {
        let challenge = next_frame(&mut ws, "challenge").await?;
        if challenge["event"] != "connect.challenge" {
            return Err(Outcome::Failed(format!("first frame: {challenge}")));
        }
        let connect = json!({
            "minProtocol": 3, "maxProtocol": 4,
            "client": { "id": "test", "version": "0", "platform": "linux", "mode": "test", "instanceId": "x" },
            "role": "operator", "scopes": ["operator.admin"], "auth": { "token": token },
            "caps": [], "commands": [], "permissions": {}, "locale": "en-US", "userAgent": "tests/1",
        });
        request(&mut ws, "c", "connect", connect, "handshake").await?;
        let text = format!("hello {n}");
        let send = json!({ "sessionKey": format!("agent:main:race{n}"), "message": text, "idempotencyKey": text });
        let ack = request(&mut ws, "s", "chat.send", send, "chat.send").await?;
        let run_id = ack["payload"]["runId"].clone();
        let wait = json!({ "runId": run_id, "timeoutMs": 60_000 });
        let end = request(&mut ws, "w", "agent.wait", wait, "agent.wait").await?;
        if end["payload"]["status"] != "ok" {
            return Err(Outcome::Failed(format!("turn ended: {end}")));
        }
        Ok(())
    };
    match turn.await {
        Ok(()) => {
            let _ = ws.close(None).await;
            Outcome::Served
        }
        Err(outcome) => outcome,
    }
}

/// Opens connections back to back until `stop`, counting those served in `served`;
/// returns how each one went.
async fn connect_in_a_loop(
    url: String,
    token: String,
    first: usize,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut n = first;
    loop {
        // One more connection once told to stop: each loop ends with one opened after the
        // last restart.
        let last = stop.load(Ordering::Relaxed);
        let opened = Instant::now();
        let outcome = serve_one(&url, &token, n).await;
        if matches!(outcome, Outcome::Served) {
            served.fetch_add(1, Ordering::Relaxed);
        }
        attempts.push(Attempt {
            opened,
            ended: Instant::now(),
            outcome,
        });
        n += CONNECTORS;
        if last {
            break;
        }
    }
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_while_clients_restarts_are_served_or_told_to_reconnect() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..CONNECTORS)
        .map(|i| {
            let (url, token) = (gw.ws_url(), gw.token.clone());
            let (stop, served) = (stop.clone(), served.clone());
            tokio::spawn(connect_in_a_loop(url, token, i, stop, served))
        })
        .collect();
    let http = reqwest::Client::new();
    // When each restart was asked for, and when the restart endpoint answered (by then the
    // old `clients` is being stopped).
    let mut restarts = Vec::new();
    for round in 1..=RESTARTS {
        // Each restart comes once the loops are serving again (so it catches connections
        // at every step: the upgrade, the handshake, a turn).
        let before = served.load(Ordering::Relaxed);
        eventually(WAIT, "connections served between restarts", || async {
            (served.load(Ordering::Relaxed) >= before + CONNECTORS).then_some(())
        })
        .await;
        let asked = Instant::now();
        let res = http
            .post(gw.http("/api/supervisor/restart"))
            .bearer_auth(&gw.token)
            .json(&json!({ "id": "clients" }))
            .send()
            .await
            .expect("POST /api/supervisor/restart");
        assert!(res.status().is_success(), "{res:?}");
        restarts.push((asked, Instant::now()));
        gw.child_restarted("clients", round).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut attempts = Vec::new();
    for l in loops {
        attempts.extend(l.await.expect("connector task"));
    }
    let mut served = 0;
    let mut told_to_reconnect = 0;
    for a in &attempts {
        match &a.outcome {
            Outcome::Served => served += 1,
            Outcome::Closed(Some((1012, _)), _) => {
                // Only a connection that was open when a restart began is told to reconnect.
                let open_at_a_restart = restarts
                    .iter()
                    .any(|(asked, answered)| a.opened < *answered && a.ended > *asked);
                assert!(
                    open_at_a_restart,
                    "1012 for a connection opened after the restart began: {a:?} restarts {restarts:?}"
                );
                told_to_reconnect += 1;
            }
            _ => panic!("a connection was neither served nor told to reconnect: {a:?}"),
        }
    }
    let last = restarts[restarts.len() - 1].1;
    assert!(
        attempts
            .iter()
            .any(|a| a.opened > last && matches!(a.outcome, Outcome::Served)),
        "no connection served after the last restart: {attempts:?}"
    );
    eprintln!(
        "{} connections: {served} served, {told_to_reconnect} told to reconnect (1012)",
        attempts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_waits_a_few_seconds_for_a_restarting_clients_then_is_told_to_retry() {
    // Hang detection off for the test's length: only the restart's shutdown timeout (15 s)
    // ends the hung `clients`.
    let gw = TestGateway::builder()
        .env("TROUPE__DEBUG__FAULT_INJECTION", "true")
        .env("TROUPE__SUPERVISOR__HANG_TIMEOUT_MS", "120000")
        .start();
    gw.wait_ready().await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(gw.http(path))
            .bearer_auth(&gw.token)
            .json(&body)
            .send()
    };
    // `clients` stops reading its mailbox, then is asked to restart: it cannot stop.
    let hang = post(
        "/api/supervisor/crash",
        json!({ "id": "clients", "mode": "hang" }),
    )
    .await
    .expect("POST crash");
    assert!(hang.status().is_success(), "{hang:?}");
    let restart = post("/api/supervisor/restart", json!({ "id": "clients" }))
        .await
        .expect("POST restart");
    assert!(restart.status().is_success(), "{restart:?}");
    // The upgrade is not handed the stopping `clients`: it waits for the next one, and
    // past the bound is refused before the `101`, with a hint to retry.
    let asked = Instant::now();
    let refused = tokio_tungstenite::connect_async(gw.ws_url()).await;
    let waited = asked.elapsed();
    let Err(tokio_tungstenite::tungstenite::Error::Http(res)) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}");
    };
    assert_eq!(res.status(), 503, "{res:?}");
    assert_eq!(res.headers()["retry-after"], "1", "{res:?}");
    assert!(
        waited >= std::time::Duration::from_secs(4),
        "answered after {waited:?}, without waiting for the restart"
    );
    // Once the hung one is killed (its shutdown timeout) and the next one runs, a new
    // connection is served.
    eventually(
        WAIT,
        "clients restarted after its shutdown timeout",
        || async {
            let tree = gw.tree().await;
            let n = node(&tree, "clients")?.clone();
            (n["restarts"] == 1 && n["state"] == "running").then_some(())
        },
    )
    .await;
    let mut c = gw.client().await;
    assert_eq!(c.request("health", None).await["ok"], true);
}
