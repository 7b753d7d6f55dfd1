//! The scheduler end to end (DESIGN §9): jobs added over WS and from config fire on their
//! schedules and every fire, skip and miss is in the run ledger (WS, REST, CLI); overlap
//! skips are recorded; fires due while the gateway was down are recorded as missed or run
//! once; a one-shot `at` job never fires again after a restart; a bad expression is refused
//! with an example; a heartbeat answered `NO_REPLY` delivers nothing. (Translation table and
//! DST: unit tests in `actors/src/scheduler/schedule.rs`.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use std::time::Duration;

use fake_llm::{FakeLlm, Script};
use serde_json::{Value, json};
use support::*;

const LONG: Duration = Duration::from_secs(60);

async fn admin(gw: &TestGateway) -> WsClient {
    gw.client().await
}

async fn runs(c: &mut WsClient, id: &str) -> Vec<Value> {
    let res = c
        .request("cron.runs", Some(json!({ "id": id, "limit": 1000 })))
        .await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"]["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn job(c: &mut WsClient, id: &str) -> Value {
    let res = c.request("cron.list", None).await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"]["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

/// The job's ledger over REST (usable inside `eventually`).
async fn ledger(gw: &TestGateway, id: &str) -> Vec<Value> {
    let res = reqwest::Client::new()
        .get(gw.http(&format!("/api/cron/{id}/runs?limit=1000")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET runs");
    let body: Value = res.json().await.expect("runs JSON");
    body["runs"].as_array().cloned().unwrap_or_default()
}

fn outcomes(rows: &[Value], outcome: &str) -> usize {
    rows.iter().filter(|r| r["outcome"] == outcome).count()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn home_with_config(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join("config.toml"), config).expect("config.toml");
    home
}

/// Stops the gateway gracefully and hands back its state dir.
fn stop(mut gw: TestGateway) -> tempfile::TempDir {
    assert!(gw.terminate().success());
    std::mem::replace(&mut gw.home, tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_job_fires_and_records_its_runs_over_ws_rest_and_cli() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    let added = c
        .request(
            "cron.add",
            Some(json!({ "job": { "id": "tick", "schedule": "every 1s", "agentId": "main", "message": "ping" } })),
        )
        .await;
    assert_eq!(added["ok"], true, "{added}");
    assert_eq!(added["payload"]["job"]["sessionKey"], "cron:tick");
    let event = c
        .event_where(|e| e["event"] == "cron" && e["payload"]["jobId"] == "tick")
        .await;
    assert!(event["payload"]["outcome"].is_string(), "{event}");
    let rows = eventually(LONG, "two ok runs of `tick`", || {
        let gw = &gw;
        async move {
            let rows = ledger(gw, "tick").await;
            (outcomes(&rows, "ok") >= 2).then_some(rows)
        }
    })
    .await;
    let ok = rows.iter().find(|r| r["outcome"] == "ok").unwrap();
    assert!(ok["runId"].is_string(), "{ok}");
    assert!(ok["durationMs"].is_i64(), "{ok}");
    assert!(ok["firedAt"].as_i64().unwrap() >= ok["scheduledAt"].as_i64().unwrap());
    // The fires are on the schedule's grid (anchored), never "now + 1s" drift.
    let scheduled: Vec<i64> = rows
        .iter()
        .map(|r| r["scheduledAt"].as_i64().unwrap())
        .collect();
    for pair in scheduled.windows(2) {
        assert_eq!((pair[0] - pair[1]) % 1000, 0, "{scheduled:?}");
    }
    // The turn ran in the job's session.
    let history = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": "cron:tick", "limit": 10 })),
        )
        .await;
    assert!(history.to_string().contains("echo: ping"), "{history}");

    let http = reqwest::Client::new();
    let list: Value = http
        .get(gw.http("/api/cron"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"][0]["id"], "tick", "{list}");
    assert!(list["jobs"][0]["nextFireAt"].is_i64(), "{list}");
    let ledger: Value = http
        .get(gw.http("/api/cron/tick/runs?limit=1"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["runs"].as_array().unwrap().len(), 1, "{ledger}");

    let (code, out, err) = cli(gw.home(), &["cron", "runs", "tick", "--limit", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"jobId\": \"tick\""), "{out}");
    // Disabling a job stops its fires; the CLI refuses a bad schedule with examples.
    let updated = c
        .request(
            "cron.update",
            Some(json!({ "id": "tick", "patch": { "enabled": false } })),
        )
        .await;
    assert_eq!(updated["ok"], true, "{updated}");
    assert!(
        updated["payload"]["job"]["nextFireAt"].is_null(),
        "{updated}"
    );
    let (code, out, err) = cli(
        gw.home(),
        &[
            "cron",
            "add",
            "nope",
            "--schedule",
            "every often",
            "--message",
            "x",
        ],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("examples of valid schedules"), "{out}{err}");
    let (code, out, err) = cli(gw.home(), &["cron", "rm", "tick"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(job(&mut c, "tick").await, Value::Null);
    let missing = http
        .get(gw.http("/api/cron/tick"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_while_the_previous_run_is_active_is_recorded_as_skipped() {
    // Echo streams one word per 300 ms: a 12-word message outlasts the 1 s interval.
    let gw = TestGateway::builder()
        .env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "300")
        .start();
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    let message = "one two three four five six seven eight nine ten eleven twelve";
    let added = c
        .request(
            "cron.add",
            Some(json!({ "job": { "id": "slow", "schedule": "every 1s", "agentId": "main", "message": message } })),
        )
        .await;
    assert_eq!(added["ok"], true, "{added}");
    let skipped = eventually(LONG, "a skipped fire of `slow`", || {
        let gw = &gw;
        async move {
            let rows = ledger(gw, "slow").await;
            rows.into_iter().find(|r| r["outcome"] == "skipped")
        }
    })
    .await;
    assert!(
        skipped["reason"].as_str().unwrap().contains("still active"),
        "{skipped}"
    );
    assert!(skipped["runId"].is_null(), "{skipped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_expression_is_refused_with_the_reason_and_an_example() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    let res = c
        .request(
            "cron.add",
            Some(json!({ "job": { "id": "bad", "schedule": "61 * * * *", "agentId": "main", "message": "x" } })),
        )
        .await;
    assert_eq!(res["ok"], false, "{res}");
    let message = res["error"]["message"].as_str().unwrap();
    assert!(message.contains("61"), "{message}");
    assert!(message.contains("examples of valid schedules"), "{message}");
    assert!(message.contains("@daily"), "{message}");
    // A read-only client may list but not add.
    let mut reader = WsClient::open(&gw.ws_url()).await;
    reader.connect(&gw.token, &["operator.read"]).await;
    let denied = reader
        .request(
            "cron.add",
            Some(json!({ "job": { "id": "x", "schedule": "@daily", "agentId": "main", "message": "x" } })),
        )
        .await;
    assert_eq!(
        denied["error"]["details"]["code"], "MISSING_SCOPE",
        "{denied}"
    );

    // In config, the same mistake stops the gateway with exit 64 naming the key.
    let home = home_with_config(
        "[[cron.jobs]]\nid = \"bad\"\nschedule = \"0 0 * * 8\"\nmessage = \"x\"\n",
    );
    let (code, out, err) = cli(home.path(), &["gateway", "run", "--port", "0"]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("cron.jobs[0].schedule"), "{err}");
    assert!(err.contains("examples of valid schedules"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_due_while_the_gateway_was_down_are_missed_or_run_once() {
    let home = home_with_config(
        r#"
[[cron.jobs]]
id = "skipper"
schedule = "every 1s"
message = "skip me"

[[cron.jobs]]
id = "catcher"
schedule = "every 1s"
message = "catch up"
catch_up = "run_once"
"#,
    );
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    let config_job = job(&mut c, "skipper").await;
    assert_eq!(config_job["source"], "config", "{config_job}");
    let refused = c
        .request("cron.remove", Some(json!({ "id": "skipper" })))
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    eventually(LONG, "both jobs fired once", || {
        let gw = &gw;
        async move {
            let a = outcomes(&ledger(gw, "skipper").await, "ok");
            let b = outcomes(&ledger(gw, "catcher").await, "ok");
            (a >= 1 && b >= 1).then_some(())
        }
    })
    .await;
    drop(c);
    let home = stop(gw);
    // Stay down until at least two fires of each job have come due.
    let down_since = now_ms();
    eventually(
        LONG,
        "two fires pass while the gateway is down",
        || async move { (now_ms() > down_since + 2500).then_some(()) },
    )
    .await;

    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let missed = eventually(LONG, "`skipper` records its misses", || {
        let gw = &gw;
        async move {
            let rows = ledger(gw, "skipper").await;
            (outcomes(&rows, "missed") >= 2).then_some(rows)
        }
    })
    .await;
    let miss = missed.iter().find(|r| r["outcome"] == "missed").unwrap();
    assert!(miss["reason"].as_str().unwrap().contains("down"), "{miss}");
    assert!(miss["firedAt"].is_null(), "{miss}");
    assert!(
        missed
            .iter()
            .all(|r| !r["reason"].as_str().unwrap_or("").contains("catch-up")),
        "skip never runs a catch-up: {missed:?}"
    );
    let caught = eventually(LONG, "`catcher` runs its catch-up once", || {
        let gw = &gw;
        async move {
            let rows = ledger(gw, "catcher").await;
            rows.iter()
                .any(|r| {
                    r["outcome"] == "ok" && r["reason"].as_str().unwrap_or("").contains("catch-up")
                })
                .then_some(rows)
        }
    })
    .await;
    let catch_ups = caught
        .iter()
        .filter(|r| r["reason"].as_str().unwrap_or("").contains("catch-up"))
        .count();
    assert_eq!(catch_ups, 1, "{caught:?}");
    assert!(
        outcomes(&caught, "missed") >= 1,
        "the other misses are listed: {caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_job_fires_once_and_never_again_after_a_restart() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let schedule = format!(
        "at {}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let added = c
        .request(
            "cron.add",
            Some(json!({ "job": { "id": "once", "schedule": schedule, "agentId": "main", "message": "just once" } })),
        )
        .await;
    assert_eq!(added["ok"], true, "{added}");
    eventually(LONG, "`once` fires", || {
        let gw = &gw;
        async move { (outcomes(&ledger(gw, "once").await, "ok") == 1).then_some(()) }
    })
    .await;
    assert!(job(&mut c, "once").await["nextFireAt"].is_null());
    drop(c);
    let home = stop(gw);

    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    // A witness job proves the restarted scheduler has been firing for a while.
    let added = c
        .request(
            "cron.add",
            Some(json!({ "job": { "id": "witness", "schedule": "every 1s", "agentId": "main", "message": "w" } })),
        )
        .await;
    assert_eq!(added["ok"], true, "{added}");
    eventually(LONG, "the witness fires twice", || {
        let gw = &gw;
        async move { (outcomes(&ledger(gw, "witness").await, "ok") >= 2).then_some(()) }
    })
    .await;
    let rows = runs(&mut c, "once").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let once = job(&mut c, "once").await;
    assert!(once["nextFireAt"].is_null(), "{once}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_answered_no_reply_delivers_nothing() {
    let fake = FakeLlm::start();
    for _ in 0..200 {
        fake.push(Script::reply("NO_REPLY", 1));
    }
    let home = home_with_config(
        r#"
[[agents]]
id = "main"
provider = "echo"
model = "echo"
heartbeat = { every = "1s", message = "beat" }

[[agents]]
id = "quiet"
provider = "openai"
model = "fake-model"
heartbeat = { every = "1s", message = "anything to report?", active_hours = "00:00-24:00" }
"#,
    );
    let gw = TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test")
        .start_in(home);
    gw.wait_ready().await;
    let mut c = admin(&gw).await;
    let quiet = c
        .event_where(|e| e["event"] == "heartbeat" && e["payload"]["agentId"] == "quiet")
        .await;
    assert_eq!(quiet["payload"]["status"], "ok", "{quiet}");
    assert_eq!(quiet["payload"]["delivered"], false, "{quiet}");
    assert!(quiet["payload"].get("text").is_none(), "{quiet}");
    let spoken = c
        .event_where(|e| e["event"] == "heartbeat" && e["payload"]["agentId"] == "main")
        .await;
    assert_eq!(spoken["payload"]["delivered"], true, "{spoken}");
    assert_eq!(spoken["payload"]["text"], "echo: beat", "{spoken}");
    let sent = fake.requests();
    assert!(
        sent.iter()
            .any(|r| r.body.to_string().contains("anything to report?")),
        "the heartbeat turn reached the model"
    );
}
