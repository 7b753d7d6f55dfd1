//! Channels end to end (DESIGN.md §8): the real gateway with a real teloxide client polling
//! a fake Telegram Bot API on 127.0.0.1; the echo agent answers "echo: <message>".
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_telegram.rs"]
mod fake_telegram;
mod support;

use std::time::Duration;

use fake_telegram::{BOT_USERNAME, FakeTelegram};
use serde_json::{Value, json};
use support::{TestGateway, WAIT, cli, cli_env, eventually, node};

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
    node(&gw.tree().await, "telegram:main")
        .cloned()
        .expect("telegram:main in the tree")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_round_trip_with_open_policy_and_typing_indicator() {
    let fake = FakeTelegram::start(TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), &fake, "dm_policy = \"open\"");
    // A turn slow enough to show "typing" while it runs (a turn that ends first cancels
    // the indicator, as it should).
    let gw = builder(false)
        .env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "400")
        .start_in(home);
    fake.dm(1001, "hello there");
    eventually(WAIT, "typing shown while the turn runs", || async {
        fake.actions()
            .iter()
            .any(|(c, a)| *c == 1001 && a == "typing")
            .then_some(())
    })
    .await;
    replies(&fake, 1001, &["echo: hello there"]).await;
    let tree = gw.tree().await;
    let channels = node(&tree, "channels").expect("channels supervisor");
    assert_eq!(channels["kind"], "supervisor");
    assert_eq!(
        node(&tree, "telegram:main").expect("child")["state"],
        "running"
    );
    // The transcript is in the DM's session.
    let mut c = gw.client().await;
    let res = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": "agent:main:telegram:dm:1001" })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    assert_eq!(res["payload"]["messages"][0]["text"], "hello there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_answer_only_mentions_and_replies_to_the_bot() {
    let fake = FakeTelegram::start(TOKEN);
    let _gw = gateway(&fake, "", false);
    let group = -500;
    fake.group(group, 11, "just chatting, not for the bot", false);
    fake.group(
        group,
        11,
        &format!("@{BOT_USERNAME} what time is it"),
        false,
    );
    fake.group(group, 12, "and you?", true);
    // Per chat order: had the first message been answered, its reply would come first.
    replies(&fake, group, &["echo: what time is it", "echo: and you?"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_policy_all_answers_everything_and_disabled_dms_are_ignored() {
    let fake = FakeTelegram::start(TOKEN);
    let _gw = gateway(
        &fake,
        "group_policy = \"all\"\ndm_policy = \"disabled\"",
        false,
    );
    fake.dm(4001, "anyone?");
    fake.group(-600, 11, "no mention needed", false);
    replies(&fake, -600, &["echo: no mention needed"]).await;
    fake.group(-600, 11, "second", false);
    replies(&fake, -600, &["echo: no mention needed", "echo: second"]).await;
    assert!(fake.texts_to(4001).is_empty(), "a disabled DM was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_telegram_channel_is_restarted_after_backoff_and_answers() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", true);
    fake.dm(1002, "before");
    replies(&fake, 1002, &["echo: before"]).await;
    let mut c = gw.client().await;
    let res = c
        .request("supervisor.crash", Some(json!({ "id": "telegram:main" })))
        .await;
    assert_eq!(res["ok"], true, "{res}");
    // Down in health (from the actor stopping or, had it died without stopping, from its
    // exit), then connected again once the restarted actor polls.
    let down = health_event(&mut c, false, 0).await;
    let entry = &down["payload"]["channels"]["telegram:main"];
    assert_eq!(entry["running"], false, "{down}");
    let v_down = down["stateVersion"]["health"].as_u64().expect("version");
    eventually(WAIT, "telegram:main waits in backoff", || async {
        let n = telegram_node(&gw).await;
        (n["state"] == "backoff" || n["restarts"] == 1).then_some(())
    })
    .await;
    let restarted = gw.child_restarted("telegram:main", 1).await;
    assert_eq!(restarted["lastExit"]["reason"], "panic", "{restarted}");
    fake.dm(1002, "after");
    replies(&fake, 1002, &["echo: before", "echo: after"]).await;
    let up = health_event(&mut c, true, v_down).await;
    assert_eq!(
        up["payload"]["channels"]["telegram:main"]["running"], true,
        "{up}"
    );
    // Other children were untouched.
    let tree = gw.tree().await;
    assert_eq!(node(&tree, "agent:main").unwrap()["restarts"], 0);
    assert_eq!(node(&tree, "session-queue").unwrap()["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_long_poll_is_restarted_by_the_watchdog_with_its_reason() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    fake.dm(1003, "first");
    replies(&fake, 1003, &["echo: first"]).await;
    fake.stall_polls(true);
    let failed = eventually(
        Duration::from_secs(60),
        "telegram:main restarted by its watchdog",
        || async {
            let n = telegram_node(&gw).await;
            let stalled = n["lastExit"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("long-poll stalled"));
            (n["restarts"].as_u64() >= Some(1) && stalled).then_some(n)
        },
    )
    .await;
    assert_eq!(failed["lastExit"]["reason"], "error", "{failed}");
    fake.stall_polls(false);
    fake.dm(1003, "second");
    replies(&fake, 1003, &["echo: first", "echo: second"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_burst_loses_nothing_and_answers_each_message_once_in_order() {
    const CHATS: i64 = 10;
    const PER_CHAT: usize = 20;
    let fake = FakeTelegram::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    for i in 0..PER_CHAT {
        for chat in 0..CHATS {
            fake.dm(2000 + chat, &format!("c{chat} m{i}"));
        }
    }
    eventually(WAIT, "some replies went out", || async {
        (fake.sent().len() >= 20).then_some(())
    })
    .await;
    // Stop the replies on the wire, wait until every chat still owed one is blocked
    // sending it (so each earlier send is recorded as sent), then kill -9.
    fake.hold_sends(true);
    eventually(WAIT, "every unfinished chat is sending", || async {
        let held = fake.held_chats();
        let unfinished: Vec<i64> = (0..CHATS)
            .map(|c| 2000 + c)
            .filter(|c| fake.texts_to(*c).len() < PER_CHAT)
            .collect();
        unfinished.iter().all(|c| held.contains(c)).then_some(())
    })
    .await;
    let before = fake.sent().len();
    assert!(
        before < (CHATS as usize) * PER_CHAT,
        "the burst finished before the kill"
    );
    let home = gw.kill9();
    // The held sends died with the process before Telegram processed them.
    fake.drop_held_sends();
    let _gw = builder(false).start_in(home);
    eventually(Duration::from_secs(90), "all 200 replies", || async {
        (fake.sent().len() >= (CHATS as usize) * PER_CHAT).then_some(())
    })
    .await;
    for chat in 0..CHATS {
        let expected: Vec<String> = (0..PER_CHAT)
            .map(|i| format!("echo: c{chat} m{i}"))
            .collect();
        assert_eq!(fake.texts_to(2000 + chat), expected, "chat {chat}");
    }
    assert_eq!(
        fake.sent().len(),
        (CHATS as usize) * PER_CHAT,
        "a reply was sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_updates_run_once_and_equal_message_ids_in_two_chats_both_run() {
    let fake = FakeTelegram::start(TOKEN);
    let _gw = gateway(&fake, "dm_policy = \"open\"", false);
    let msg = |chat: i64, id: i64, text: &str| {
        json!({
            "message_id": id, "date": 1_700_000_000,
            "chat": { "id": chat, "type": "private", "first_name": "U" },
            "from": { "id": chat, "is_bot": false, "first_name": "U" },
            "text": text,
        })
    };
    fake.push_update(json!({ "update_id": 50, "message": msg(3101, 7, "alpha") }));
    fake.push_update(json!({ "update_id": 50, "message": msg(3101, 7, "alpha") }));
    fake.push_update(json!({ "update_id": 51, "message": msg(3102, 7, "beta") }));
    // The same message again under a new update id (a redelivery).
    fake.push_update(json!({ "update_id": 52, "message": msg(3101, 7, "alpha") }));
    fake.push_update(json!({ "update_id": 53, "message": msg(3101, 8, "end") }));
    fake.push_update(json!({ "update_id": 54, "message": msg(3102, 8, "end") }));
    replies(&fake, 3101, &["echo: alpha", "echo: end"]).await;
    replies(&fake, 3102, &["echo: beta", "echo: end"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_keeps_unknown_senders_from_the_agent_until_approved() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = gateway(&fake, "", false); // dm_policy defaults to pairing
    fake.dm(5001, "secret first words");
    let notice = eventually(WAIT, "a pairing code is sent", || async {
        fake.texts_to(5001).first().cloned()
    })
    .await;
    let mut c = gw.client().await;
    let list = c.request("pairing.list", None).await;
    assert_eq!(list["ok"], true, "{list}");
    let pending = list["payload"]["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{list}");
    let code = pending[0]["code"].as_str().unwrap().to_string();
    assert_eq!(pending[0]["senderId"], "5001");
    assert!(
        notice.contains(&code),
        "notice {notice:?} lacks code {code}"
    );
    // A second message before approval gets the same code and still reaches no agent.
    fake.dm(5001, "more secret words");
    eventually(WAIT, "the code is repeated", || async {
        (fake.texts_to(5001).len() == 2).then_some(())
    })
    .await;
    let history = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": "agent:main:telegram:dm:5001" })),
        )
        .await;
    let messages = history["payload"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        messages.is_empty(),
        "an unpaired sender reached the agent: {history}"
    );
    // Approve through the CLI.
    let home = gw.home().to_path_buf();
    let approve_code = code.clone();
    let (status, out, err) =
        tokio::task::spawn_blocking(move || cli(&home, &["pairing", "approve", &approve_code]))
            .await
            .unwrap();
    assert_eq!(status, 0, "approve failed: {out} {err}");
    assert!(out.contains("5001"), "{out}");
    let bad = c
        .request("pairing.approve", Some(json!({ "code": "NOSUCH99" })))
        .await;
    assert_eq!(bad["ok"], false, "{bad}");
    fake.dm(5001, "hello, agent");
    eventually(WAIT, "the approved sender is answered", || async {
        let texts = fake.texts_to(5001);
        (texts.len() == 3).then_some(texts)
    })
    .await;
    assert_eq!(fake.texts_to(5001)[2], "echo: hello, agent");
    let list = c.request("pairing.list", None).await;
    assert_eq!(list["payload"]["pending"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_9000_character_reply_arrives_as_three_messages_in_order() {
    let fake = FakeTelegram::start(TOKEN);
    let _gw = gateway(&fake, "dm_policy = \"open\"", false);
    let words: Vec<String> = (0..1600).map(|i| format!("w{i:04}")).collect();
    let text = words.join(" ");
    assert!(text.len() >= 9000);
    fake.dm(6001, &text);
    let parts = eventually(WAIT, "three parts", || async {
        let got = fake.texts_to(6001);
        (got.len() >= 3).then_some(got)
    })
    .await;
    assert_eq!(
        parts.len(),
        3,
        "{:?}",
        parts.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
    assert_eq!(parts.join(" "), format!("echo: {text}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_formatting_is_resent_as_plain_text() {
    let fake = FakeTelegram::start(TOKEN);
    let _gw = gateway(&fake, "dm_policy = \"open\"", false);
    fake.dm(7001, "<b>unclosed bold");
    replies(&fake, 7001, &["echo: <b>unclosed bold"]).await;
    assert_eq!(fake.parse_rejections(), 1);
    let sent = fake.sent();
    assert_eq!(sent[0].parse_mode, None, "the retry must be plain text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_send_waits_retry_after_then_delivers_once() {
    let fake = FakeTelegram::start(TOKEN);
    let _gw = gateway(&fake, "dm_policy = \"open\"", false);
    fake.rate_limit_next_sends(1);
    fake.dm(8001, "slow down");
    replies(&fake, 8001, &["echo: slow down"]).await;
    let limited = fake.rate_limited_at();
    assert_eq!(limited.len(), 1);
    let sent = fake.sent();
    assert!(
        sent[0].at.duration_since(limited[0]) >= Duration::from_millis(900),
        "resent before retry_after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_backs_off_shows_in_channels_status_and_recovers() {
    let fake = FakeTelegram::start(TOKEN);
    fake.conflict_next_polls(2);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    let mut c = gw.client().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let res = c.request("channels.status", None).await;
        let err = res["payload"]["channels"][0]["lastError"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if err.contains("409") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 409 in channels.status: {res}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.dm(9001, "still there?");
    replies(&fake, 9001, &["echo: still there?"]).await;
    // The fake records the reply before the channel has recorded it as sent.
    let body = eventually(
        WAIT,
        "GET /api/channels shows the delivery done",
        || async {
            let res = reqwest::Client::new()
                .get(gw.http("/api/channels"))
                .bearer_auth(&gw.token)
                .send()
                .await
                .ok()?;
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.ok()?;
            let ch = &body["channels"][0];
            (ch["lastOutboundAt"].is_u64() && ch["queued"] == 0 && ch["pendingDeliveries"] == 0)
                .then_some(body)
        },
    )
    .await;
    let ch = &body["channels"][0];
    assert_eq!(ch["id"], "telegram:main", "{body}");
    assert_eq!(ch["state"], "running");
    assert_eq!(ch["conflict"], false, "{body}");
    assert!(ch["connectedSince"].is_u64(), "{body}");
    assert_eq!(
        telegram_node(&gw).await["restarts"],
        0,
        "a 409 must not restart the channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_cut_by_kill9_runs_again_once_after_the_restart() {
    let fake = FakeTelegram::start(TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), &fake, "dm_policy = \"open\"");
    // Slow echo deltas: the turn is still running when the gateway dies.
    let slow = || builder(false).env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "400");
    let gw = slow().start_in(home);
    let text = "one two three four five six";
    fake.dm(1101, text);
    let mut c = gw.client().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let h = c
            .request(
                "chat.history",
                Some(json!({ "sessionKey": "agent:main:telegram:dm:1101" })),
            )
            .await;
        let first = &h["payload"]["messages"][0];
        if first["text"] == text && first.get("queued").is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the turn never started: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fake.texts_to(1101).is_empty(),
        "the turn finished before the kill"
    );
    let home = gw.kill9();
    let gw = slow().start_in(home);
    replies(&fake, 1101, &[&format!("echo: {text}")]).await;
    let mut c = gw.client().await;
    let h = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": "agent:main:telegram:dm:1101" })),
        )
        .await;
    let answers = h["payload"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    assert_eq!(answers, 1, "the cut turn ran more than once: {h}");
    fake.dm(1101, "next");
    replies(&fake, 1101, &[&format!("echo: {text}"), "echo: next"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_platform_leaves_the_gateway_ready_and_the_token_never_shows() {
    // Nothing listens on this port: getMe fails with an error whose URL holds the token.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let home = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[[channels.telegram]]\ntoken_env = \"TG_TEST_TOKEN\"\napi_url = \"http://127.0.0.1:{port}\"\n"
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    let gw = builder(false).start_in(home);
    let failed = eventually(WAIT, "telegram:main fails to reach the API", || async {
        let n = telegram_node(&gw).await;
        n["lastExit"]["message"].as_str().map(str::to_string)
    })
    .await;
    assert!(failed.contains("getMe"), "{failed}");
    // An unreachable platform does not make the gateway unready (`gateway start` waits on it).
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let status = c.request("channels.status", None).await.to_string();
    let health = c.request("health", None).await;
    let entry = &health["payload"]["channels"]["telegram:main"];
    assert_eq!(entry["connected"], false, "{health}");
    assert!(
        entry["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("getMe")),
        "{health}"
    );
    assert_eq!(
        health["payload"]["channelsDegraded"],
        json!(["telegram:main"])
    );
    let health = health.to_string();
    let tree = gw.tree().await.to_string();
    let log = std::fs::read_to_string(gw.home().join("logs/troupe.log")).unwrap_or_default();
    for (what, text) in [
        ("status", &status),
        ("health", &health),
        ("tree", &tree),
        ("log", &log),
    ] {
        assert!(
            !text.contains("TEST-token"),
            "the token leaks into the {what}: {text}"
        );
    }
}

#[test]
fn a_channel_naming_an_unknown_agent_or_missing_token_is_refused_at_start_naming_the_key() {
    let fake = FakeTelegram::start(TOKEN);
    let home = tempfile::tempdir().expect("tempdir");
    write_config(home.path(), &fake, "agent = \"ghost\"");
    let run = ["gateway", "run", "--port", "0"];
    let (code, _, err) = cli_env(home.path(), &run, &[("TG_TEST_TOKEN", TOKEN)]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("channels.telegram[0].agent"), "{err}");
    write_config(home.path(), &fake, "");
    let (code, _, err) = cli_env(home.path(), &run, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("channels.telegram[0].token_env"), "{err}");
    assert!(err.contains("TG_TEST_TOKEN"), "{err}");
}

/// `health.channels["telegram:main"]` as `health` answers it now.
async fn telegram_health(c: &mut support::WsClient) -> Value {
    let res = c.request("health", None).await;
    res["payload"]["channels"]["telegram:main"].clone()
}

/// The first `health` event after version `after` whose `telegram:main` is `connected`
/// (or not), within [`WAIT`].
async fn health_event(c: &mut support::WsClient, connected: bool, after: u64) -> Value {
    tokio::time::timeout(
        WAIT,
        c.event_where(|f| {
            f["event"] == "health"
                && f["stateVersion"]["health"].as_u64() > Some(after)
                && f["payload"]["channels"]["telegram:main"]["connected"] == connected
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("no health event with telegram:main connected={connected}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_long_poll_shows_in_health_with_its_reason_and_recovery_is_announced() {
    let fake = FakeTelegram::start(TOKEN);
    let gw = gateway(&fake, "dm_policy = \"open\"", false);
    let up = eventually(WAIT, "telegram:main connected in health", || async {
        let mut c = gw.client().await;
        let h = telegram_health(&mut c).await;
        (h["connected"] == true).then_some(h)
    })
    .await;
    assert_eq!(up["configured"], true, "{up}");
    assert_eq!(up["running"], true, "{up}");
    assert!(up["lastOkAt"].is_u64(), "{up}");
    assert_eq!(up["consecutiveFailures"], 0, "{up}");
    // A client that knows the health version of its hello: every later change is news.
    let mut c = support::WsClient::open(&gw.ws_url()).await;
    let hello = c.connect(&gw.token, &["operator.admin"]).await;
    let snapshot = &hello["payload"]["snapshot"];
    assert_eq!(snapshot["health"]["channelsDegraded"], json!([]), "{hello}");
    assert_eq!(
        snapshot["health"]["channels"]["telegram:main"]["connected"], true,
        "{hello}"
    );
    let v_up = snapshot["stateVersion"]["health"]
        .as_u64()
        .expect("version");

    // The token is revoked: Telegram answers every poll with 401.
    fake.refuse_polls(true);
    let down = health_event(&mut c, false, v_up).await;
    let v_down = down["stateVersion"]["health"].as_u64().expect("version");
    let entry = &down["payload"]["channels"]["telegram:main"];
    let why = entry["lastError"].as_str().unwrap_or_default();
    assert!(why.contains("getUpdates"), "{down}");
    assert!(!why.contains("TEST-token"), "the token leaks: {down}");
    assert!(entry["lastErrorAt"].is_u64(), "{down}");
    assert!(entry["consecutiveFailures"].as_u64() >= Some(1), "{down}");
    assert_eq!(entry["running"], true, "{down}");
    assert_eq!(down["payload"]["ok"], true, "the gateway still answers");
    assert_eq!(
        down["payload"]["channelsDegraded"],
        json!(["telegram:main"]),
        "{down}"
    );
    let h = telegram_health(&mut c).await;
    assert_eq!(h["connected"], false, "{h}");
    let listed = c.request("channels.status", None).await;
    assert_eq!(
        listed["payload"]["channels"][0]["connected"], false,
        "{listed}"
    );

    // The token works again: the next poll succeeds and that is announced once.
    fake.refuse_polls(false);
    let up = health_event(&mut c, true, v_down).await;
    assert!(up["seq"].as_u64() > down["seq"].as_u64());
    let entry = &up["payload"]["channels"]["telegram:main"];
    assert_eq!(entry["consecutiveFailures"], 0, "{up}");
    assert!(
        entry["lastError"].as_str().is_some(),
        "the last error is kept after a success: {up}"
    );
    assert_eq!(up["payload"]["channelsDegraded"], json!([]), "{up}");
    // Repeated failures are not news: only the two changes were announced.
    let changes = c
        .events
        .iter()
        .filter(|f| f["event"] == "health" && f["stateVersion"]["health"].as_u64() > Some(v_up))
        .count();
    assert_eq!(
        changes, 0,
        "health events beyond the two changes: {:?}",
        c.events
    );
    // The channel was not restarted for it, and /metrics shows it connected.
    assert_eq!(telegram_node(&gw).await["restarts"], 0);
    let text = gw.get_text("/metrics").await;
    assert!(
        text.contains("troupe_channel_connected{channel=\"telegram:main\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_channels_has_an_empty_channels_health() {
    let gw = TestGateway::builder().start();
    let mut c = gw.client().await;
    let h = c.request("health", None).await;
    assert_eq!(h["payload"]["channels"], json!({}), "{h}");
    assert_eq!(h["payload"]["channelsDegraded"], json!([]), "{h}");
    let text = gw.get_text("/metrics").await;
    assert!(
        !text.contains("troupe_channel_connected{"),
        "no channel, no sample: {text}"
    );
}
