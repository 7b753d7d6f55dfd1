//! The control UI's admin views end to end, in headless Chromium (as tests/ui.rs): the
//! config editor (a save that hot-reloads and persists with the secrets kept, a stale save
//! that keeps the operator's text, an invalid one that leaves the file untouched), the log
//! viewer (a line written after it opened, the level filter, the row bound), the cron form
//! (add with a field error first, edit, disable, remove) and the channels' send form
//! (against the fake Telegram). The browser tests take turns.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/browser.rs"]
mod browser;
#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::sync::LazyLock;
use std::time::Duration;

use browser::Browser;
use fake_telegram::FakeTelegram;
use fantoccini::Locator;
use serde_json::{Value, json};
use support::TestGateway;
use tokio::sync::Mutex;

/// Generous: Chromium and the gateway share two loaded cores.
const UI_WAIT: Duration = Duration::from_secs(60);

static ONE_BROWSER: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

const HOOK_SECRET: &str = "hook-secret-0123456789";
/// A secret commented out in the file.
const OLD_SECRET: &str = "old-hook-secret-9876543210";

/// Opens the page, types the token and waits for the connected state.
async fn open_logged_in(gw: &TestGateway) -> Browser {
    let b = Browser::start(1200, 900).await;
    b.client.goto(&gw.http("/")).await.expect("open the page");
    let input = b
        .client
        .wait()
        .at_most(UI_WAIT)
        .for_element(Locator::Css("#secret"))
        .await
        .expect("the token field");
    input.send_keys(&gw.token).await.expect("type the token");
    b.client
        .find(Locator::Css("#login-form button[type=submit]"))
        .await
        .expect("the connect button")
        .click()
        .await
        .expect("click connect");
    b.wait_for(
        UI_WAIT,
        "the page says it is connected",
        "return document.getElementById('conn-status').dataset.state === 'connected' && !document.getElementById('main').hidden",
    )
    .await;
    b
}

async fn tab(b: &Browser, name: &str) {
    b.js(&format!(
        "document.getElementById('tab-{name}').click(); return true"
    ))
    .await;
}

/// Sets a field's value as typing would (an `input` event follows).
async fn set_value(b: &Browser, id: &str, value: &str) {
    b.js(&format!(
        "const e = document.getElementById({id:?}); e.value = {value:?}; e.dispatchEvent(new Event('input', {{bubbles: true}})); e.dispatchEvent(new Event('change', {{bubbles: true}})); return true"
    ))
    .await;
}

async fn click(b: &Browser, id: &str) {
    b.js(&format!(
        "document.getElementById({id:?}).click(); return true"
    ))
    .await;
}

/// Waits until the element shows text containing `part`; returns its text.
async fn shows(b: &Browser, id: &str, part: &str) -> String {
    let v = b
        .wait_for(
            UI_WAIT,
            &format!("#{id} showing {part:?}"),
            &format!(
                "const e = document.getElementById({id:?}); return !e.hidden && e.textContent.includes({part:?}) && e.textContent"
            ),
        )
        .await;
    v.as_str().unwrap_or_default().to_string()
}

