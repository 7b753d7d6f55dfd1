//! Every bound refuses with a retryable error when reached and loses nothing (DESIGN.md
//! §11): waiting turns across all sessions, idempotency-key length, retention settings.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_turns_across_sessions_are_bounded_and_refusals_lose_nothing() {
    let gw = TestGateway::builder()
        .env("TROUPE__SESSIONS__MAX_WAITING_TURNS", "4")
        .env("TROUPE__SESSIONS__MAX_CONCURRENT_RUNS", "1")
        .env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "200")
        .start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let frames: Vec<(&str, Value)> = (0..12)
        .map(|i| {
            let params = json!({ "sessionKey": format!("agent:main:s{i}"), "message": format!("m{i}"), "idempotencyKey": format!("k{i}") });
            ("chat.send", params)
        })
        .collect();
    let ids = c.burst(&frames).await;
    let answers = c.responses_to(&ids, |_| false).await;
    let (accepted, refused): (Vec<&Value>, Vec<&Value>) =
        answers.values().partition(|a| a["ok"] == true);
    assert!(!refused.is_empty(), "the bound was reached");
    assert!(accepted.len() >= 4, "four waiting at least");
    for r in &refused {
        assert_eq!(r["error"]["code"], "UNAVAILABLE", "{r}");
        assert_eq!(r["error"]["details"]["code"], "QUEUE_FULL", "{r}");
        assert_eq!(r["error"]["retryable"], true, "{r}");
        assert!(r["error"]["retryAfterMs"].as_u64().unwrap() > 0, "{r}");
    }
    for a in &accepted {
        let run = a["payload"]["runId"].as_str().unwrap();
        let done = c
            .request(
                "agent.wait",
                Some(json!({ "runId": run, "timeoutMs": 30_000 })),
            )
            .await;
        assert_eq!(
            done["payload"]["status"], "ok",
            "every accepted turn ran: {done}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_idempotency_key_is_refused_with_the_limit() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let key = "k".repeat(300);
    let res = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": "agent:main:main", "message": "x", "idempotencyKey": key })),
        )
        .await;
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 256"),
        "{res}"
    );
    let http = reqwest::Client::new()
        .post(gw.http("/api/sessions/agent:main:main/messages"))
        .bearer_auth(&gw.token)
        .json(&json!({ "message": "x", "idempotencyKey": "k".repeat(300) }))
        .send()
        .await
        .expect("POST");
    assert_eq!(http.status(), 400);
}

#[test]
fn bad_bound_settings_exit_64_naming_the_key() {
    for (var, value, key) in [
        (
            "TROUPE__SESSIONS__MAX_WAITING_TURNS",
            "0",
            "sessions.max_waiting_turns",
        ),
        (
            "TROUPE__STORE__RETENTION_DAYS",
            "99999",
            "store.retention_days",
        ),
    ] {
        let (_dir, home) = fresh_home();
        let (code, _, err) = cli_env(&home, &["gateway", "run", "--port", "0"], &[(var, value)]);
        assert_eq!(code, 64, "{var}={value}: {err}");
        assert!(err.contains(key), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_writes_are_group_committed_and_timed_per_operation_in_metrics() {
    let gw = TestGateway::builder()
        .env("TROUPE__SESSIONS__LANE_CAPACITY", "100")
        .start();
    gw.wait_ready().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(gw.client().await);
    }
    let bursts = futures_util::future::join_all(clients.iter_mut().enumerate().map(|(n, c)| async move {
        let frames: Vec<(&str, Value)> = (0..25)
            .map(|i| {
                let params = json!({ "sessionKey": format!("agent:main:g{n}"), "message": "x", "idempotencyKey": format!("g{n}-{i}") });
                ("chat.send", params)
            })
            .collect();
        let ids = c.burst(&frames).await;
        c.responses_to(&ids, |_| false).await
    }))
    .await;
    assert!(
        bursts
            .iter()
            .flat_map(|b| b.values())
            .all(|a| a["ok"] == true)
    );
    let metrics = reqwest::get(gw.http("/metrics"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    // A turn into an idle session is accepted and started in one operation; the others
    // wait in the lane and are accepted alone.
    let accepted = value("troupe_store_op_seconds_count{op=\"accept_turn\"}")
        + value("troupe_store_op_seconds_count{op=\"accept_and_start\"}");
    assert!(accepted >= 100.0, "{metrics}");
    let (batches, writes) = (
        value("troupe_store_batches_total"),
        value("troupe_store_batched_writes_total"),
    );
    assert!(writes >= accepted, "{metrics}");
    assert!(
        batches < writes,
        "several writes share a transaction: {batches} / {writes}"
    );
}
