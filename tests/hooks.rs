//! Webhooks end to end (DESIGN §9): off until `hooks.token` is set; their own token
//! (bearer or `x-troupe-token`, a query token refused with the reason); JSON only and a
//! 256 KiB cap; `Idempotency-Key` replays answer the same run; `wait: true` answers the
//! final result; a mapping fills its template from the body; and a hook acknowledged just
//! before a `kill -9` still runs after the restart.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "hook-token-0123456789";
const LONG: Duration = Duration::from_secs(60);

fn hooks_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            r#"
[hooks]
token = "{TOKEN}"

[[hooks.mappings]]
name = "github"
message_template = "{{{{who}}}} pushed to {{{{repo.name}}}}"
"#
        ),
    )
    .expect("config.toml");
    home
}

async fn post(
    gw: &TestGateway,
    path: &str,
    token: Option<(&str, &str)>,
    body: Value,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(gw.http(path)).json(&body);
    if let Some((header, value)) = token {
        req = req.header(header, value);
    }
    let res = req.send().await.expect("POST hook");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn history(gw: &TestGateway, key: &str) -> String {
    let res = reqwest::Client::new()
        .get(gw.http(&format!("/api/sessions/{key}/messages")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET history");
    res.text().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_off_until_a_token_is_set() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let bearer = format!("Bearer {}", gw.token);
    let (status, body) = post(
        &gw,
        "/hooks/agent",
        Some(("authorization", &bearer)),
        json!({"message": "hi"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("hooks.token"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_auth_size_cap_replay_wait_and_mappings() {
    let gw = TestGateway::builder().start_in(hooks_home());
    gw.wait_ready().await;
    let bearer = format!("Bearer {TOKEN}");

    let (status, _) = post(&gw, "/hooks/agent", None, json!({"message": "hi"})).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &gw,
        "/hooks/agent",
        Some(("authorization", "Bearer wrong-token-xxxxxxxx")),
        json!({"message": "hi"}),
    )
    .await;
    assert_eq!(status, 401);
    // The gateway's own token is not the hook token.
    let gateway_bearer = format!("Bearer {}", gw.token);
    let (status, _) = post(
        &gw,
        "/hooks/agent",
        Some(("authorization", &gateway_bearer)),
        json!({"message": "hi"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = post(
        &gw,
        &format!("/hooks/agent?token={TOKEN}"),
        None,
        json!({"message": "hi"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("query string"), "{body}");

    // JSON only, 256 KiB at most.
    let res = reqwest::Client::new()
        .post(gw.http("/hooks/agent"))
        .header("x-troupe-token", TOKEN)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let big = "x".repeat(300 * 1024);
    let res = reqwest::Client::new()
        .post(gw.http("/hooks/agent"))
        .header("x-troupe-token", TOKEN)
        .json(&json!({ "message": big }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);

    // x-troupe-token works; a replayed Idempotency-Key answers the same run.
    let send = |key: &'static str| {
        reqwest::Client::new()
            .post(gw.http("/hooks/agent"))
            .header("x-troupe-token", TOKEN)
            .header("idempotency-key", key)
            .json(&json!({ "message": "deploy finished" }))
            .send()
    };
    let first: Value = send("evt-1").await.unwrap().json().await.unwrap();
    let again: Value = send("evt-1").await.unwrap().json().await.unwrap();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["runId"], again["runId"], "{first} {again}");
    assert_eq!(again["duplicate"], true, "{again}");

    // wait: true answers the final result.
    let (status, done) = post(
        &gw,
        "/hooks/agent",
        Some(("authorization", &bearer)),
        json!({ "message": "ping", "wait": true, "sessionKey": "hook:waiter" }),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["summary"], "echo: ping", "{done}");

    // A mapping fills its template from the body.
    let (status, mapped) = post(
        &gw,
        "/hooks/github",
        Some(("authorization", &bearer)),
        json!({ "who": "ana", "repo": { "name": "troupe" }, "wait": true }),
    )
    .await;
    assert_eq!(status, 200, "{mapped}");
    assert_eq!(mapped["summary"], "echo: ana pushed to troupe", "{mapped}");
    let (status, _) = post(
        &gw,
        "/hooks/nope",
        Some(("authorization", &bearer)),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_acknowledged_before_a_kill_9_runs_after_the_restart() {
    // Slow replies: the run is still going when the process is killed.
    let gw = TestGateway::builder()
        .env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "500")
        .start_in(hooks_home());
    gw.wait_ready().await;
    let (status, body) = post(
        &gw,
        "/hooks/agent",
        Some(("x-troupe-token", TOKEN)),
        json!({ "message": "survive the crash please", "sessionKey": "hook:crash" }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let home = gw.kill9();
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    eventually(LONG, "the hook's turn ran after the restart", || {
        let gw = &gw;
        async move {
            history(gw, "hook:crash")
                .await
                .contains("echo: survive the crash please")
                .then_some(())
        }
    })
    .await;
}