async fn editor_text(b: &Browser) -> String {
    b.js("return document.getElementById('config-text').value")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_config_editor_saves_reloads_and_refuses_stale_or_invalid_edits() {
    let _turn = ONE_BROWSER.lock().await;
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "# my gateway\n# token = \"{OLD_SECRET}\"\n[hooks]\ntoken = \"{HOOK_SECRET}\" # for webhooks\n"
        ),
    )
    .expect("config.toml");
    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let b = open_logged_in(&gw).await;
    tab(&b, "config").await;
    b.wait_for(
        UI_WAIT,
        "the config file in the editor, its secret redacted",
        "return document.getElementById('config-text').value.includes('token = \"<redacted>\" # for webhooks')",
    )
    .await;
    let shown = editor_text(&b).await;
    assert!(
        !shown.contains(HOOK_SECRET) && !shown.contains(OLD_SECRET),
        "no secret is shown, not even one in a comment: {shown}"
    );
    assert!(shown.starts_with("# my gateway\n"), "{shown}");
    shows(&b, "config-note", "hooks.token").await;

    // A hot-reloadable edit: a second agent.
    let edited = format!(
        "{shown}\n[[agents]]\nid = \"main\"\nprovider = \"echo\"\nmodel = \"echo\"\n\n[[agents]]\nid = \"helper\"\nprovider = \"echo\"\nmodel = \"echo\"\n"
    );
    set_value(&b, "config-text", &edited).await;
    shows(&b, "config-dirty", "unsaved").await;
    click(&b, "config-save").await;
    let status = shows(&b, "config-status", "Saved").await;
    assert!(status.contains("agent:helper"), "what reloaded: {status}");
    let warned = b
        .js("return !document.getElementById('config-changed').hidden")
        .await;
    assert_eq!(warned, false, "the page's own save is not a change on disk");
    b.screenshot("config").await;
    let mut c = gw.client().await;
    let agents = c.request("agents.list", None).await;
    let ids: Vec<&str> = agents["payload"]["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(ids.contains(&"helper"), "the new agent runs: {agents}");
    let on_disk = std::fs::read_to_string(&file).expect("read config.toml");
    assert!(on_disk.contains("id = \"helper\""), "{on_disk}");
    assert!(
        on_disk.contains(&format!("token = \"{HOOK_SECRET}\" # for webhooks")),
        "the stored secret is kept where the editor had <redacted>: {on_disk}"
    );
    assert!(
        on_disk.starts_with(&format!("# my gateway\n# token = \"{OLD_SECRET}\"\n")),
        "the commented-out secret is kept as written: {on_disk}"
    );

    // A stale save: the file changes on disk while the operator edits.
    let mine = format!("{edited}\n# typed in the browser\n");
    set_value(&b, "config-text", &mine).await;
    let by_hand = format!("{on_disk}\n# changed by hand\n");
    std::fs::write(&file, &by_hand).expect("edit config.toml by hand");
    click(&b, "config-save").await;
    shows(&b, "config-error", "changed on disk").await;
    assert_eq!(editor_text(&b).await, mine, "the operator's text is kept");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read config.toml"),
        by_hand,
        "the stale save wrote nothing"
    );

    // An invalid value: the gateway's error (key and reason), the file untouched.
    click(&b, "config-reload").await;
    b.wait_for(
        UI_WAIT,
        "the file as changed by hand, after Reload from disk",
        "return document.getElementById('config-text').value.includes('# changed by hand')",
    )
    .await;
    let fresh = editor_text(&b).await;
    set_value(
        &b,
        "config-text",
        &format!("{fresh}\n[sessions]\nlane_capacity = 0\n"),
    )
    .await;
    click(&b, "config-save").await;
    let error = shows(&b, "config-error", "lane_capacity").await;
    assert!(error.contains("unchanged"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read config.toml"),
        by_hand,
        "the invalid save left the file untouched"
    );
    b.close().await;
}

