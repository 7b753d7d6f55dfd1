//! Every bound refuses with a retryable error when reached and loses nothing (DESIGN.md
//! §11): waiting turns across all sessions, sessions one connection follows,
//! idempotency-key length, retention settings.
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
        (
            "TROUPE__SESSIONS__MAX_SUBSCRIPTIONS_PER_CONNECTION",
            "0",
            "sessions.max_subscriptions_per_connection",
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

/// Asserts `res` is the refusal of a request that would make its connection follow one
/// session too many.
fn assert_too_many_subscriptions(res: &Value) {
    assert_eq!(res["ok"], false, "{res}");
    assert_eq!(res["error"]["code"], "UNAVAILABLE", "{res}");
    assert_eq!(
        res["error"]["details"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{res}"
    );
    assert_eq!(res["error"]["retryable"], true, "{res}");
    assert!(res["error"]["retryAfterMs"].as_u64().unwrap() > 0, "{res}");
}

fn history_params(key: &str) -> Value {
    json!({ "sessionKey": key, "limit": 10 })
}

fn send_params(key: &str, message: &str, idem: &str) -> Value {
    json!({ "sessionKey": key, "message": message, "idempotencyKey": idem })
}

/// The messages of a session as another connection reads them.
async fn messages_of(c: &mut WsClient, key: &str) -> Vec<Value> {
    let res = c.request("chat.history", Some(history_params(key))).await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"]["messages"].as_array().unwrap().clone()
}

/// Waits for the `chat` final event of `run` on `c` (it follows the run's session).
async fn final_event(c: &mut WsClient, run: &Value) -> Value {
    let run = run.clone();
    tokio::time::timeout(
        WAIT,
        c.event_where(|e| {
            e["event"] == "chat" && e["payload"]["runId"] == run && e["payload"]["state"] == "final"
        }),
    )
    .await
    .expect("the chat final event of the run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1001st_session_on_a_connection_is_refused_retryably_and_a_reset_frees_a_slot() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    // 1000 distinct sessions followed through the cheap `chat.history`, pipelined in
    // bursts below the connection's in-flight limit (256).
    let keys: Vec<String> = (0..1000).map(|i| format!("agent:main:sub{i}")).collect();
    for chunk in keys.chunks(200) {
        let frames: Vec<(&str, Value)> = chunk
            .iter()
            .map(|k| ("chat.history", history_params(k)))
            .collect();
        let ids = c.burst(&frames).await;
        let answers = c.responses_to(&ids, |_| false).await;
        for a in answers.values() {
            assert_eq!(a["ok"], true, "{a}");
        }
    }
    // The 1001st: refused, retryable, naming the limit.
    let res = c
        .request("chat.history", Some(history_params("agent:main:one-more")))
        .await;
    assert_too_many_subscriptions(&res);
    let message = res["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1000") && message.contains("max_subscriptions_per_connection"),
        "{res}"
    );
    // A turn on a 1001st session is refused before acceptance: nothing is stored.
    let extra = "agent:main:extra";
    let res = c
        .request("chat.send", Some(send_params(extra, "lost?", "x1")))
        .await;
    assert_too_many_subscriptions(&res);
    let res = c
        .request(
            "agent",
            Some(json!({ "sessionKey": extra, "message": "lost?", "idempotencyKey": "x2" })),
        )
        .await;
    assert_too_many_subscriptions(&res);
    let mut other = gw.client().await;
    assert!(messages_of(&mut other, extra).await.is_empty());
    let rest: Value = reqwest::Client::new()
        .get(gw.http("/api/sessions"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET /api/sessions")
        .json()
        .await
        .expect("JSON");
    assert!(!rest.to_string().contains(extra), "{rest}");
    // A session the connection follows already still works, events included.
    let ack = c
        .request(
            "chat.send",
            Some(send_params("agent:main:sub7", "still here", "s7")),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    final_event(&mut c, &ack["payload"]["runId"]).await;
    // A reset frees a slot: the refused session can be followed now, and its turn runs,
    // its events reaching this connection; the one after it is refused again.
    let reset = c
        .request(
            "sessions.reset",
            Some(json!({ "sessionKey": "agent:main:sub3" })),
        )
        .await;
    assert_eq!(reset["payload"]["ok"], true, "{reset}");
    let ack = c
        .request("chat.send", Some(send_params(extra, "now it fits", "x3")))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    final_event(&mut c, &ack["payload"]["runId"]).await;
    let stored = messages_of(&mut other, extra).await;
    assert_eq!(stored.len(), 2, "the message and its reply: {stored:?}");
    let res = c
        .request("chat.history", Some(history_params("agent:main:sub3")))
        .await;
    assert_too_many_subscriptions(&res);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_limit_is_configurable_and_its_refusals_keep_the_order() {
    let gw = TestGateway::builder()
        .env("TROUPE__SESSIONS__MAX_SUBSCRIPTIONS_PER_CONNECTION", "2")
        .start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let a = "agent:main:a";
    // Pipelined: a turn, a refused third session, a second turn on a followed session
    // (the refusal runs nothing and overtakes nothing), then a delete that frees a slot
    // and a follow that takes it.
    let frames = [
        ("chat.send", send_params(a, "first", "o1")),
        ("chat.history", history_params("agent:main:b")),
        ("chat.history", history_params("agent:main:c")),
        ("chat.send", send_params(a, "second", "o2")),
        ("sessions.delete", json!({ "sessionKey": "agent:main:b" })),
        ("chat.history", history_params("agent:main:c")),
    ];
    let ids = c.burst(&frames).await;
    let answers = c.responses_to(&ids, |_| false).await;
    let answer = |i: usize| &answers[&ids[i]];
    assert_eq!(answer(0)["ok"], true, "{}", answer(0));
    assert_eq!(answer(1)["ok"], true, "{}", answer(1));
    assert_too_many_subscriptions(answer(2));
    assert_eq!(answer(3)["ok"], true, "{}", answer(3));
    assert_eq!(answer(4)["ok"], true, "{}", answer(4));
    assert_eq!(answer(5)["ok"], true, "{}", answer(5));
    final_event(&mut c, &answer(3)["payload"]["runId"]).await;
    let mut other = gw.client().await;
    let texts: Vec<String> = messages_of(&mut other, a)
        .await
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["text"].to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("first") && texts[1].contains("second"),
        "{texts:?}"
    );
    // A new connection has its own slots.
    let mut fresh = gw.client().await;
    for key in ["agent:main:b", "agent:main:c"] {
        let res = fresh
            .request("chat.history", Some(history_params(key)))
            .await;
        assert_eq!(res["ok"], true, "{res}");
    }
}
