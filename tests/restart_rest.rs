//! `POST /api/restart`: a graceful stop, then the gateway comes back by itself (re-executed
//! in place, its socket handed over: same pid, same port, the store intact), or, under a
//! service manager, exits 0 for the manager to start it again.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

async fn post(gw: &TestGateway, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(gw.http(path))
        .bearer_auth(&gw.token)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("POST");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(gw: &TestGateway, path: &str) -> Option<Value> {
    let res = reqwest::Client::new()
        .get(gw.http(path))
        .bearer_auth(&gw.token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    (res.status() == 200).then_some(())?;
    res.json().await.ok()
}

fn starts_in_log(logs: &Value) -> usize {
    logs["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("gateway started")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_over_rest_comes_back_on_the_same_port_with_history_intact() {
    let mut gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let (status, _) = post(
        &gw,
        "/api/sessions/main/messages",
        json!({ "message": "remember me", "idempotencyKey": "k1" }),
    )
    .await;
    assert_eq!(status, 202);
    eventually(WAIT, "the reply is stored", || async {
        let page = get(&gw, "/api/sessions/main/messages").await?;
        (page["messages"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let mut client = gw.client().await;

    let (status, accepted) = post(&gw, "/api/restart", json!({})).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["how"], "reexec");
    let (frames, _) = client.until_closed().await;
    assert!(
        frames.iter().any(|f| f["event"] == "shutdown"),
        "connected clients are told: {frames:?}"
    );

    // The same port answers again, served by a new image of the same process.
    let logs = eventually(WAIT, "the gateway is back on the same port", || async {
        let logs = get(&gw, "/api/logs?target=troupe&limit=5000").await?;
        (starts_in_log(&logs) == 2).then_some(logs)
    })
    .await;
    assert_eq!(starts_in_log(&logs), 2, "started twice");
    gw.wait_ready().await;
    let status = get(&gw, "/api/status").await.expect("status");
    assert_eq!(status["pid"], gw.child.id(), "re-executed in place");
    let port: u16 = std::fs::read_to_string(gw.home().join("run/troupe.port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(port, gw.port, "the port file names the same port");
    let page = get(&gw, "/api/sessions/main/messages")
        .await
        .expect("history");
    assert_eq!(page["messages"][0]["text"], "remember me", "{page}");
    assert!(gw.child.try_wait().unwrap().is_none(), "still running");
    assert!(
        gw.terminate().success(),
        "the new image stops cleanly on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_service_manager_restart_exits_zero_for_it_to_start_again() {
    let mut gw = TestGateway::builder().env("TROUPE_SUPERVISED", "1").start();
    gw.wait_ready().await;
    let (status, accepted) = post(&gw, "/api/restart", json!({})).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["how"], "service-manager");
    let exit = gw.wait_exit();
    assert_eq!(exit.code(), Some(0));
    assert!(!gw.home().join("run/troupe.port").exists());
}