#[tokio::test]
async fn the_log_viewer_follows_new_lines_and_filters_by_level() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let b = open_logged_in(&gw).await;
    tab(&b, "logs").await;
    b.wait_for(
        UI_WAIT,
        "the start-up lines",
        "return document.querySelectorAll('#logs-list li').length > 0",
    )
    .await;
    // Written after the view opened: a config edit that is reloaded (info) and needs a
    // restart for one key (warn).
    let mut c = gw.client().await;
    let got = c.request("config.get", None).await;
    let hash = got["payload"]["hash"].as_str().expect("hash").to_string();
    let raw = got["payload"]["raw"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let patched = c
        .request(
            "config.patch",
            Some(json!({ "raw": format!("{raw}\n[sessions]\nlane_capacity = 7\n"), "baseHash": hash })),
        )
        .await;
    assert_eq!(patched["ok"], true, "{patched}");
    let line = |level: &str, text: &str| {
        format!(
            "return [...document.querySelectorAll('#logs-list li')].some(li => li.dataset.level === {level:?} && li.textContent.includes({text:?}))"
        )
    };
    b.wait_for(
        UI_WAIT,
        "the reload's info line, followed",
        &line("info", "config reloaded"),
    )
    .await;
    b.wait_for(
        UI_WAIT,
        "the pending-restart warning, followed",
        &line("warn", "need a restart"),
    )
    .await;
    set_value(&b, "logs-level", "warn").await;
    b.wait_for(
        UI_WAIT,
        "only warnings and errors, the warning among them",
        "const rows = [...document.querySelectorAll('#logs-list li')]; return rows.length > 0 && rows.every(li => li.dataset.level === 'warn' || li.dataset.level === 'error') && rows.some(li => li.textContent.includes('need a restart'))",
    )
    .await;
    b.screenshot("logs").await;
    set_value(&b, "logs-level", "").await;
    set_value(&b, "logs-target", "troupe::reload").await;
    b.js("document.querySelector('#logs-form button[type=submit]').click(); return true")
        .await;
    b.wait_for(
        UI_WAIT,
        "only lines of the target troupe::reload",
        "const rows = [...document.querySelectorAll('#logs-list .target')]; return rows.length > 0 && rows.every(t => t.textContent.startsWith('troupe::reload'))",
    )
    .await;

    // A burst of 600 lines (appended to the log file as the gateway writes them): follow
    // shows the newest, and the list stays at 500 rows.
    set_value(&b, "logs-target", "").await;
    b.js("document.querySelector('#logs-form button[type=submit]').click(); return true")
        .await;
    b.wait_for(
        UI_WAIT,
        "the unfiltered list again",
        &line("info", "config reloaded"),
    )
    .await;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let burst: String = (0..600)
        .map(|i| format!("{now}  INFO troupe::burst: burst line {i:04}\n"))
        .collect();
    let log = gw.home().join("logs/troupe.log");
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open the log file");
    std::io::Write::write_all(&mut out, burst.as_bytes()).expect("append the burst");
    b.wait_for(
        UI_WAIT,
        "the newest burst line, and no more than 500 rows",
        "const rows = document.querySelectorAll('#logs-list li'); return rows.length <= 500 && [...rows].some(li => li.textContent.includes('burst line 0599'))",
    )
    .await;
    let rows = b
        .js("const rows = [...document.querySelectorAll('#logs-list li')]; return [rows.length, rows.some(li => li.textContent.includes('burst line 0000'))]")
        .await;
    assert_eq!(
        rows,
        json!([500, false]),
        "bounded at 500 rows, the oldest dropped"
    );
    b.close().await;
}

