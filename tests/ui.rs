//! The control UI end to end, in headless Chromium driven over WebDriver: connect with a
//! pasted token, chat with a streamed reply, a crash from the tree that is marked and then
//! recovers, history after a reload, a wrong token's clear error, a phone-width screen,
//! and a token in the URL that is never used. Screenshots go to `target/ui-artifacts/`.
//! The browser tests take turns (one Chromium at a time on a small machine).
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/browser.rs"]
mod browser;
#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use std::sync::LazyLock;
use std::time::Duration;

use browser::Browser;
use fake_llm::{FakeLlm, Script};
use fantoccini::Locator;
use support::TestGateway;
use tokio::sync::Mutex;

/// Generous: Chromium and the gateway share two loaded cores.
const UI_WAIT: Duration = Duration::from_secs(60);

static ONE_BROWSER: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

async fn open(gw: &TestGateway, width: u32, height: u32) -> Browser {
    let b = Browser::start(width, height).await;
    b.client.goto(&gw.http("/")).await.expect("open the page");
    b
}

/// Types the token into the form and waits for the connected state.
async fn log_in(b: &Browser, token: &str) {
    let input = b
        .client
        .wait()
        .at_most(UI_WAIT)
        .for_element(Locator::Css("#secret"))
        .await
        .expect("the token field");
    input.send_keys(token).await.expect("type the token");
    b.client
        .find(Locator::Css("#login-form button[type=submit]"))
        .await
        .expect("the connect button")
        .click()
        .await
        .expect("click connect");
    connected(b).await;
}

async fn connected(b: &Browser) {
    b.wait_for(
        UI_WAIT,
        "the page says it is connected",
        "return document.getElementById('conn-status').dataset.state === 'connected' && !document.getElementById('main').hidden",
    )
    .await;
}

async fn send(b: &Browser, text: &str) {
    b.wait_for(
        UI_WAIT,
        "the session is picked",
        "return document.getElementById('session-select').value !== ''",
    )
    .await;
    let input = b
        .client
        .find(Locator::Css("#chat-input"))
        .await
        .expect("message box");
    input.send_keys(text).await.expect("type the message");
    b.client
        .find(Locator::Css("#send"))
        .await
        .expect("send button")
        .click()
        .await
        .expect("click send");
}

fn assistant_says(text: &str) -> String {
    format!(
        "return [...document.querySelectorAll('#messages li[data-role=assistant] .text')].some(e => e.textContent === {text:?})"
    )
}

#[tokio::test]
async fn chat_reply_streams_in_and_history_survives_a_reload() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let b = open(&gw, 1200, 900).await;
    log_in(&b, &gw.token).await;
    send(&b, "hello from the browser").await;
    b.wait_for(
        UI_WAIT,
        "the echo reply in the conversation",
        &assistant_says("echo: hello from the browser"),
    )
    .await;
    let streamed = b
        .js("return typeof window.troupeFirstDeltaAt === 'number'")
        .await;
    assert_eq!(streamed, true, "the reply arrived as chat deltas");
    b.wait_for(
        UI_WAIT,
        "the echo provider note",
        "return !document.getElementById('provider-note').hidden && document.getElementById('provider-note').textContent.includes('echo')",
    )
    .await;
    b.screenshot("chat").await;

    b.client.refresh().await.expect("reload");
    connected(&b).await;
    b.wait_for(
        UI_WAIT,
        "the history after a reload (token remembered)",
        &format!(
            "return document.querySelector('#messages li[data-role=user] .text')?.textContent === 'hello from the browser' && ({})",
            assistant_says("echo: hello from the browser")
                .trim_start_matches("return ")
        ),
    )
    .await;
    let login_shown = b
        .js("return !document.getElementById('login').hidden")
        .await;
    assert_eq!(
        login_shown, false,
        "the remembered token connects by itself"
    );
    b.close().await;
}

