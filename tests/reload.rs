//! Config hot reload (DESIGN.md §9): the real gateway watching its config file; edits
//! apply by restarting only the children they concern while WebSocket clients stay
//! connected; invalid edits are refused and reported; restart-only keys are reported;
//! `config.patch` checks its base hash; `SIGHUP` reloads.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::path::Path;

use fake_telegram::FakeTelegram;
use serde_json::{Value, json};
use support::{TestGateway, WAIT, WsClient, eventually, node};

const TG_TOKEN: &str = "123456:TEST-token";

/// Replaces the config the way editors do: a new file renamed over the old one.
fn replace_config(home: &Path, text: &str) {
    let temp = home.join(".config.toml.swp");
    std::fs::write(&temp, text).expect("write temp config");
    std::fs::rename(&temp, home.join("config.toml")).expect("rename config");
}

fn write_config(home: &Path, text: &str) {
    std::fs::write(home.join("config.toml"), text).expect("write config");
}

async fn status(gw: &TestGateway) -> Value {
    reqwest::Client::new()
        .get(gw.http("/api/status"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET /api/status")
        .json::<Value>()
        .await
        .expect("status JSON")
}

/// Waits until `status.reload` satisfies `pred`; returns it.
async fn reload_status(gw: &TestGateway, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, what, || async {
        let reload = status(gw).await["reload"].clone();
        pred(&reload).then_some(reload)
    })
    .await
}

fn lists(value: &Value, item: &str) -> bool {
    value
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == item))
}

/// Runs one `agent` turn and returns its final response.
async fn turn(c: &mut WsClient, agent: &str, text: &str, key: &str) -> Value {
    let params = json!({ "message": text, "agentId": agent, "idempotencyKey": key });
    let id = c.send_request("agent", params).await;
    let mut done = c
        .responses_to(std::slice::from_ref(&id), |f| {
            f["payload"]["status"] == "accepted"
        })
        .await;
    done.remove(&id).expect("final response")
}

const MAIN_AGENT: &str = "[[agents]]\nid = \"main\"\nprovider = \"echo\"\nmodel = \"echo\"\n";

