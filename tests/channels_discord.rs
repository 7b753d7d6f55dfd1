//! Discord end to end (DESIGN.md §8): the real gateway with a real serenity client against a
//! fake Discord (REST + gateway WebSocket) on 127.0.0.1; the echo agent answers
//! "echo: <message>".
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_discord.rs"]
mod fake_discord;
#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::time::Duration;

use fake_discord::FakeDiscord;
use fake_telegram::FakeTelegram;
use serde_json::{Value, json};
use support::{TestGateway, WAIT, cli_env, eventually, node};

const TOKEN: &str = "discord-test-token";
const TG_TOKEN: &str = "123456:TEST-token";

fn write_config(home: &std::path::Path, fake: &FakeDiscord, extra: &str) {
    let config = format!(
        "[[channels.discord]]\naccount = \"main\"\ntoken_env = \"DC_TEST_TOKEN\"\napi_url = \"{}\"\n{extra}\n",
        fake.api_url()
    );
    std::fs::write(home.join("config.toml"), config).expect("write config");
}

fn builder(chaos: bool) -> support::GatewayBuilder {
    let b = TestGateway::builder()
        .env("DC_TEST_TOKEN", TOKEN)
        .env("TG_TEST_TOKEN", TG_TOKEN);
    if chaos { b.chaos() } else { b }
}

/// A gateway whose `discord:main` talks to `fake`, with extra `[[channels.discord]]` lines.
fn gateway(fake: &FakeDiscord, extra: &str, chaos: bool) -> TestGateway {
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), fake, extra);
    builder(chaos).start_in(home)
}

/// Waits until the gateway session is up (so pushed messages are seen live).
async fn connected(fake: &FakeDiscord, identifies: u64) {
    eventually(WAIT, "discord:main identified on the gateway", || async {
        (fake.identifies() >= identifies && fake.sessions() >= 1).then_some(())
    })
    .await;
}

/// Waits until `channel` has received exactly `expected` (in order), failing on extras.
async fn replies(fake: &FakeDiscord, channel: u64, expected: &[&str]) {
    let what = format!("channel {channel} receives {expected:?}");
    eventually(Duration::from_secs(60), &what, || async {
        let got = fake.texts_to(channel);
        assert!(
            got.len() <= expected.len(),
            "channel {channel} got more than expected: {got:?}"
        );
        (got == expected).then_some(())
    })
    .await
}