#[tokio::test]
async fn a_crash_from_the_tree_is_marked_then_recovers() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let b = open(&gw, 1200, 900).await;
    log_in(&b, &gw.token).await;
    b.client
        .find(Locator::Css("#tab-tree"))
        .await
        .expect("tree tab")
        .click()
        .await
        .expect("open the tree");
    let crash = "[...document.querySelectorAll('#tree button[data-action=crash]')].find(b => b.dataset.node === 'agent:main')";
    b.wait_for(
        UI_WAIT,
        "a Crash button for agent:main (fault injection is on)",
        &format!("return !!{crash}"),
    )
    .await;
    b.js(&format!("{crash}.click(); return true")).await;
    let node = "document.querySelector('#tree li[data-node=\"agent:main\"]')";
    b.wait_for(
        UI_WAIT,
        "agent:main marked as having exited (panic) and running again",
        &format!(
            "const n = {node}; return !!n && n.dataset.restarts === '1' && n.dataset.lastExit === 'panic' && n.dataset.state === 'running' && n.classList.contains('recent-exit') && n.textContent.includes('recovered')"
        ),
    )
    .await;
    b.screenshot("tree").await;
    let restart = "[...document.querySelectorAll('#tree button[data-action=restart]')].find(b => b.dataset.node === 'scheduler')";
    b.js(&format!("{restart}.click(); return true")).await;
    b.wait_for(
        UI_WAIT,
        "the scheduler restarted from its Restart button",
        "const n = document.querySelector('#tree li[data-node=\"scheduler\"]'); return !!n && n.dataset.restarts === '1' && n.dataset.state === 'running'",
    )
    .await;
    let tree = gw.tree().await;
    let agent = support::node(&tree, "agent:main").expect("agent:main in the tree");
    assert_eq!(agent["restarts"], 1, "the page's crash reached the gateway");
    b.close().await;
}

#[tokio::test]
async fn a_wrong_token_shows_a_clear_error_and_is_not_retried() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let b = open(&gw, 1200, 900).await;
    let input = b
        .client
        .wait()
        .at_most(UI_WAIT)
        .for_element(Locator::Css("#secret"))
        .await
        .expect("the token field");
    input.send_keys("not-the-token-at-all").await.expect("type");
    b.client
        .find(Locator::Css("#login-form button[type=submit]"))
        .await
        .expect("connect button")
        .click()
        .await
        .expect("click");
    let message = b
        .wait_for(
            UI_WAIT,
            "the wrong-token error",
            "const e = document.getElementById('login-error'); return !e.hidden && e.textContent",
        )
        .await;
    assert!(
        message.as_str().unwrap().contains("Wrong token"),
        "clear message: {message}"
    );
    let state = b
        .js("return [document.getElementById('conn-status').dataset.state, localStorage.getItem('troupe.ui.token')]")
        .await;
    assert_eq!(
        state,
        serde_json::json!(["refused", null]),
        "stopped, and the refused token is not kept"
    );
    b.close().await;
}

#[tokio::test]
async fn phone_width_renders_without_horizontal_scroll() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let b = open(&gw, 375, 800).await;
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth && window.innerWidth <= 400";
    b.wait_for(UI_WAIT, "the login form fits", fits).await;
    log_in(&b, &gw.token).await;
    send(&b, "a long message without spaces: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").await;
    b.wait_for(
        UI_WAIT,
        "the reply",
        "return document.querySelectorAll('#messages li[data-role=assistant]').length > 0",
    )
    .await;
    b.wait_for(UI_WAIT, "the chat fits the phone width", fits)
        .await;
    for tab in [
        "tree", "sessions", "usage", "channels", "cron", "config", "logs",
    ] {
        b.js(&format!(
            "document.getElementById('tab-{tab}').click(); return true"
        ))
        .await;
        b.wait_for(
            UI_WAIT,
            &format!("the {tab} view fits the phone width"),
            &format!(
                "return !document.getElementById('view-{tab}').hidden && document.documentElement.scrollWidth <= window.innerWidth"
            ),
        )
        .await;
    }
    b.wait_for(
        UI_WAIT,
        "the tree drawn at phone width",
        "return document.querySelectorAll('#tree li').length > 3",
    )
    .await;
    b.js("document.getElementById('tab-tree').click(); return true")
        .await;
    b.wait_for(UI_WAIT, "the tree fits the phone width", fits)
        .await;
    b.screenshot("tree-phone").await;
    b.close().await;
}