fn telegram(fake: &FakeTelegram, allow: &str) -> String {
    format!(
        "[[channels.telegram]]\naccount = \"main\"\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\ndm_policy = \"allowlist\"\nallow_from = [{allow}]\n",
        fake.api_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_adds_an_agent_and_a_job_changes_an_allowlist_and_the_log_level_keeping_clients()
{
    let fake = FakeTelegram::start(TG_TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    let before = format!(
        "[logging]\nlevel = \"info\"\n{MAIN_AGENT}{}",
        telegram(&fake, "\"111\"")
    );
    write_config(home.path(), &before);
    let gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .without_env("TROUPE__LOGGING__LEVEL")
        .start_in(home);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let conn_id = c.conn_id.clone();
    assert!(!conn_id.is_empty());
    let tree = gw.tree().await;
    assert!(node(&tree, "agent:helper").is_none());
    let main_started = node(&tree, "agent:main").expect("agent:main")["startedAt"].clone();

    let after = format!(
        "[logging]\nlevel = \"debug\"\n{MAIN_AGENT}[[agents]]\nid = \"helper\"\nprovider = \"echo\"\nmodel = \"echo\"\n{}\n[[cron.jobs]]\nid = \"tick\"\nschedule = \"every 1s\"\nagent = \"helper\"\nmessage = \"ping\"\n",
        telegram(&fake, "\"111\", \"222\"")
    );
    replace_config(gw.home(), &after);
    let reload = reload_status(&gw, "the edit is applied", |r| {
        lists(&r["lastApplied"], "agent:helper")
    })
    .await;
    for item in ["telegram:main", "scheduler", "logging.level"] {
        assert!(lists(&reload["lastApplied"], item), "{item}: {reload}");
    }
    assert!(reload["lastError"].is_null(), "{reload}");
    assert_eq!(reload["pendingRestart"], json!([]), "{reload}");

    // The new agent runs and answers; the unchanged one was not restarted.
    gw.child_restarted("agent:helper", 0).await;
    let tree = gw.tree().await;
    let main = node(&tree, "agent:main").expect("agent:main");
    assert_eq!(
        main["startedAt"], main_started,
        "agent:main was restarted: {main}"
    );
    let reply = turn(&mut c, "helper", "hi helper", "k1").await;
    assert_eq!(reply["payload"]["summary"], "echo: hi helper", "{reply}");

    // The job fires and records runs.
    eventually(WAIT, "the new job records an ok run", || async {
        let res = reqwest::Client::new()
            .get(gw.http("/api/cron/tick/runs?limit=100"))
            .bearer_auth(&gw.token)
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        body["runs"]
            .as_array()?
            .iter()
            .any(|r| r["outcome"] == "ok")
            .then_some(())
    })
    .await;

    // The allowlist now lets 222 in.
    gw.child_restarted("telegram:main", 1).await;
    fake.dm(222, "newly allowed");
    eventually(WAIT, "222 gets a reply", || async {
        let got = fake.texts_to(222);
        (got == ["echo: newly allowed"]).then_some(())
    })
    .await;

    // The log level is debug now.
    let log = gw.home().join("logs/troupe.log");
    eventually(WAIT, "a DEBUG line in the log", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("DEBUG").then_some(())
    })
    .await;

    // The same connection, still answering, and told about the reload.
    let res = c.request("health", None).await;
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(c.conn_id, conn_id);
    let event = c.event_where(|e| e["event"] == "config").await;
    assert!(
        lists(&event["payload"]["applied"], "agent:helper"),
        "{event}"
    );
    let tree = gw.tree().await;
    let ws = node(&tree, &format!("ws:{conn_id}")).expect("the client's node");
    assert_eq!(ws["state"], "running", "{ws}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_is_refused_and_reported_and_the_old_config_keeps_running() {
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), MAIN_AGENT);
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let mut c = gw.client().await;

    let bad = format!("{MAIN_AGENT}[[agents]]\nid = \"two\"\nprovider = \"nope\"\nmodel = \"m\"\n");
    write_config(gw.home(), &bad);
    let reload = reload_status(&gw, "the bad edit is reported", |r| {
        r["lastError"].is_string()
    })
    .await;
    let why = reload["lastError"].as_str().unwrap();
    assert!(why.contains("agents[1].provider"), "{why}");
    assert!(why.contains("nope"), "{why}");
    let tree = gw.tree().await;
    assert!(node(&tree, "agent:two").is_none(), "half-applied");
    let reply = turn(&mut c, "main", "still here", "k1").await;
    assert_eq!(reply["payload"]["summary"], "echo: still here", "{reply}");

    // Reverting to the running config clears the error without applying anything.
    write_config(gw.home(), MAIN_AGENT);
    reload_status(&gw, "the revert clears the error", |r| {
        r["lastError"].is_null()
    })
    .await;

    // A fixed edit applies.
    let good = bad.replace("\"nope\"", "\"echo\"");
    write_config(gw.home(), &good);
    let reload = reload_status(&gw, "the fixed edit applies", |r| {
        lists(&r["lastApplied"], "agent:two")
    })
    .await;
    assert!(reload["lastError"].is_null(), "{reload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_change_is_reported_as_needing_a_restart_and_not_applied() {
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), MAIN_AGENT);
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    write_config(gw.home(), &format!("[gateway]\nport = 1\n{MAIN_AGENT}"));
    let reload = reload_status(&gw, "the port change is pending", |r| {
        lists(&r["pendingRestart"], "gateway.port")
    })
    .await;
    assert!(reload["lastError"].is_null(), "{reload}");
    // Still serving on the same port, same connection.
    let res = c.request("health", None).await;
    assert_eq!(res["ok"], true, "{res}");
    // Reverting it clears the pending restart.
    write_config(gw.home(), MAIN_AGENT);
    reload_status(&gw, "nothing pending once reverted", |r| {
        r["pendingRestart"] == json!([])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_patch_refuses_a_stale_hash_and_applies_a_fresh_one() {
    let home = tempfile::tempdir().expect("tempdir");
    let secret = "hooktoken-0123456789";
    write_config(
        home.path(),
        &format!("{MAIN_AGENT}[hooks]\ntoken = \"{secret}\"\n"),
    );
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let mut c = gw.client().await;

    let got = c.request("config.get", None).await;
    assert_eq!(got["ok"], true, "{got}");
    let payload = &got["payload"];
    assert_eq!(
        payload["config"]["hooks"]["token"], "<redacted>",
        "{payload}"
    );
    assert!(!got.to_string().contains(secret), "secret leaked: {got}");
    let hash = payload["hash"].as_str().unwrap().to_string();

    let raw = format!(
        "{MAIN_AGENT}[[agents]]\nid = \"patched\"\nprovider = \"echo\"\nmodel = \"echo\"\n[hooks]\ntoken = \"{secret}\"\n"
    );
    let stale = c
        .request(
            "config.patch",
            Some(json!({ "raw": raw, "baseHash": "0".repeat(64) })),
        )
        .await;
    assert_eq!(stale["ok"], false, "{stale}");
    assert_eq!(
        stale["error"]["details"]["code"], "STALE_BASE_HASH",
        "{stale}"
    );

    let invalid = c
        .request(
            "config.patch",
            Some(json!({ "raw": "[gateway]\nport = \"x\"\n", "baseHash": hash })),
        )
        .await;
    assert_eq!(
        invalid["error"]["details"]["code"], "INVALID_CONFIG",
        "{invalid}"
    );
    assert!(
        invalid["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.port"),
        "{invalid}"
    );

    let applied = c
        .request(
            "config.patch",
            Some(json!({ "raw": raw, "baseHash": hash })),
        )
        .await;
    assert_eq!(applied["ok"], true, "{applied}");
    assert!(
        lists(&applied["payload"]["applied"], "agent:patched"),
        "{applied}"
    );
    gw.child_restarted("agent:patched", 0).await;
    let file = gw.home().join("config.toml");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), raw);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = c.request("config.get", None).await;
    assert_eq!(again["payload"]["hash"], applied["payload"]["hash"]);

    // Read scope may read the config, not patch it.
    let mut reader = WsClient::open(&gw.ws_url()).await;
    reader.connect(&gw.token, &["operator.read"]).await;
    let res = reader
        .request(
            "config.patch",
            Some(json!({ "raw": raw, "baseHash": hash })),
        )
        .await;
    assert_eq!(res["error"]["code"], "FORBIDDEN", "{res}");
    let rest: Value = reqwest::Client::new()
        .get(gw.http("/api/config"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET /api/config")
        .json()
        .await
        .expect("JSON");
    assert_eq!(rest["config"]["hooks"]["token"], "<redacted>", "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_even_with_the_watch_off() {
    let home = tempfile::tempdir().expect("tempdir");
    let off = format!("[gateway]\nreload = \"off\"\n{MAIN_AGENT}");
    write_config(home.path(), &off);
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let reload = status(&gw).await["reload"].clone();
    assert_eq!(reload["mode"], "off", "{reload}");
    write_config(
        gw.home(),
        &format!("{off}[[agents]]\nid = \"late\"\nprovider = \"echo\"\nmodel = \"echo\"\n"),
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    reload_status(&gw, "SIGHUP applies the edit", |r| {
        lists(&r["lastApplied"], "agent:late")
    })
    .await;
    gw.child_restarted("agent:late", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_account_removed_by_a_reload_leaves_health() {
    let fake = FakeTelegram::start(TG_TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(
        home.path(),
        &format!("{MAIN_AGENT}{}", telegram(&fake, "\"111\"")),
    );
    let gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home);
    let mut c = gw.client().await;
    eventually(WAIT, "telegram:main connected in health", || async {
        let mut c = gw.client().await;
        let h = c.request("health", None).await;
        (h["payload"]["channels"]["telegram:main"]["connected"] == true).then_some(())
    })
    .await;
    replace_config(gw.home(), MAIN_AGENT);
    reload_status(&gw, "the removal is applied", |r| {
        lists(&r["lastApplied"], "telegram:main")
    })
    .await;
    eventually(WAIT, "telegram:main gone from the tree", || async {
        node(&gw.tree().await, "telegram:main")
            .is_none()
            .then_some(())
    })
    .await;
    let h = c.request("health", None).await;
    assert_eq!(h["payload"]["channels"], json!({}), "{h}");
    assert_eq!(h["payload"]["channelsDegraded"], json!([]), "{h}");
}
