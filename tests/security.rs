//! The HTTP/WebSocket edge (DESIGN.md §10-11): DNS-rebinding defence (`Host` and `Origin`
//! allowlist), the failed-auth limiter, authentication before any body is read, body
//! deadlines, connection bounds, and HTTP semantics (HEAD, 405 + Allow, JSON errors).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A parsed HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?} in {self:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one response (head, then `Content-Length` bytes) from `stream` within [`WAIT`].
async fn read_response(stream: &mut TcpStream, head_request: bool) -> RawResponse {
    tokio::time::timeout(WAIT, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed before a response head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("content-length"))
            .unwrap_or(0);
        let len = if head_request { 0 } else { len };
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
        RawResponse {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("a response within the wait")
}

/// Sends `request` as is on a new connection and reads the response.
async fn raw(port: u16, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    read_response(&mut stream, request.starts_with("HEAD ")).await
}

/// `METHOD path` with the given Host and extra header lines, no body.
async fn request(port: u16, method: &str, path: &str, host: &str, extra: &str) -> RawResponse {
    raw(
        port,
        &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

fn auth(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

fn local(gw: &TestGateway) -> String {
    format!("127.0.0.1:{}", gw.port)
}

/// A WebSocket upgrade with these extra headers; `Ok` when the server accepted it.
async fn upgrade(gw: &TestGateway, headers: &[(&str, &str)]) -> Result<(), String> {
    let mut req = gw.ws_url().into_client_request().expect("request");
    for (k, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName =
            k.parse().expect("header name");
        req.headers_mut().insert(name, v.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_does_not_name_the_gateway_is_refused_even_without_auth() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__AUTH__MODE", "none")
        .start();
    gw.wait_ready().await;
    let evil = format!("evil.example:{}", gw.port);
    let res = request(gw.port, "GET", "/api/status", &evil, "").await;
    assert_eq!(res.status, 421, "{res:?}");
    let body = res.json();
    assert_eq!(body["error"]["code"], "MISDIRECTED_REQUEST", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("evil.example"),
        "{body}"
    );
    let res = request(gw.port, "GET", "/healthz", "evil.example", "").await;
    assert_eq!(res.status, 421, "public endpoints too");
    assert!(
        upgrade(&gw, &[("host", &evil)]).await.is_err(),
        "a WebSocket upgrade naming another host is refused"
    );
    let port = gw.port;
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        "127.0.0.1".to_string(),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
    ] {
        let res = request(port, "GET", "/api/status", &host, "").await;
        assert_eq!(res.status, 200, "Host {host} names the gateway: {res:?}");
    }
    upgrade(&gw, &[("host", &format!("localhost:{port}"))])
        .await
        .expect("a loopback name may upgrade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_with_the_right_token_and_allowed_hosts_are_accepted() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__ALLOWED_HOSTS", "troupe.test")
        .start();
    gw.wait_ready().await;
    let res = request(
        gw.port,
        "GET",
        "/api/status",
        &format!("evil.example:{}", gw.port),
        &auth(&gw.token),
    )
    .await;
    assert_eq!(res.status, 421, "{res:?}");
    let res = request(
        gw.port,
        "GET",
        "/api/status",
        "troupe.test",
        &auth(&gw.token),
    )
    .await;
    assert_eq!(res.status, 200, "{res:?}");
    upgrade(
        &gw,
        &[("host", "troupe.test"), ("origin", "https://troupe.test")],
    )
    .await
    .expect("a page served under an allowed name may connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_origin_must_name_the_gateway_not_merely_match_host() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__ALLOWED_HOSTS", "troupe.test")
        .start();
    gw.wait_ready().await;
    let port = gw.port;
    let rebound = format!("evil.example:{port}");
    let rebound_origin = format!("http://evil.example:{port}");
    assert!(
        upgrade(&gw, &[("host", &rebound), ("origin", &rebound_origin)])
            .await
            .is_err(),
        "Origin == Host on the attacker's name is refused"
    );
    assert!(
        upgrade(
            &gw,
            &[("host", "troupe.test"), ("origin", "https://evil.example")]
        )
        .await
        .is_err(),
        "an allowed Host does not make a foreign Origin acceptable"
    );
    assert!(
        upgrade(&gw, &[("origin", "http://localhost:3000")])
            .await
            .is_err(),
        "another local web app is another site"
    );
    upgrade(&gw, &[("origin", &format!("http://localhost:{port}"))])
        .await
        .expect("a page served by the gateway may connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_credential_never_lock_out_the_right_token() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__AUTH__MAX_FAILURES_PER_MINUTE", "3")
        .start();
    gw.wait_ready().await;
    for _ in 0..10 {
        let res = request(gw.port, "GET", "/api/status", &local(&gw), "").await;
        assert_eq!(res.status, 401, "{res:?}");
        assert_eq!(res.json()["error"]["code"], "UNAUTHORIZED");
    }
    for _ in 0..5 {
        let mut c = WsClient::open(&gw.ws_url()).await;
        let res = c
            .request(
                "connect",
                Some(json!({
                    "minProtocol": 3, "maxProtocol": 4,
                    "client": { "id": "t", "version": "0", "platform": "linux", "mode": "test" },
                })),
            )
            .await;
        assert_eq!(res["error"]["details"]["code"], "AUTH_FAILED", "{res}");
    }
    let res = request(gw.port, "GET", "/api/status", &local(&gw), &auth(&gw.token)).await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = request(
        gw.port,
        "GET",
        "/api/status",
        &local(&gw),
        &auth("wrong-token"),
    )
    .await;
    assert_eq!(
        res.status, 401,
        "credential-less requests did not use up the allowance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_limited_and_the_right_token_always_passes_without_resetting() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__AUTH__MAX_FAILURES_PER_MINUTE", "3")
        .start();
    gw.wait_ready().await;
    let host = local(&gw);
    for _ in 0..2 {
        let res = request(gw.port, "GET", "/api/status", &host, &auth("wrong-token")).await;
        assert_eq!(res.status, 401);
        let res = request(gw.port, "GET", "/api/status", &host, &auth(&gw.token)).await;
        assert_eq!(res.status, 200, "the right token is accepted: {res:?}");
    }
    let mut c = WsClient::open(&gw.ws_url()).await;
    let res = c
        .connect("wrong-token-wrong-token", &["operator.read"])
        .await;
    assert_eq!(res["error"]["details"]["code"], "AUTH_FAILED", "{res}");
    let res = request(gw.port, "GET", "/api/status", &host, &auth("wrong-token")).await;
    assert_eq!(
        res.status, 429,
        "successes in between did not reset the count: {res:?}"
    );
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(res.json()["error"]["code"], "RATE_LIMITED");
    let res = request(gw.port, "GET", "/api/status", &host, &auth(&gw.token)).await;
    assert_eq!(res.status, 200, "the limiter never refuses the right token");
    let mut c = WsClient::open(&gw.ws_url()).await;
    let res = c
        .connect("wrong-token-wrong-token", &["operator.read"])
        .await;
    assert_eq!(res["error"]["details"]["code"], "RATE_LIMITED", "{res}");
    assert_eq!(res["error"]["retryable"], true, "{res}");
    assert!(
        res["error"]["retryAfterMs"].as_u64().unwrap_or(0) > 0,
        "{res}"
    );
    let mut c = WsClient::open(&gw.ws_url()).await;
    let hello = c.connect(&gw.token, &["operator.read"]).await;
    assert_eq!(hello["ok"], true, "{hello}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_post_is_refused_before_its_body_is_read() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut held = Vec::new();
    for (path, extra) in [
        ("/api/sessions/agent:main:main/messages", ""),
        ("/api/supervisor/restart", ""),
        ("/v1/chat/completions", ""),
        ("/%61pi/supervisor/restart", ""),
        (
            "/api/sessions/agent:main:main/messages",
            "Upgrade: websocket\r\nConnection: Upgrade\r\n",
        ),
    ] {
        for _ in 0..12 {
            // Headers promise a large body that never comes.
            let mut stream = TcpStream::connect(("127.0.0.1", gw.port))
                .await
                .expect("connect");
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\n{extra}Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"mess",
                local(&gw)
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            held.push(stream);
        }
    }
    for stream in &mut held {
        let res = read_response(stream, false).await;
        assert_eq!(res.status, 401, "{res:?}");
        assert!(res.json()["error"].is_object(), "{res:?}");
    }
    let res = request(gw.port, "GET", "/api/status", &local(&gw), &auth(&gw.token)).await;
    assert_eq!(
        res.status, 200,
        "an authenticated client is served meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_after_the_request_timeout() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__REQUEST_TIMEOUT_MS", "500")
        .start();
    gw.wait_ready().await;
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/supervisor/restart HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"id\":",
        local(&gw),
        auth(&gw.token)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let res = read_response(&mut stream, false).await;
    assert_eq!(res.status, 408, "{res:?}");
    let body = res.json();
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request_timeout_ms"),
        "{body}"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":",
        local(&gw),
        auth(&gw.token)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let res = read_response(&mut stream, false).await;
    assert_eq!(res.status, 408, "{res:?}");
    assert!(
        res.json()["error"]["message"].is_string(),
        "OpenAI's shape: {res:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_bound_get_503_with_retry_after() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__MAX_CONNECTIONS_PER_IP", "3")
        .start();
    gw.wait_ready().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(gw.client().await);
    }
    let res = request(gw.port, "GET", "/healthz", &local(&gw), "").await;
    assert_eq!(res.status, 503, "WebSocket connections count: {res:?}");
    assert!(res.header("retry-after").is_some(), "{res:?}");
    let body = res.json();
    assert_eq!(body["error"]["code"], "UNAVAILABLE");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_connections_per_ip"),
        "{body}"
    );
    clients.pop();
    let port = gw.port;
    let host = local(&gw);
    eventually(WAIT, "a slot frees when a client leaves", || {
        let host = host.clone();
        async move {
            let res = request(port, "GET", "/healthz", &host, "").await;
            (res.status == 200).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_total_bound_get_503_with_retry_after() {
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__MAX_CONNECTIONS", "2")
        .start();
    gw.wait_ready().await;
    let _a = gw.client().await;
    let _b = gw.client().await;
    let res = request(gw.port, "GET", "/api/status", &local(&gw), &auth(&gw.token)).await;
    assert_eq!(res.status, 503, "{res:?}");
    assert!(res.header("retry-after").is_some(), "{res:?}");
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.max_connections"),
        "{res:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_like_get_without_a_body() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let res = request(gw.port, "HEAD", "/healthz", &local(&gw), "").await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = request(
        gw.port,
        "HEAD",
        "/api/status",
        &local(&gw),
        &auth(&gw.token),
    )
    .await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = request(gw.port, "HEAD", "/api/status", &local(&gw), "").await;
    assert_eq!(res.status, 401, "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_gets_405_with_allow_and_a_json_body() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let res = request(gw.port, "DELETE", "/healthz", &local(&gw), "").await;
    assert_eq!(res.status, 405, "{res:?}");
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    assert_eq!(res.json()["error"]["code"], "METHOD_NOT_ALLOWED");
    let res = request(
        gw.port,
        "GET",
        "/api/supervisor/restart",
        &local(&gw),
        &auth(&gw.token),
    )
    .await;
    assert_eq!(res.status, 405, "{res:?}");
    assert_eq!(res.header("allow"), Some("POST"));
    let res = request(
        gw.port,
        "PUT",
        "/api/sessions/agent:main:main/messages",
        &local(&gw),
        &auth(&gw.token),
    )
    .await;
    assert_eq!(res.header("allow"), Some("GET, HEAD, POST"), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_json_error_shape() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let host = local(&gw);
    let token = auth(&gw.token);
    let res = request(gw.port, "GET", "/nowhere", &host, "").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"]["code"], "NOT_FOUND", "{res:?}");
    let res = request(gw.port, "GET", "/api/sessions?limit=many", &host, &token).await;
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("limit")
            || body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid digit"),
        "{body}"
    );
    let big = format!("{{\"id\":\"{}\"}}", "x".repeat(300 * 1024));
    let res = raw(
        gw.port,
        &format!(
            "POST /api/supervisor/restart HTTP/1.1\r\nHost: {host}\r\n{token}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        ),
    )
    .await;
    assert_eq!(res.status, 413, "{res:?}");
    let body = res.json();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("262144"),
        "{body}"
    );
    let res = raw(
        gw.port,
        &format!(
            "POST /api/supervisor/restart HTTP/1.1\r\nHost: {host}\r\n{token}Content-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{{nope"
        ),
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"]["code"], "INVALID_REQUEST", "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let header = format!("Authorization: {scheme} {}\r\n", gw.token);
        let res = request(gw.port, "GET", "/api/status", &local(&gw), &header).await;
        assert_eq!(res.status, 200, "{scheme}: {res:?}");
    }
    let res = reqwest::Client::new()
        .get(gw.http("/v1/models"))
        .header("authorization", format!("bearer {}", gw.token))
        .send()
        .await
        .expect("GET /v1/models");
    assert_eq!(res.status(), 200);
}
