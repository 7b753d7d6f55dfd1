//! The WebSocket handshake and frames (DESIGN.md §5): challenge, connect, hello-ok, errors
//! with codes, closes on bad input, scopes, ping/pong, shutdown.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_token_gets_hello_ok_with_policy_and_methods() {
    let gw = TestGateway::builder().start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    let hello = c.connect(&gw.token, &["operator.read"]).await;
    assert_eq!(hello["ok"], true, "{hello}");
    let p = &hello["payload"];
    assert_eq!(p["type"], "hello-ok");
    assert_eq!(p["protocol"], 4);
    assert!(
        p["server"]["connId"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        p["features"]["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .any(|m| m == "health")
    );
    assert!(p["snapshot"]["uptimeMs"].is_u64());
    assert_eq!(p["policy"]["maxPayload"], 1_048_576);
    assert!(p["policy"]["maxBufferedBytes"].is_u64());
    assert!(p["policy"]["tickIntervalMs"].is_u64());
    let health = c.request("health", None).await;
    assert_eq!(health["ok"], true);
    assert_eq!(health["payload"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_clients_are_accepted_and_older_refused() {
    let gw = TestGateway::builder().start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    let frame = json!({"type":"req","id":"c","method":"connect","params":{"minProtocol":3,"maxProtocol":3,"client":{"id":"cli"},"auth":{"token":gw.token}}});
    c.send_text(&frame.to_string()).await;
    let res = c.response("c").await;
    assert_eq!(res["payload"]["protocol"], 3, "{res}");

    let mut old = WsClient::open(&gw.ws_url()).await;
    let frame = json!({"type":"req","id":"c","method":"connect","params":{"minProtocol":1,"maxProtocol":2,"auth":{"token":gw.token}}});
    old.send_text(&frame.to_string()).await;
    let (frames, close) = old.until_closed().await;
    assert_eq!(
        frames[0]["error"]["details"]["code"], "PROTOCOL_MISMATCH",
        "{frames:?}"
    );
    assert!(close.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inverted_protocol_range_and_node_role_are_refused_with_the_reason() {
    let gw = TestGateway::builder().start();
    for (params, detail) in [
        (
            json!({"minProtocol":4,"maxProtocol":3,"client":{"id":"cli"},"auth":{"token":gw.token}}),
            "INVALID_PROTOCOL_RANGE",
        ),
        (
            json!({"minProtocol":3,"maxProtocol":4,"role":"node","client":{"id":"cli"},"auth":{"token":gw.token}}),
            "UNSUPPORTED_ROLE",
        ),
        (
            json!({"minProtocol":3,"maxProtocol":4,"role":"superuser","auth":{"token":gw.token}}),
            "UNSUPPORTED_ROLE",
        ),
    ] {
        let mut c = WsClient::open(&gw.ws_url()).await;
        c.send_text(&json!({"type":"req","id":"c","method":"connect","params":params}).to_string())
            .await;
        let (frames, close) = c.until_closed().await;
        assert_eq!(frames.len(), 1, "{params}: {frames:?}");
        assert_eq!(frames[0]["ok"], false, "{params}: {frames:?}");
        assert_eq!(frames[0]["error"]["code"], "INVALID_REQUEST", "{frames:?}");
        assert_eq!(frames[0]["error"]["details"]["code"], detail, "{frames:?}");
        assert_eq!(close.expect("close frame").code, CloseCode::Policy);
    }
    let mut ok = WsClient::open(&gw.ws_url()).await;
    let params =
        json!({"minProtocol":3,"maxProtocol":4,"role":"operator","auth":{"token":gw.token}});
    ok.send_text(&json!({"type":"req","id":"c","method":"connect","params":params}).to_string())
        .await;
    let res = ok.response("c").await;
    assert_eq!(res["payload"]["auth"]["role"], "operator", "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_gets_an_error_then_close() {
    let gw = TestGateway::builder().start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    let params = json!({"minProtocol":3,"maxProtocol":4,"client":{"id":"cli"},"auth":{"token":"not-the-token-at-all"}});
    c.send_text(&json!({"type":"req","id":"c","method":"connect","params":params}).to_string())
        .await;
    let (frames, close) = c.until_closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["ok"], false);
    assert_eq!(frames[0]["error"]["code"], "FORBIDDEN");
    assert_eq!(frames[0]["error"]["details"]["code"], "AUTH_FAILED");
    assert_eq!(close.expect("close frame").code, CloseCode::Policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_first_frame_gets_an_error_then_close() {
    let gw = TestGateway::builder().start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.send_text("hello there").await;
    let (frames, close) = c.until_closed().await;
    assert_eq!(frames[0]["error"]["code"], "INVALID_REQUEST", "{frames:?}");
    assert_eq!(frames[0]["error"]["details"]["code"], "INVALID_FRAME");
    assert_eq!(close.expect("close frame").code, CloseCode::Policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_connect_first_frame_gets_an_error_then_close() {
    let gw = TestGateway::builder().start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    c.send_text(&json!({"type":"req","id":"h","method":"health"}).to_string())
        .await;
    let (frames, close) = c.until_closed().await;
    assert_eq!(frames[0]["id"], "h");
    assert_eq!(frames[0]["error"]["code"], "INVALID_REQUEST");
    assert_eq!(frames[0]["error"]["details"]["code"], "HANDSHAKE_REQUIRED");
    assert_eq!(close.expect("close frame").code, CloseCode::Policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_gets_an_error_then_close_and_others_are_unaffected() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__WS__MAX_PAYLOAD", "4096")
        .start();
    let mut other = gw.client().await;
    let mut c = gw.client().await;
    let big = json!({"type":"req","id":"x","method":"health","params":{"pad":"a".repeat(10_000)}});
    c.send_text(&big.to_string()).await;
    let (frames, close) = c.until_closed().await;
    let err = frames
        .iter()
        .find(|f| f["type"] == "res")
        .expect("an error response");
    assert_eq!(
        err["error"]["details"]["code"], "PAYLOAD_TOO_LARGE",
        "{err}"
    );
    assert_eq!(close.expect("close frame").code, CloseCode::Size);
    assert_eq!(other.request("health", None).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_connect_bad_frames_get_errors_but_the_connection_stays() {
    let gw = TestGateway::builder().start();
    let mut c = gw.client().await;
    c.send_text("{not json").await;
    let res = c.response("").await;
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    let unknown = c.request("no.such.method", None).await;
    assert_eq!(unknown["error"]["details"]["code"], "UNKNOWN_METHOD");
    let bad_params = c
        .request("supervisor.ping", Some(json!({"id":"store","extra":1})))
        .await;
    assert_eq!(bad_params["error"]["code"], "INVALID_REQUEST");
    assert!(
        bad_params["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("extra"),
        "{bad_params}"
    );
    let missing = c.request("supervisor.ping", Some(json!({}))).await;
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("id"),
        "{missing}"
    );
    assert_eq!(c.request("health", None).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_outside_granted_scopes_is_forbidden_with_missing_scope() {
    let gw = TestGateway::builder()
        .env("TROUPE__DEBUG__FAULT_INJECTION", "true")
        .start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    let hello = c.connect(&gw.token, &["operator.read"]).await;
    assert_eq!(hello["payload"]["auth"]["scopes"], json!(["operator.read"]));
    let res = c
        .request("supervisor.restart", Some(json!({"id":"agent:main"})))
        .await;
    assert_eq!(res["error"]["code"], "FORBIDDEN");
    assert_eq!(res["error"]["details"]["code"], "MISSING_SCOPE");
    assert_eq!(c.request("status", None).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_pong() {
    let gw = TestGateway::builder().start();
    let mut c = gw.client().await;
    c.send_raw(Message::Ping(b"are you there".to_vec().into()))
        .await;
    loop {
        match c.recv().await {
            Received::Pong(p) => {
                assert_eq!(p, b"are you there");
                break;
            }
            Received::Frame(_) => continue,
            Received::Closed(c) => panic!("closed: {c:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_events_arrive_with_increasing_seq() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__WS__TICK_INTERVAL_MS", "50")
        .start();
    let mut c = gw.client().await;
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        if let Received::Frame(f) = c.recv().await
            && f["event"] == "tick"
        {
            assert!(f["payload"]["ts"].is_u64());
            seqs.push(f["seq"].as_u64().expect("seq"));
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_the_handshake_timeout() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__WS__HANDSHAKE_TIMEOUT_MS", "200")
        .start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    let (frames, close) = c.until_closed().await;
    assert_eq!(
        frames[0]["error"]["details"]["code"], "HANDSHAKE_TIMEOUT",
        "{frames:?}"
    );
    assert!(close.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_sends_shutdown_to_every_client_before_closing() {
    let mut gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut a = gw.client().await;
    let mut b = gw.client().await;
    let code = tokio::task::spawn_blocking(move || {
        let status = gw.terminate();
        (status.code(), gw)
    });
    let (frames_a, close_a) = a.until_closed().await;
    let (frames_b, _) = b.until_closed().await;
    for frames in [&frames_a, &frames_b] {
        assert!(
            frames.iter().any(|f| f["event"] == "shutdown"),
            "{frames:?}"
        );
    }
    assert_eq!(close_a.expect("close frame").code, CloseCode::Away);
    let (code, gw) = code.await.expect("join");
    assert_eq!(code, Some(0));
    assert!(!gw.home().join("run/troupe.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_1008_instead_of_growing_memory() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__WS__MAX_PAYLOAD", "4096")
        .env("TROUPE__GATEWAY__WS__MAX_BUFFERED_BYTES", "65536")
        .start();
    gw.wait_ready().await;
    // A raw TCP client that completes the handshake, then floods requests and never reads.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("tcp");
    let req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.expect("upgrade");
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.expect("101");
    assert_eq!(&head[9..12], b"101");
    let connect = json!({"type":"req","id":"c","method":"connect","params":{"minProtocol":3,"maxProtocol":4,"auth":{"token":gw.token}}}).to_string();
    tcp.write_all(&masked_text_frame(connect.as_bytes()))
        .await
        .expect("connect");
    let status =
        json!({"type":"req","id":"s","method":"status","params":{"clients":"all"}}).to_string();
    let frame = masked_text_frame(status.as_bytes());
    // Bounded: stop at the first write error (the server closed us) or after the wait.
    let deadline = std::time::Instant::now() + WAIT;
    let mut closed = false;
    while std::time::Instant::now() < deadline {
        if tcp.write_all(&frame).await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the gateway never closed a client that does not read"
    );
    let log = gw.home().join("logs/troupe.log");
    eventually(WAIT, "the log names the slow consumer", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(log)
                .ok()?
                .contains("slow consumer")
                .then_some(())
        }
    })
    .await;
    eventually(WAIT, "the closed session leaves the tree", || async {
        let tree = gw.tree().await;
        (node(&tree, "clients")?["children"].as_array()?.is_empty()).then_some(())
    })
    .await;
}

fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81u8];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[test]
fn gateway_call_health_works_from_the_cli() {
    let gw = TestGateway::builder().start();
    let (code, out, err) = cli(gw.home(), &["gateway", "call", "health"]);
    assert_eq!(code, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_credentials_from_one_address_are_rate_limited() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__AUTH__MAX_FAILURES_PER_MINUTE", "3")
        .start();
    gw.wait_ready().await;
    for _ in 0..2 {
        let mut c = WsClient::open(&gw.ws_url()).await;
        let res = c
            .connect("wrong-token-wrong-token", &["operator.read"])
            .await;
        assert_eq!(res["error"]["details"]["code"], "AUTH_FAILED");
    }
    let http = reqwest::Client::new();
    let wrong = http
        .get(gw.http("/api/status"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), 401);
    let limited = http
        .get(gw.http("/api/status"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("GET");
    assert_eq!(limited.status(), 429, "the allowance is used up");
    assert!(limited.headers().contains_key("retry-after"));
    let body: serde_json::Value = limited.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("too many wrong"),
        "{body}"
    );
    let right = http
        .get(gw.http("/api/status"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(right.status(), 200, "the right token is never refused");
    let mut c = WsClient::open(&gw.ws_url()).await;
    let res = c
        .connect("wrong-token-wrong-token", &["operator.read"])
        .await;
    assert_eq!(res["error"]["details"]["code"], "RATE_LIMITED", "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_another_sites_page_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut foreign = gw.ws_url().into_client_request().expect("request");
    foreign
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    assert!(
        tokio_tungstenite::connect_async(foreign).await.is_err(),
        "cross-origin upgrade refused"
    );
    let mut same = gw.ws_url().into_client_request().expect("request");
    let origin = format!("http://127.0.0.1:{}", gw.port);
    same.headers_mut()
        .insert("origin", origin.parse().expect("header"));
    assert!(
        tokio_tungstenite::connect_async(same).await.is_ok(),
        "a page served by the gateway may connect"
    );
}
