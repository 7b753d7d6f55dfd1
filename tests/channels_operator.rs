//! Channel operator surface (DESIGN.md §8): the tree's backoff timing, WS `send`, probes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use fake_telegram::FakeTelegram;
use serde_json::{Value, json};
use support::{GatewayBuilder, TestGateway, WAIT, eventually, node};

const TOKEN: &str = "123456:TEST-token";

fn builder() -> GatewayBuilder {
    TestGateway::builder().env("TG_TEST_TOKEN", TOKEN)
}

/// A home whose `telegram:main` polls `fake`.
fn home_for(fake: &FakeTelegram) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[[channels.telegram]]\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\n",
        fake.api_url()
    );
    std::fs::write(home.path().join("config.toml"), config).expect("write config");
    home
}

async fn send(gw: &TestGateway, params: Value) -> Value {
    let mut c = gw.client().await;
    c.request("send", Some(params)).await
}

fn to_chat(key: &str, text: &str) -> Value {
    json!({ "channel": "telegram", "account": "main", "to": "777", "message": text, "idempotencyKey": key })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_send_delivers_once_per_idempotency_key_even_across_a_restart() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = builder().start_in(home_for(&fake));
    gw.wait_ready().await;
    let first = send(&gw, to_chat("k1", "hello from the operator")).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["payload"]["state"], "sent", "{first}");
    assert_eq!(first["payload"]["duplicate"], false, "{first}");
    assert!(first["payload"]["deliveryId"].as_i64().is_some(), "{first}");
    assert_eq!(fake.texts_to(777), vec!["hello from the operator"]);

    let again = send(&gw, to_chat("k1", "hello from the operator")).await;
    assert_eq!(again["payload"]["duplicate"], true, "{again}");
    assert_eq!(
        again["payload"]["deliveryId"],
        first["payload"]["deliveryId"]
    );
    assert_eq!(again["payload"]["state"], "sent", "{again}");

    // A send the platform has not taken when the gateway dies goes out after the restart.
    fake.hold_sends(true);
    let held = send(&gw, to_chat("k2", "owed across a crash")).await;
    assert_eq!(held["payload"]["state"], "pending", "{held}");
    let home = gw.kill9();
    fake.drop_held_sends();
    fake.hold_sends(false);
    let gw = builder().start_in(home);
    eventually(WAIT, "the owed send goes out after the restart", || async {
        (fake.texts_to(777).len() == 2).then_some(())
    })
    .await;
    let after = send(&gw, to_chat("k1", "hello from the operator")).await;
    assert_eq!(after["payload"]["duplicate"], true, "{after}");
    let k2 = send(&gw, to_chat("k2", "owed across a crash")).await;
    assert_eq!(k2["payload"]["duplicate"], true, "{k2}");
    assert_eq!(k2["payload"]["state"], "sent", "{k2}");
    assert_eq!(
        fake.texts_to(777),
        vec!["hello from the operator", "owed across a crash"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_send_to_an_unknown_channel_or_account_is_invalid_naming_it() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = builder().start_in(home_for(&fake));
    gw.wait_ready().await;
    let mut p = to_chat("k", "x");
    p["account"] = json!("nope");
    let res = send(&gw, p).await;
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nope\""),
        "{res}"
    );
    let mut p = to_chat("k", "x");
    p["channel"] = json!("fax");
    let res = send(&gw, p).await;
    assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"fax\""),
        "{res}"
    );
    assert!(fake.sent().is_empty());
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A Telegram API URL on a port where nothing listens.
fn closed_api_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_channel_shows_backoff_with_its_next_attempt_time_in_status() {
    let home = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[[channels.telegram]]\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\n",
        closed_api_url()
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", "1:tok")
        .start_in(home);
    let (next, exit_at, seen_at) = eventually(WAIT, "telegram:main in backoff", || async {
        let tree = gw.tree().await;
        let seen_at = now_ms();
        let n = node(&tree, "telegram:main")?.clone();
        if n["state"] != "backoff" {
            return None;
        }
        let next = n["nextAttemptAt"]
            .as_u64()
            .expect("nextAttemptAt while in backoff");
        Some((next, n["lastExit"]["at"].as_u64()?, seen_at))
    })
    .await;
    // Every delay is at least 3/4 of the 1 s minimum after the exit that started it.
    assert!(
        next >= exit_at + 500,
        "next attempt {next} not in the future of the exit at {exit_at}"
    );
    // The status was taken before `seen_at`, so the attempt may be due by then, not long before.
    assert!(
        next + 60_000 > seen_at,
        "next attempt {next} long past ({seen_at})"
    );
    // Once running (or starting) again, the field is gone.
    let tree = gw.tree().await;
    let n = node(&tree, "telegram:main").unwrap();
    if n["state"] != "backoff" {
        assert!(n.get("nextAttemptAt").is_none(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_status_probe_checks_each_token_live() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = builder().start_in(home_for(&fake));
    gw.wait_ready().await;
    eventually(WAIT, "telegram:main connected", || async {
        let node = node(&gw.tree().await, "telegram:main")?.clone();
        (node["state"] == "running").then_some(())
    })
    .await;
    let home = gw.home().to_path_buf();
    let args = ["channels", "status", "--probe"];
    let (code, out, err) = tokio::task::spawn_blocking(move || support::cli(&home, &args))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let probe = &v["channels"][0]["probe"];
    assert_eq!(probe["ok"], true, "{v}");
    assert_eq!(probe["bot"], fake_telegram::BOT_USERNAME, "{v}");
    // Without --probe no live check is made.
    let home = gw.home().to_path_buf();
    let args = ["channels", "status"];
    let (_, out, _) = tokio::task::spawn_blocking(move || support::cli(&home, &args))
        .await
        .unwrap();
    assert!(!out.contains("\"probe\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_status_and_doctor_report_each_channel_account() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = builder().start_in(home_for(&fake));
    gw.wait_ready().await;
    eventually(WAIT, "telegram:main connected", || async {
        let node = node(&gw.tree().await, "telegram:main")?.clone();
        (node["state"] == "running").then_some(())
    })
    .await;
    let home = gw.home().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        support::cli_env(
            &home,
            &["gateway", "status", "--json"],
            &[("TG_TEST_TOKEN", TOKEN)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let channels = &v["status"]["channels"];
    assert_eq!(channels["count"], 1, "{v}");
    assert_eq!(channels["accounts"][0]["id"], "telegram:main", "{v}");
    assert_eq!(channels["accounts"][0]["state"], "running", "{v}");

    let home = gw.home().to_path_buf();
    let (_, out, err) = tokio::task::spawn_blocking(move || {
        support::cli_env(&home, &["doctor"], &[("TG_TEST_TOKEN", TOKEN)])
    })
    .await
    .unwrap();
    assert!(
        out.contains("ok   channel telegram:main: bot token present"),
        "{out}{err}"
    );
    assert!(
        out.contains("ok   channel telegram:main in the running gateway: running"),
        "{out}{err}"
    );
    assert!(!out.contains("TEST-token"), "{out}");
}

/// How often the store answered "where does this send stand" so far (from `/metrics`).
async fn send_status_reads(gw: &TestGateway) -> u64 {
    let text = reqwest::get(gw.http("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("troupe_store_op_seconds_count{op=\"channel_send_status\"} "))
        .map(|n| n.trim().parse().expect("a count"))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_send_is_woken_by_the_channel_actor_instead_of_polling_the_store() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = builder().start_in(home_for(&fake));
    gw.wait_ready().await;
    let before = send_status_reads(&gw).await;
    fake.hold_sends(true);
    let mut c = gw.client().await;
    let id = c
        .send_request("send", to_chat("push", "pushed, not polled"))
        .await;
    eventually(WAIT, "the fake Telegram holds the send", || async {
        fake.held_chats().contains(&777).then_some(())
    })
    .await;
    // While the platform holds the send, time passes (two more long polls of 1 s each)
    // and the waiting `send` must not ask the store again.
    let polls = fake.polls_completed();
    eventually(WAIT, "two more long polls", || async {
        (fake.polls_completed() >= polls + 2).then_some(())
    })
    .await;
    let during = send_status_reads(&gw).await - before;
    assert!(
        during <= 1,
        "send asked the store {during} times while waiting"
    );
    fake.hold_sends(false);
    let res = c.response(&id).await;
    assert_eq!(res["payload"]["state"], "sent", "{res}");
    assert_eq!(
        res["payload"]["messageIds"].as_array().map(Vec::len),
        Some(1),
        "{res}"
    );
    let total = send_status_reads(&gw).await - before;
    assert!(total <= 2, "send asked the store {total} times");
}