async fn discord_node(gw: &TestGateway) -> Value {
    node(&gw.tree().await, "discord:main")
        .cloned()
        .expect("discord:main in the tree")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_round_trip_with_typing_indicator_and_status() {
    let fake = FakeDiscord::start(TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), &fake, "dm_policy = \"open\"");
    // A turn slow enough to show "typing" while it runs (a turn that ends first cancels
    // the indicator, as it should).
    let gw = builder(false)
        .env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "400")
        .start_in(home);
    connected(&fake, 1).await;
    fake.dm(501, "hello discord");
    let dm = FakeDiscord::dm_channel(501);
    eventually(WAIT, "typing shown while the turn runs", || async {
        fake.typing().contains(&dm).then_some(())
    })
    .await;
    replies(&fake, dm, &["echo: hello discord"]).await;
    let mut c = gw.client().await;
    let res = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": "agent:main:discord:dm:501" })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["messages"][0]["text"], "hello discord");
    let status = c.request("channels.status", None).await;
    let account = status["payload"]["channels"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "discord:main"))
        .cloned()
        .unwrap_or_else(|| panic!("discord:main in channels.status: {status}"));
    assert_eq!(account["channel"], "discord");
    assert_eq!(account["state"], "running");
    assert_eq!(account["bot"], fake_discord::BOT_NAME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guild_channels_answer_only_mentions_and_replies_to_the_bot() {
    let fake = FakeDiscord::start(TOKEN);
    let _gw = gateway(&fake, "", false);
    connected(&fake, 1).await;
    let channel = 9_001;
    fake.guild(channel, 11, "just chatting, not for the bot", false, false);
    fake.guild(channel, 11, "what time is it", true, false);
    replies(&fake, channel, &["echo: what time is it"]).await;
    fake.guild(channel, 12, "and you?", false, true);
    fake.guild(channel, 12, "still not for the bot", false, false);
    fake.guild(channel, 12, "last one", true, false);
    // Per channel order: had an unmentioned message been answered, its reply would show.
    replies(
        &fake,
        channel,
        &["echo: what time is it", "echo: and you?", "echo: last one"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_gateway_was_down_are_answered_once_after_kill9() {
    let fake = FakeDiscord::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    let users: Vec<u64> = (601..606).collect();
    for u in &users {
        fake.dm(*u, "before");
    }
    for u in &users {
        replies(&fake, FakeDiscord::dm_channel(*u), &["echo: before"]).await;
    }
    let home = gw.kill9();
    eventually(WAIT, "the killed gateway's socket is gone", || async {
        (fake.sessions() == 0).then_some(())
    })
    .await;
    for i in 0..4 {
        for u in &users {
            fake.dm(*u, &format!("while down {i}"));
        }
    }
    let _gw = builder(false).start_in(home);
    let expected = [
        "echo: before",
        "echo: while down 0",
        "echo: while down 1",
        "echo: while down 2",
        "echo: while down 3",
    ];
    for u in &users {
        replies(&fake, FakeDiscord::dm_channel(*u), &expected).await;
    }
    // Live messages after the backfill still go through, once.
    fake.dm(users[0], "after");
    let mut with_after = expected.to_vec();
    with_after.push("echo: after");
    replies(&fake, FakeDiscord::dm_channel(users[0]), &with_after).await;
    assert_eq!(
        fake.sent().len(),
        users.len() * 5 + 1,
        "a reply was sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_posted_just_before_kill9_is_not_shown_twice_after_restart() {
    let fake = FakeDiscord::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    // Discord takes the post but the gateway dies before it learns so: the delivery is
    // still pending in the store and goes out again after the restart, with its nonce.
    fake.hold_post_answers(true);
    fake.dm(611, "once please");
    let dm = FakeDiscord::dm_channel(611);
    replies(&fake, dm, &["echo: once please"]).await;
    let home = gw.kill9();
    fake.hold_post_answers(false);
    eventually(WAIT, "the killed gateway's socket is gone", || async {
        (fake.sessions() == 0).then_some(())
    })
    .await;
    let _gw = builder(false).start_in(home);
    eventually(
        WAIT,
        "the owed delivery re-posted with its nonce",
        || async { (fake.nonce_replays() == 1).then_some(()) },
    )
    .await;
    fake.dm(611, "and then");
    replies(&fake, dm, &["echo: once please", "echo: and then"]).await;
    assert_eq!(fake.texts_to(dm), ["echo: once please", "echo: and then"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_character_reply_arrives_as_three_messages_in_order() {
    let fake = FakeDiscord::start(TOKEN);
    let _gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    let words: Vec<String> = (0..900).map(|i| format!("w{i:04}")).collect();
    let text = words.join(" ");
    assert!(text.len() >= 5000);
    fake.dm(701, &text);
    let dm = FakeDiscord::dm_channel(701);
    let parts = eventually(WAIT, "three parts", || async {
        let got = fake.texts_to(dm);
        (got.len() >= 3).then_some(got)
    })
    .await;
    assert_eq!(
        parts.len(),
        3,
        "{:?}",
        parts.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(parts.iter().all(|p| p.chars().count() <= 2000));
    assert_eq!(parts.join(" "), format!("echo: {text}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_post_waits_retry_after_then_delivers_once() {
    let fake = FakeDiscord::start(TOKEN);
    let _gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    fake.rate_limit_next_posts(1);
    fake.dm(801, "slow down");
    let dm = FakeDiscord::dm_channel(801);
    replies(&fake, dm, &["echo: slow down"]).await;
    let limited = fake.rate_limited_at();
    assert_eq!(limited.len(), 1);
    let sent = fake.sent();
    assert!(
        sent[0].at.duration_since(limited[0]) >= Duration::from_millis(900),
        "resent before Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_without_heartbeat_acks_is_restarted_with_its_reason() {
    let fake = FakeDiscord::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    fake.dm(901, "first");
    let dm = FakeDiscord::dm_channel(901);
    replies(&fake, dm, &["echo: first"]).await;
    // A few ACKs first, so the heartbeat interval is known.
    eventually(WAIT, "three heartbeat ACKs", || async {
        (fake.acks() >= 3).then_some(())
    })
    .await;
    fake.ack_heartbeats(false);
    let failed = eventually(
        Duration::from_secs(60),
        "discord:main restarted for a missing heartbeat ACK",
        || async {
            let n = discord_node(&gw).await;
            let why = n["lastExit"]["message"].as_str().unwrap_or_default();
            (n["restarts"].as_u64() >= Some(1) && why.contains("heartbeat ACK")).then_some(n)
        },
    )
    .await;
    assert_eq!(failed["lastExit"]["reason"], "error", "{failed}");
    fake.ack_heartbeats(true);
    fake.dm(901, "second");
    replies(&fake, dm, &["echo: first", "echo: second"]).await;
    eventually(WAIT, "a single gateway session", || async {
        (fake.sessions() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_gateway_socket_restarts_the_channel_and_nothing_is_lost() {
    let fake = FakeDiscord::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    fake.dm(951, "one");
    let dm = FakeDiscord::dm_channel(951);
    replies(&fake, dm, &["echo: one"]).await;
    fake.drop_sockets();
    fake.dm(951, "two");
    replies(&fake, dm, &["echo: one", "echo: two"]).await;
    let n = discord_node(&gw).await;
    assert!(n["restarts"].as_u64() >= Some(1), "{n}");
    let why = n["lastExit"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("connection lost"), "{n}");
    // The old shard is gone: one session, so each message is seen once on the wire.
    eventually(WAIT, "a single gateway session", || async {
        (fake.sessions() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_discord_leaves_telegram_answering_and_discord_comes_back() {
    let discord = FakeDiscord::start(TOKEN);
    let telegram = FakeTelegram::start(TG_TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), &discord, "dm_policy = \"open\"");
    let tg = format!(
        "\n[[channels.telegram]]\naccount = \"main\"\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"{}\"\npoll_timeout_secs = 1\ndm_policy = \"open\"\n",
        telegram.api_url()
    );
    let mut config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    config.push_str(&tg);
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let gw = builder(true).start_in(home);
    connected(&discord, 1).await;
    let dm = FakeDiscord::dm_channel(1101);
    discord.dm(1101, "before");
    replies(&discord, dm, &["echo: before"]).await;
    let mut c = gw.client().await;
    let res = c
        .request("supervisor.crash", Some(json!({ "id": "discord:main" })))
        .await;
    assert_eq!(res["ok"], true, "{res}");
    // Telegram answers while Discord is down or in backoff.
    telegram.dm(1201, "telegram still here");
    eventually(WAIT, "telegram answers", || async {
        (telegram.texts_to(1201) == ["echo: telegram still here"]).then_some(())
    })
    .await;
    let restarted = gw.child_restarted("discord:main", 1).await;
    assert_eq!(restarted["lastExit"]["reason"], "panic", "{restarted}");
    discord.dm(1101, "after");
    replies(&discord, dm, &["echo: before", "echo: after"]).await;
    let tree = gw.tree().await;
    assert_eq!(node(&tree, "telegram:main").unwrap()["restarts"], 0);
    assert_eq!(node(&tree, "agent:main").unwrap()["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_keeps_unknown_discord_senders_from_the_agent_until_approved() {
    let fake = FakeDiscord::start(TOKEN);
    let gw = gateway(&fake, "", false); // dm_policy defaults to pairing
    connected(&fake, 1).await;
    let dm = FakeDiscord::dm_channel(1301);
    fake.dm(1301, "secret first words");
    let notice = eventually(WAIT, "a pairing code is sent", || async {
        fake.texts_to(dm).first().cloned()
    })
    .await;
    let mut c = gw.client().await;
    let list = c.request("pairing.list", None).await;
    let pending = list["payload"]["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{list}");
    assert_eq!(pending[0]["channel"], "discord", "{list}");
    assert_eq!(pending[0]["senderId"], "1301", "{list}");
    let code = pending[0]["code"].as_str().unwrap().to_string();
    assert!(notice.contains(&code), "notice {notice:?} lacks {code}");
    let res = c
        .request("pairing.approve", Some(json!({ "code": code })))
        .await;
    assert_eq!(res["ok"], true, "{res}");
    fake.dm(1301, "now paired");
    let texts = eventually(WAIT, "the paired sender is answered", || async {
        let got = fake.texts_to(dm);
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(texts[1], "echo: now paired", "{texts:?}");
    let history = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": "agent:main:discord:dm:1301" })),
        )
        .await;
    let messages = history["payload"]["messages"].as_array().cloned().unwrap();
    assert!(
        messages.iter().all(|m| m["text"] != "secret first words"),
        "a message from before the approval reached the agent: {history}"
    );
}

#[test]
fn a_discord_account_naming_an_unknown_agent_or_missing_token_is_refused_naming_the_key() {
    let fake = FakeDiscord::start(TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), &fake, "agent = \"ghost\"");
    let run = ["gateway", "run", "--port", "0"];
    let (code, _, err) = cli_env(home.path(), &run, &[("DC_TEST_TOKEN", TOKEN)]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("channels.discord[0].agent"), "{err}");
    write_config(home.path(), &fake, "");
    let (code, _, err) = cli_env(home.path(), &run, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("channels.discord[0].token_env"), "{err}");
    assert!(err.contains("DC_TEST_TOKEN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_gateway_session_shows_in_health_until_the_channel_is_back() {
    let fake = FakeDiscord::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    connected(&fake, 1).await;
    let up = eventually(WAIT, "discord:main connected in health", || async {
        let mut c = gw.client().await;
        let h = c.request("health", None).await;
        let entry = h["payload"]["channels"]["discord:main"].clone();
        (entry["connected"] == true).then_some(entry)
    })
    .await;
    assert_eq!(up["channel"], "discord", "{up}");
    assert_eq!(up["accountId"], "main", "{up}");
    assert!(up["lastOkAt"].is_u64(), "{up}");
    // A client that knows the health version of its hello: every later change is news.
    let mut c = support::WsClient::open(&gw.ws_url()).await;
    let hello = c.connect(&gw.token, &["operator.admin"]).await;
    let v_up = hello["payload"]["snapshot"]["stateVersion"]["health"]
        .as_u64()
        .expect("version");
    let is = |f: &Value, connected: bool, after: u64| {
        f["event"] == "health"
            && f["stateVersion"]["health"].as_u64() > Some(after)
            && f["payload"]["channels"]["discord:main"]["connected"] == connected
    };
    fake.drop_sockets();
    let down = tokio::time::timeout(WAIT, c.event_where(|f| is(f, false, v_up)))
        .await
        .expect("a health event with discord:main not connected");
    let entry = &down["payload"]["channels"]["discord:main"];
    assert!(
        entry["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("connection lost"),
        "{down}"
    );
    assert!(
        down["payload"]["channelsDegraded"]
            .as_array()
            .is_some_and(|l| l.contains(&json!("discord:main"))),
        "{down}"
    );
    // The restarted channel establishes a new session: connected again, announced.
    let v_down = down["stateVersion"]["health"].as_u64().expect("version");
    let back = tokio::time::timeout(
        Duration::from_secs(60),
        c.event_where(|f| is(f, true, v_down)),
    )
    .await
    .expect("a health event with discord:main connected again");
    let entry = &back["payload"]["channels"]["discord:main"];
    assert_eq!(entry["running"], true, "{back}");
    assert_eq!(entry["consecutiveFailures"], 0, "{back}");
    assert_eq!(back["payload"]["channelsDegraded"], json!([]), "{back}");
}
