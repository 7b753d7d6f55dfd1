//! Channels end to end (DESIGN.md §8): the real gateway with a real teloxide client polling
//! a fake Telegram Bot API on 127.0.0.1; the echo agent answers "echo: <message>".
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::time::Duration;

use fake_telegram::{BOT_USERNAME, FakeTelegram};
use serde_json::{Value, json};
use support::{TestGateway, WAIT, cli, eventually, node};

const TOKEN: &str = "123456:TEST-token";

/// A gateway whose `telegram:main` polls `fake`, with extra `[[channels.telegram]]` lines.
fn gateway(fake: &FakeTelegram, extra: &str, chaos: bool) -> TestGateway {
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), fake, extra);
    builder(chaos).start_in(home)
}

fn write_config(home: &std::path::Path, fake: &FakeTelegram, extra: &str) {
    let config = format!(
        "[[channels.telegram]]\naccount = \"main\"\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\n{extra}\n",
        fake.api_url()
    );
    std::fs::write(home.join("config.toml"), config).expect("write config");
}

fn builder(chaos: bool) -> support::GatewayBuilder {
    let b = TestGateway::builder().env("TG_TEST_TOKEN", TOKEN);
    if chaos { b.chaos() } else { b }
}

/// Waits until `chat` has received exactly `expected` (in order), failing on extra messages.
async fn replies(fake: &FakeTelegram, chat: i64, expected: &[&str]) {
    let what = format!("chat {chat} receives {expected:?}");
    eventually(WAIT, &what, || async {
        let got = fake.texts_to(chat);
        assert!(
            got.len() <= expected.len(),
            "chat {chat} got more than expected: {got:?}"
        );
        (got == expected).then_some(())
    })
    .await
}

async fn telegram_node(gw: &TestGateway) -> Value {
    node(&gw.tree().await, "telegram:main").cloned().expect("telegram:main in the tree")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_round_trip_with_open_policy_and_typing_indicator() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    fake.dm(1001, "hello there");
    replies(&fake, 1001, &["echo: hello there"]).await;
    assert!(
        fake.actions().iter().any(|(c, a)| *c == 1001 && a == "typing"),
        "no typing indicator: {:?}",
        fake.actions()
    );
    let tree = gw.tree().await;
    let channels = node(&tree, "channels").expect("channels supervisor");
    assert_eq!(channels["kind"], "supervisor");
    assert_eq!(node(&tree, "telegram:main").expect("child")["state"], "running");
    // The transcript is in the DM's session.
    let mut c = gw.client().await;
    let res = c
        .request("chat.history", Some(json!({ "sessionKey": "agent:main:telegram:dm:1001" })))
        .await;
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["messages"][0]["text"], "hello there");
}
