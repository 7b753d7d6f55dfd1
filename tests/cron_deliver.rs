//! Cron `deliver` (DESIGN.md §9): a job's final reply is sent to its channel target
//! through the channel's delivery path, once per fire, and the ledger says so.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use fake_telegram::FakeTelegram;
use serde_json::Value;
use support::{TestGateway, WAIT, eventually};

const TOKEN: &str = "123456:TEST-token";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_deliver_sends_each_fires_reply_to_the_telegram_chat_once() {
    let fake = FakeTelegram::start(TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[[channels.telegram]]\naccount = \"main\"\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\n\n[[cron.jobs]]\nid = \"report\"\nschedule = \"every 1s\"\nagent = \"main\"\nmessage = \"daily report\"\ndeliver = {{ channel = \"telegram\", account = \"main\", to = \"4242\" }}\n",
        fake.api_url()
    );
    std::fs::write(home.path().join("config.toml"), config).expect("write config");
    let gw = TestGateway::builder()
        .env("TG_TEST_TOKEN", TOKEN)
        .start_in(home);
    let delivered = eventually(WAIT, "two fires delivered and recorded", || async {
        let rows = ledger(&gw, "report").await;
        let done: Vec<Value> = rows
            .into_iter()
            .filter(|r| {
                r["outcome"] == "ok"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("delivered to telegram:main chat 4242"))
            })
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    let texts = fake.texts_to(4242);
    assert!(texts.len() >= 2, "{texts:?}");
    assert!(texts.iter().all(|t| t == "echo: daily report"), "{texts:?}");
    // One message per delivered fire, never two for one fire.
    let fires = delivered.len();
    assert!(
        texts.len() <= fires + 2,
        "{} texts for {fires} fires",
        texts.len()
    );
    let reason = delivered[0]["reason"].as_str().unwrap();
    assert!(reason.ends_with(": sent"), "{reason}");
}
