//! Channel operator surface (DESIGN.md §8): the tree's backoff timing, WS `send`, probes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use support::{TestGateway, WAIT, eventually, node};

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