#[tokio::test]
async fn a_token_in_the_url_is_never_used() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let b = Browser::start(1200, 900).await;
    let url = format!(
        "{}?token={t}&gatewayUrl=ws://127.0.0.1:1/#token={t}",
        gw.http("/"),
        t = gw.token
    );
    b.client.goto(&url).await.expect("open the page");
    // The page decides at start: it shows the form (no stored token) and opens nothing.
    b.wait_for(
        UI_WAIT,
        "the token form, not a connection",
        "return document.readyState === 'complete' && !document.getElementById('login').hidden && document.getElementById('conn-status').dataset.state === 'idle'",
    )
    .await;
    let status: serde_json::Value = reqwest::Client::new()
        .get(gw.http("/api/status?clients=all"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    let clients = support::node(&status["tree"], "clients").expect("clients node");
    assert_eq!(
        clients["children"].as_array().map(Vec::len),
        Some(0),
        "no WebSocket was opened: {clients}"
    );
    b.close().await;
}

#[tokio::test]
async fn a_gateway_that_goes_away_is_reported_and_retried() {
    let _turn = ONE_BROWSER.lock().await;
    let mut gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let b = open(&gw, 1200, 900).await;
    log_in(&b, &gw.token).await;
    gw.terminate();
    b.wait_for(
        UI_WAIT,
        "the banner saying the gateway is unreachable and when the page retries",
        "const e = document.getElementById('banner'); return !e.hidden && e.textContent.includes('unreachable') && /retry \\d+ in \\d+ s/.test(e.textContent)",
    )
    .await;
    // "retry 2" (or later) is shown once the first retry has been made and failed too.
    b.wait_for(
        UI_WAIT,
        "a reconnect attempt that failed in turn",
        "return /retry ([2-9]|\\d\\d+) in/.test(document.getElementById('banner').textContent)",
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn tool_calls_show_and_a_waiting_message_is_marked_queued_until_abort() {
    let _turn = ONE_BROWSER.lock().await;
    let fake = FakeLlm::start();
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agents").join("oa");
    std::fs::create_dir_all(dir.join("memory")).expect("agent dir");
    std::fs::write(
        dir.join("agent.toml"),
        "provider = \"openai\"\nmodel = \"fake-model\"\ntools = [\"memory_write\"]\n",
    )
    .expect("agent.toml");
    let gw = TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test")
        .start_in(home);
    gw.wait_ready().await;
    let b = open(&gw, 1200, 900).await;
    log_in(&b, &gw.token).await;
    b.wait_for(
        UI_WAIT,
        "agent oa listed",
        "return [...document.getElementById('agent-select').options].some(o => o.value === 'oa')",
    )
    .await;
    b.js("const s = document.getElementById('agent-select'); s.value = 'oa'; s.dispatchEvent(new Event('change')); return true").await;
    b.wait_for(
        UI_WAIT,
        "session agent:oa:main picked",
        "return document.getElementById('session-select').value === 'agent:oa:main' && document.getElementById('provider-note').hidden",
    )
    .await;

    fake.push(Script::tool_call(
        "call_1",
        "memory_write",
        r#"{"path":"notes/ui.md","content":"from the browser"}"#,
        2,
    ));
    fake.push(Script::reply("Saved it.", 3));
    send(&b, "remember this").await;
    b.wait_for(UI_WAIT, "the final reply", &assistant_says("Saved it."))
        .await;
    let tools = b
        .js("return [...document.querySelectorAll('#messages .tool')].map(t => t.textContent)")
        .await;
    let tools = tools.as_array().expect("tool rows");
    assert_eq!(tools.len(), 2, "a call and its result: {tools:?}");
    assert!(
        tools[0].as_str().unwrap().contains("memory_write"),
        "{tools:?}"
    );
    assert!(
        tools[0].as_str().unwrap().contains("notes/ui.md"),
        "{tools:?}"
    );
    assert!(
        tools[1].as_str().unwrap().starts_with("tool result"),
        "{tools:?}"
    );

    fake.push(Script::Stall { after_chunks: 1 });
    send(&b, "first, which stalls").await;
    b.wait_for(
        UI_WAIT,
        "the stalled reply streaming",
        "return [...document.querySelectorAll('#messages li[data-role=assistant]')].some(li => li.dataset.state === 'streaming')",
    )
    .await;
    send(&b, "second, which waits").await;
    let second = "[...document.querySelectorAll('#messages li[data-role=user]')].find(li => li.querySelector('.text').textContent === 'second, which waits')";
    b.wait_for(
        UI_WAIT,
        "the second message marked queued",
        &format!("const li = {second}; return !!li && li.dataset.state === 'queued' && li.textContent.includes('queued')"),
    )
    .await;
    b.wait_for(
        UI_WAIT,
        "Abort enabled",
        "return !document.getElementById('abort').disabled",
    )
    .await;
    b.js("document.getElementById('abort').click(); return true")
        .await;
    b.wait_for(
        UI_WAIT,
        "the running reply aborted and the queued message dropped",
        &format!(
            "const li = {second}; return li.dataset.state === 'dropped' && [...document.querySelectorAll('#messages li[data-role=assistant]')].some(r => r.dataset.state === 'aborted')"
        ),
    )
    .await;

    // After a reload the stored tool step is in the history, between the message and the
    // reply, as one collapsed line.
    b.client.refresh().await.expect("reload");
    connected(&b).await;
    b.wait_for(
        UI_WAIT,
        "agent oa listed again",
        "return [...document.getElementById('agent-select').options].some(o => o.value === 'oa')",
    )
    .await;
    b.js("const s = document.getElementById('agent-select'); s.value = 'oa'; s.dispatchEvent(new Event('change')); return true").await;
    // Read in the same script that finds the history complete: the list is drawn again
    // (emptied, then filled) when the page's own start and the agent switch both load it.
    let first = b
        .wait_for(
            UI_WAIT,
            "the first turn's history with its tool step",
            "const li = [...document.querySelectorAll('#messages li')]; const i = li.findIndex(l => l.dataset.role === 'tool'); if (li.filter(l => l.dataset.role === 'tool').length !== 1 || i < 1 || i + 1 >= li.length) return false; return [li[i - 1].dataset.role, li[i - 1].querySelector('.text').textContent, li[i].querySelector('summary').textContent, li[i].querySelector('details').open, li[i + 1].dataset.role, li[i + 1].querySelector('.text').textContent]",
        )
        .await;
    assert_eq!(first[0], "user", "{first}");
    assert_eq!(first[1], "remember this", "{first}");
    let summary = first[2].as_str().unwrap();
    assert!(
        summary.contains("memory_write") && summary.contains("notes/ui.md"),
        "{first}"
    );
    assert_eq!(first[3], false, "collapsed: {first}");
    assert_eq!(first[4], "assistant", "{first}");
    assert_eq!(first[5], "Saved it.", "{first}");
    b.close().await;
}

#[tokio::test]
async fn the_panels_show_sessions_usage_channels_and_a_cron_run_now() {
    let _turn = ONE_BROWSER.lock().await;
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let added = c
        .request(
            "cron.add",
            Some(serde_json::json!({ "job": { "id": "hourly", "schedule": "every 1h", "agentId": "main", "message": "ping" } })),
        )
        .await;
    assert_eq!(added["ok"], true, "{added}");
    let b = open(&gw, 1200, 900).await;
    log_in(&b, &gw.token).await;
    send(&b, "count me").await;
    b.wait_for(UI_WAIT, "the reply", &assistant_says("echo: count me"))
        .await;
    let click = |tab: &str| format!("document.getElementById('tab-{tab}').click(); return true");

    b.js(&click("sessions")).await;
    b.wait_for(
        UI_WAIT,
        "the session listed",
        "return [...document.querySelectorAll('#sessions-table tbody tr')].some(r => r.textContent.includes('agent:main:main'))",
    )
    .await;

    b.js(&click("usage")).await;
    b.wait_for(
        UI_WAIT,
        "usage per agent and a chart",
        "return [...document.querySelectorAll('#usage-agents tbody tr')].some(r => r.cells[0].textContent === 'main' && r.cells[1].textContent === '1') && !!document.querySelector('#usage-chart svg rect')",
    )
    .await;
    b.screenshot("usage").await;

    b.js(&click("channels")).await;
    b.wait_for(
        UI_WAIT,
        "the channels' empty states",
        "return !document.getElementById('channels-empty').hidden && !document.getElementById('pairing-empty').hidden && document.getElementById('channels-error').hidden",
    )
    .await;

    b.js(&click("cron")).await;
    let run_now = "[...document.querySelectorAll('#cron-table button')].find(x => x.textContent === 'Run now')";
    b.wait_for(
        UI_WAIT,
        "the job listed with Run now",
        &format!("return !!{run_now}"),
    )
    .await;
    b.js(&format!("{run_now}.click(); return true")).await;
    b.wait_for(
        UI_WAIT,
        "a manual run in the ledger",
        "return document.getElementById('runs-title').textContent.includes('hourly') && [...document.querySelectorAll('#runs-table tbody tr')].some(r => r.cells[3].textContent === 'yes')",
    )
    .await;
    b.close().await;
}