async fn cron_jobs(gw: &TestGateway) -> Vec<Value> {
    let mut c = gw.client().await;
    let list = c.request("cron.list", None).await;
    list["payload"]["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_cron_form_adds_edits_disables_and_removes_a_job() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let b = open_logged_in(&gw).await;
    tab(&b, "cron").await;
    b.wait_for(
        UI_WAIT,
        "the empty state and the agent choices",
        "return !document.getElementById('cron-empty').hidden && [...document.getElementById('cron-agent').options].some(o => o.value === 'main')",
    )
    .await;
    set_value(&b, "cron-id", "nightly").await;
    set_value(&b, "cron-schedule", "61 * * * *").await;
    set_value(&b, "cron-message", "summarize the day").await;
    click(&b, "cron-submit").await;
    let error = shows(&b, "cron-err-schedule", "schedule").await;
    assert!(!error.is_empty());
    let invalid = b
        .js("return document.getElementById('cron-schedule').getAttribute('aria-invalid')")
        .await;
    assert_eq!(invalid, "true", "the field is marked");
    assert!(cron_jobs(&gw).await.is_empty(), "nothing was added");

    set_value(&b, "cron-schedule", "0 3 * * *").await;
    click(&b, "cron-submit").await;
    shows(&b, "cron-form-status", "Added job nightly").await;
    let row = "document.querySelector('#cron-table tr[data-job=\"nightly\"]')";
    b.wait_for(
        UI_WAIT,
        "the job listed",
        &format!("return !!{row} && {row}.dataset.enabled === 'true'"),
    )
    .await;
    b.screenshot("cron").await;
    let jobs = cron_jobs(&gw).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["id"], "nightly");
    assert_eq!(jobs[0]["schedule"], "0 3 * * *");
    assert_eq!(jobs[0]["message"], "summarize the day");
    assert_eq!(jobs[0]["agentId"], "main");

    let button = |action: &str| {
        format!(
            "document.querySelector('#cron-table button[data-job=\"nightly\"][data-action=\"{action}\"]')"
        )
    };
    b.js(&format!("{}.click(); return true", button("edit")))
        .await;
    b.wait_for(
        UI_WAIT,
        "the form filled for editing",
        "return document.getElementById('cron-id').readOnly && document.getElementById('cron-schedule').value === '0 3 * * *'",
    )
    .await;
    set_value(&b, "cron-schedule", "every 2h").await;
    click(&b, "cron-submit").await;
    shows(&b, "cron-form-status", "Saved job nightly").await;
    b.wait_for(
        UI_WAIT,
        "the new schedule listed",
        &format!("return !!{row} && {row}.textContent.includes('every 2h')"),
    )
    .await;

    b.js(&format!("{}.click(); return true", button("toggle")))
        .await;
    b.wait_for(
        UI_WAIT,
        "the job shown disabled",
        &format!("return !!{row} && {row}.dataset.enabled === 'false'"),
    )
    .await;
    let jobs = cron_jobs(&gw).await;
    assert_eq!(jobs[0]["enabled"], false, "{jobs:?}");
    assert_eq!(jobs[0]["schedule"], "every 2h", "{jobs:?}");

    b.js(&format!("{}.click(); return true", button("remove")))
        .await;
    b.wait_for(
        UI_WAIT,
        "the remove button asking again",
        &format!(
            "return {}.textContent === 'Confirm remove'",
            button("remove")
        ),
    )
    .await;
    assert_eq!(cron_jobs(&gw).await.len(), 1, "one click removes nothing");
    b.js(&format!("{}.click(); return true", button("remove")))
        .await;
    b.wait_for(
        UI_WAIT,
        "the job gone and the empty state back",
        &format!("return !{row} && !document.getElementById('cron-empty').hidden"),
    )
    .await;
    assert!(cron_jobs(&gw).await.is_empty(), "removed in the gateway");
    b.close().await;
}

#[tokio::test]
async fn the_send_form_sends_through_a_channel_account() {
    let _turn = ONE_BROWSER.lock().await;
    const TG_TOKEN: &str = "123456:TEST-token";
    let fake = FakeTelegram::start(TG_TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[[channels.telegram]]\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\n",
            fake.api_url()
        ),
    )
    .expect("config.toml");
    let gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TG_TOKEN)
        .start_in(home);
    gw.wait_ready().await;
    let b = open_logged_in(&gw).await;
    tab(&b, "channels").await;
    b.wait_for(
        UI_WAIT,
        "the send form with the account",
        "return !document.getElementById('send-form').hidden && document.getElementById('send-account').value === 'telegram:main'",
    )
    .await;
    set_value(&b, "send-to", "777").await;
    set_value(&b, "send-message", "hello from the control UI").await;
    click(&b, "send-submit").await;
    let status = shows(&b, "send-status", "Sent through telegram:main to 777").await;
    assert!(status.contains("message "), "{status}");
    assert_eq!(fake.texts_to(777), vec!["hello from the control UI"]);
    b.screenshot("send").await;

    // The platform does not take it now: the page says it is owed, and it goes out later.
    fake.hold_sends(true);
    set_value(&b, "send-message", "later").await;
    click(&b, "send-submit").await;
    shows(&b, "send-status", "Owed").await;
    fake.hold_sends(false);
    support::eventually(UI_WAIT, "the owed message delivered", || async {
        (fake.texts_to(777).len() == 2).then_some(())
    })
    .await;

    set_value(&b, "send-to", "").await;
    set_value(&b, "send-message", "nowhere").await;
    click(&b, "send-submit").await;
    shows(&b, "send-error", "chat or channel id").await;
    b.close().await;
}
