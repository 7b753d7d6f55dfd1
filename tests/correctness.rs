//! Core promises tried the way real clients stress them (DESIGN.md §5-6): bursts written
//! back to back on one connection, the same ids in different sessions, a queue crash in
//! the middle of work, SIGTERM with turns running, transcripts of megabytes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use std::collections::HashMap;

use fake_llm::{FakeLlm, Script};
use serde_json::{Value, json};
use support::*;

fn slow(delay_ms: u32) -> GatewayBuilder {
    TestGateway::builder()
        .chaos()
        .env("TROUPE__SESSIONS__LANE_CAPACITY", "100")
        .env(
            "TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS",
            &delay_ms.to_string(),
        )
}

fn sends(key: &str, prefix: &str, n: usize) -> Vec<(&'static str, Value)> {
    (0..n)
        .map(|i| {
            let text = format!("{prefix}{i:03}");
            let params = json!({ "sessionKey": key, "message": text, "idempotencyKey": text });
            ("chat.send", params)
        })
        .collect()
}

fn is_interim(f: &Value) -> bool {
    f["payload"]["status"] == "accepted"
}

async fn history_page(c: &mut WsClient, key: &str, extra: Value) -> Value {
    let mut params = json!({ "sessionKey": key, "limit": 1000 });
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let res = c.request("chat.history", Some(params)).await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"].clone()
}

async fn history(c: &mut WsClient, key: &str) -> Vec<Value> {
    history_page(c, key, json!({})).await["messages"]
        .as_array()
        .expect("messages")
        .clone()
}

async fn wait_all(c: &mut WsClient, run_ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for run in run_ids {
        let res = c
            .request(
                "agent.wait",
                Some(json!({ "runId": run, "timeoutMs": 60_000 })),
            )
            .await;
        assert_eq!(res["ok"], true, "{res}");
        out.push(res["payload"].clone());
    }
    out
}

fn texts(messages: &[Value], role: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn expected(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// Asserts the transcript is in turn order: user, then its reply (same run), then the next.
fn assert_turn_order(messages: &[Value]) {
    for pair in messages.chunks(2) {
        assert_eq!(pair[0]["role"], "user", "{messages:?}");
        if let Some(reply) = pair.get(1) {
            assert_eq!(reply["role"], "assistant", "{messages:?}");
            assert_eq!(reply["runId"], pair[0]["runId"], "{messages:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_written_back_to_back_on_a_fresh_connection_is_accepted_and_run_in_order() {
    let gw = slow(1).start();
    gw.wait_ready().await;
    for round in 0..3 {
        // A fresh connection each round: its first frames race the queue address lookup.
        let mut c = gw.client().await;
        let key = format!("agent:main:burst{round}");
        let prefix = format!("r{round}-d");
        let ids = c.burst(&sends(&key, &prefix, 30)).await;
        let acks = c.responses_to(&ids, |_| false).await;
        let run_ids: Vec<String> = ids
            .iter()
            .map(|id| {
                let ack = &acks[id];
                assert_eq!(ack["ok"], true, "{ack}");
                ack["payload"]["runId"].as_str().expect("runId").to_string()
            })
            .collect();
        wait_all(&mut c, &run_ids).await;
        let messages = history(&mut c, &key).await;
        assert_eq!(texts(&messages, "user"), expected(&prefix, 30));
        assert_turn_order(&messages);
        let started: Vec<&str> = c
            .events
            .iter()
            .filter(|e| e["event"] == "agent" && e["payload"]["data"]["phase"] == "start")
            .filter_map(|e| e["payload"]["runId"].as_str())
            .collect();
        assert_eq!(started, run_ids, "runs started in frame order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_survives_a_session_queue_crash_in_order_and_nothing_runs_twice() {
    let gw = slow(2).start();
    gw.wait_ready().await;
    let mut admin = gw.client().await;
    let mut c = gw.client().await;
    let key = "agent:main:crashburst";
    let ids = c.burst(&sends(key, "d", 30)).await;
    let first = c.response(&ids[0]).await;
    assert_eq!(first["ok"], true, "{first}");
    let crash = admin
        .request("supervisor.crash", Some(json!({ "id": "session-queue" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    let acks = c.responses_to(&ids[1..], |_| false).await;
    let mut run_ids = vec![first["payload"]["runId"].as_str().unwrap().to_string()];
    for id in &ids[1..] {
        let ack = &acks[id];
        assert_eq!(ack["ok"], true, "no caller is told to retry: {ack}");
        run_ids.push(ack["payload"]["runId"].as_str().unwrap().to_string());
    }
    let mut unique = run_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 30, "one run per message");
    let ends = wait_all(&mut c, &run_ids).await;
    for end in &ends {
        let ok = end["status"] == "ok";
        let honest = end["error"]
            .as_str()
            .is_some_and(|e| e.contains("session queue"));
        assert!(
            ok || honest,
            "a run ends ok or says the queue restarted: {end}"
        );
    }
    let messages = history(&mut c, key).await;
    assert_eq!(texts(&messages, "user"), expected("d", 30), "FIFO kept");
    let replies = texts(&messages, "assistant");
    let mut once = replies.clone();
    once.dedup();
    assert_eq!(replies, once, "no reply twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transcript_is_in_turn_order_with_waiting_messages_last_and_marked_queued() {
    let gw = slow(40).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let key = "agent:main:order";
    let ids = c.burst(&sends(key, "t", 8)).await;
    let acks = c.responses_to(&ids, |_| false).await;
    let run_ids: Vec<String> = ids
        .iter()
        .map(|id| acks[id]["payload"]["runId"].as_str().unwrap().to_string())
        .collect();
    // Once the first turn has finished, the rest still waiting are listed after it, queued.
    let shared = tokio::sync::Mutex::new(c);
    let page = eventually(WAIT, "a finished turn with others waiting", || async {
        {
            let messages = history(&mut *shared.lock().await, key).await;
            let done = messages.iter().any(|m| m["role"] == "assistant");
            let waiting = messages.iter().any(|m| m["queued"] == true);
            (done && waiting).then_some(messages)
        }
    })
    .await;
    let first_queued = page.iter().position(|m| m["queued"] == true).unwrap();
    assert!(
        page[first_queued..]
            .iter()
            .all(|m| m["queued"] == true && m["role"] == "user"),
        "waiting messages come last: {page:?}"
    );
    assert_turn_order(&page[..first_queued & !1]);
    let mut c = shared.into_inner();
    wait_all(&mut c, &run_ids).await;
    let messages = history(&mut c, key).await;
    assert_eq!(messages.len(), 16);
    assert_turn_order(&messages);
    assert!(messages.iter().all(|m| m.get("queued").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_sees_only_the_turns_before_its_own_each_with_its_reply() {
    let fake = FakeLlm::start();
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agents").join("oa");
    std::fs::create_dir_all(&dir).expect("agent dir");
    std::fs::write(
        dir.join("agent.toml"),
        "provider = \"openai\"\nmodel = \"fake-model\"\n",
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
    for i in 0..5 {
        fake.push(Script::reply(&format!("reply {i}"), 1));
    }
    let mut c = gw.client().await;
    let ids = c.burst(&sends("agent:oa:ctx", "m", 5)).await;
    let acks = c.responses_to(&ids, |_| false).await;
    let run_ids: Vec<String> = ids
        .iter()
        .map(|id| acks[id]["payload"]["runId"].as_str().unwrap().to_string())
        .collect();
    let ends = wait_all(&mut c, &run_ids).await;
    assert!(ends.iter().all(|e| e["status"] == "ok"), "{ends:?}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 5);
    for (n, request) in requests.iter().enumerate() {
        let got: Vec<(String, String)> = request.body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["role"] != "system")
            .map(|m| {
                let role = m["role"].as_str().unwrap_or_default().to_string();
                (role, m["content"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        let mut want = Vec::new();
        for j in 0..n {
            want.push(("user".to_string(), format!("m{j:03}")));
            want.push(("assistant".to_string(), format!("reply {j}")));
        }
        want.push(("user".to_string(), format!("m{n:03}")));
        assert_eq!(got, want, "context of turn {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_in_another_session_is_another_turn() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let mut finals = HashMap::new();
    for (key, text) in [("agent:main:a", "from A"), ("agent:main:b", "from B")] {
        let params = json!({ "message": text, "sessionKey": key, "idempotencyKey": "k" });
        let id = c.send_request("agent", params).await;
        let done = c.responses_to(&[id], is_interim).await;
        finals.insert(key, done.into_values().next().unwrap());
    }
    let (a, b) = (&finals["agent:main:a"], &finals["agent:main:b"]);
    assert_ne!(a["payload"]["runId"], b["payload"]["runId"], "{a} {b}");
    assert_eq!(b["payload"]["summary"], "echo: from B", "{b}");
    assert_eq!(
        texts(&history(&mut c, "agent:main:b").await, "user"),
        ["from B"]
    );
    // The same key again in the same session is the same run.
    let again = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": "agent:main:b", "message": "x", "idempotencyKey": "k" })),
        )
        .await;
    assert_eq!(again["payload"]["runId"], b["payload"]["runId"]);
    assert_eq!(again["payload"]["duplicate"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_agent_calls_do_not_lock_the_connection() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let bad: Vec<(&str, Value)> = (0..300)
        .map(|i| {
            let params =
                json!({ "message": "x", "agentId": "nobody", "idempotencyKey": format!("b{i}") });
            ("agent", params)
        })
        .collect();
    let ids = c.burst(&bad).await;
    let answers = c.responses_to(&ids, |_| false).await;
    assert!(
        answers
            .values()
            .all(|a| a["ok"] == false && a["error"]["details"]["code"] != "TOO_MANY_IN_FLIGHT")
    );
    let id = c
        .send_request(
            "agent",
            json!({ "message": "still here", "idempotencyKey": "good" }),
        )
        .await;
    let done = c.responses_to(&[id], is_interim).await;
    let done = done.into_values().next().unwrap();
    assert_eq!(done["payload"]["status"], "ok", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_session_keys_are_accepted_and_control_characters_refused_and_never_logged_raw() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for key in [
        "agent:main:work",
        "agent:main:acc-1234",
        "agent:main:telegram:group:42:thread:7",
        "work",
    ] {
        let res = c
            .request(
                "chat.send",
                Some(json!({ "sessionKey": key, "message": "hi", "idempotencyKey": key })),
            )
            .await;
        assert_eq!(res["ok"], true, "{key}: {res}");
    }
    // A bare key is the default agent's: `work` is `agent:main:work`.
    let page = history_page(&mut c, "work", json!({})).await;
    assert_eq!(page["sessionKey"], "agent:main:work");
    for key in [
        "agent:main:x\nINJECTED line",
        "agent:main:\u{0}",
        "agent:main:\u{1b}[31m",
    ] {
        let res = c
            .request(
                "chat.send",
                Some(json!({ "sessionKey": key, "message": "hi", "idempotencyKey": "c" })),
            )
            .await;
        assert_eq!(res["ok"], false, "{key:?}: {res}");
        assert_eq!(res["error"]["details"]["code"], "INVALID_SESSION_KEY");
    }
    let log = gw.home().join("logs").join("troupe.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.lines().any(|l| l.starts_with("INJECTED")),
        "no line injected into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_callers_get_the_real_outcome_across_a_session_queue_crash() {
    let gw = slow(20).start();
    gw.wait_ready().await;
    let mut admin = gw.client().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(gw.client().await);
    }
    let mut ids = Vec::new();
    for (n, c) in clients.iter_mut().enumerate() {
        let frames: Vec<(&str, Value)> = (0..10)
            .map(|i| {
                let params = json!({ "message": format!("c{n} m{i}"), "sessionKey": format!("agent:main:crash{n}"), "idempotencyKey": format!("c{n}-{i}") });
                ("agent", params)
            })
            .collect();
        ids.push(c.burst(&frames).await);
    }
    let first = clients[0].response(&ids[0][0]).await;
    clients[0]
        .run_started(first["payload"]["runId"].as_str().unwrap())
        .await;
    let crash = admin
        .request("supervisor.crash", Some(json!({ "id": "session-queue" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    let mut outcomes = Vec::new();
    for (c, ids) in clients.iter_mut().zip(&ids) {
        let finals = c.responses_to(ids, is_interim).await;
        outcomes.extend(finals.into_values());
    }
    assert_eq!(outcomes.len(), 50);
    for f in &outcomes {
        assert_eq!(f["ok"], true, "a final answer, not a retryable error: {f}");
        let p = &f["payload"];
        let honest = p["error"]
            .as_str()
            .is_some_and(|e| e.contains("session queue crashed or was restarted"));
        assert!(p["status"] == "ok" || honest, "{f}");
    }
    let failed = outcomes
        .iter()
        .filter(|f| f["payload"]["status"] != "ok")
        .count();
    assert!(
        failed <= 5,
        "only runs in progress at the crash fail: {failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_turns_finish_and_keeps_queued_ones_for_the_next_start() {
    let mut gw = slow(300)
        .env("TROUPE__GATEWAY__SHUTDOWN_TIMEOUT_MS", "10000")
        .start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let mut running = Vec::new();
    let mut queued_ids = Vec::new();
    for s in 0..3 {
        let frames: Vec<(&str, Value)> = (0..4)
            .map(|i| {
                let params = json!({ "message": format!("s{s} m{i}"), "sessionKey": format!("agent:main:drain{s}"), "idempotencyKey": format!("s{s}-{i}") });
                ("agent", params)
            })
            .collect();
        let ids = c.burst(&frames).await;
        let accepted = c.response(&ids[0]).await;
        running.push((
            ids[0].clone(),
            accepted["payload"]["runId"].as_str().unwrap().to_string(),
        ));
        queued_ids.extend(ids[1..].iter().cloned());
    }
    for (_, run) in &running {
        c.run_started(run).await;
    }
    gw.terminate_nowait();
    let ids: Vec<String> = running.iter().map(|(id, _)| id.clone()).collect();
    let finals = c.responses_to(&ids, is_interim).await;
    for f in finals.values() {
        assert_eq!(f["payload"]["status"], "ok", "a running turn finished: {f}");
    }
    let status = gw.wait_exit();
    assert!(status.success(), "clean exit: {status:?}");
    let home = gw.kill9();
    let gw = slow(1).start_in(home);
    gw.wait_ready().await;
    let c = tokio::sync::Mutex::new(gw.client().await);
    for s in 0..3 {
        let key = format!("agent:main:drain{s}");
        let messages = eventually(WAIT, "queued turns ran after the restart", || async {
            let m = history(&mut *c.lock().await, &key).await;
            (texts(&m, "assistant").len() == 4).then_some(m)
        })
        .await;
        assert_turn_order(&messages);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_megabyte_messages_is_paged_by_bytes_and_never_closes_the_reader() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    // 24 messages of 200 KB (12 turns, posted over REST so no events stream to `c`): 4.8 MB
    // of transcript, more than a connection may have unsent (4 MiB).
    let big = "x".repeat(200_000);
    let http = reqwest::Client::new();
    let mut run_ids = Vec::new();
    for i in 0..12 {
        let res: Value = http
            .post(gw.http("/api/sessions/agent:main:big/messages"))
            .bearer_auth(&gw.token)
            .json(&json!({ "message": format!("{i} {big}"), "idempotencyKey": format!("big{i}") }))
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("json");
        run_ids.push(res["runId"].as_str().expect("runId").to_string());
    }
    wait_all(&mut c, &run_ids).await;
    let mut seen = Vec::new();
    let mut before = Value::Null;
    loop {
        let page = history_page(&mut c, "agent:main:big", json!({ "before": before })).await;
        let messages = page["messages"].as_array().unwrap().clone();
        let bytes: usize = messages
            .iter()
            .map(|m| m["text"].as_str().unwrap().len())
            .sum();
        assert!(
            bytes <= 1024 * 1024,
            "a page holds at most 1 MiB of text: {bytes}"
        );
        for m in &messages {
            assert_eq!(m["truncated"], true, "long texts are cut and flagged");
            assert!(m["bytes"].as_u64().unwrap() > 200_000);
        }
        seen.splice(0..0, messages);
        if page["hasMore"] != true {
            break;
        }
        before = page["nextBefore"].clone();
    }
    assert_eq!(seen.len(), 24, "paging walks the whole transcript");
    assert_turn_order(&seen);
    let health = c.request("health", None).await;
    assert_eq!(health["ok"], true, "the connection is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_tell_the_truth_about_restarts_and_internal_errors() {
    let gw = TestGateway::builder().chaos().start();
    gw.wait_ready().await;
    let mut admin = gw.client().await;
    // A panicking connection handler: 1011, not a dropped socket.
    let mut victim = gw.client().await;
    let id = format!("ws:{}", victim.conn_id);
    let crash = admin
        .request("supervisor.crash", Some(json!({ "id": id })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    let (_, close) = victim.until_closed().await;
    assert_eq!(u16::from(close.expect("a close frame").code), 1011);
    // Restarting `clients` while the gateway runs on: 1012 (reconnect), no `shutdown`.
    let mut other = gw.client().await;
    // Over REST: every WS connection, an admin's too, belongs to `clients`.
    let restart = reqwest::Client::new()
        .post(gw.http("/api/supervisor/restart"))
        .bearer_auth(&gw.token)
        .json(&json!({ "id": "clients" }))
        .send()
        .await
        .expect("POST");
    assert!(restart.status().is_success(), "{restart:?}");
    let (frames, close) = other.until_closed().await;
    assert_eq!(u16::from(close.expect("a close frame").code), 1012);
    assert!(
        frames.iter().all(|f| f["event"] != "shutdown"),
        "{frames:?}"
    );
    // A connection made at once, maybe while the old `clients` is still stopping, waits
    // for the new one and is served (tests/clients_restart.rs tries this hard).
    let mut again = gw.client().await;
    assert_eq!(again.request("health", None).await["ok"], true);
    gw.child_restarted("clients", 1).await;
}

/// Responses to `ids` read so far: each request's `accepted` run ids, and its final.
#[derive(Default)]
struct Answers {
    accepted: HashMap<String, Vec<String>>,
    finals: HashMap<String, Value>,
}

impl Answers {
    /// Reads responses until `done`; every one must be a success for a request in `ids`,
    /// and no request gets a second final.
    async fn read_until(&mut self, c: &mut WsClient, ids: &[String], done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let f = match c.recv().await {
                Received::Frame(f) => f,
                Received::Pong(_) => continue,
                Received::Closed(close) => panic!("closed: {close:?}"),
            };
            if f["type"] != "res" {
                continue;
            }
            let id = f["id"].as_str().unwrap().to_string();
            assert!(ids.contains(&id), "a response to an unknown request: {f}");
            assert_eq!(f["ok"], true, "no caller is told to retry: {f}");
            let run_id = f["payload"]["runId"].as_str().unwrap().to_string();
            if is_interim(&f) {
                self.accepted.entry(id).or_default().push(run_id);
            } else {
                assert!(
                    self.finals.insert(id, f.clone()).is_none(),
                    "a second final: {f}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_sent_while_the_session_queue_crashes_again_and_again_are_accepted_and_final_once() {
    let gw = slow(20)
        .env("TROUPE__SUPERVISOR__MAX_RESTARTS", "100")
        .start();
    gw.wait_ready().await;
    let mut admin = gw.client().await;
    let mut c = gw.client().await;
    let key = "agent:main:crashloop";
    let frames = |round: u64, part: &str| -> Vec<(&'static str, Value)> {
        (0..4)
            .map(|i| {
                let text = format!("k{round}{part}{i}");
                let params = json!({ "sessionKey": key, "message": text, "idempotencyKey": text });
                ("agent", params)
            })
            .collect()
    };
    let mut ids = Vec::new();
    let mut answers = Answers::default();
    for round in 0..5u64 {
        // Some turns reach the queue before the crash, some are on their way, and some are
        // sent while it is down: the connection waits for the registry's push of the new
        // queue, then sends them (and resends what the dead one never answered) in order.
        ids.extend(c.burst(&frames(round, "a")).await);
        let crash = admin
            .request("supervisor.crash", Some(json!({ "id": "session-queue" })))
            .await;
        assert_eq!(crash["ok"], true, "{crash}");
        ids.extend(c.burst(&frames(round, "b")).await);
        gw.child_restarted("session-queue", round + 1).await;
        // The next crash comes once this instance took everything so far (a submission
        // is resent to at most 5 instances that die before answering it, then refused).
        let all = ids.clone();
        answers
            .read_until(&mut c, &ids, |a| {
                all.iter().all(|id| a.accepted.contains_key(id))
            })
            .await;
    }
    let all = ids.clone();
    answers
        .read_until(&mut c, &ids, |a| {
            all.iter().all(|id| a.finals.contains_key(id))
        })
        .await;
    // Nothing more comes for these requests (a later request's answer is read after them).
    let probe = c
        .request("chat.history", Some(json!({ "sessionKey": key })))
        .await;
    assert_eq!(probe["ok"], true, "{probe}");
    assert!(c.stashed.is_empty(), "late responses: {:?}", c.stashed);
    let mut run_ids = Vec::new();
    for id in &ids {
        let acks = &answers.accepted[id];
        assert_eq!(acks.len(), 1, "accepted exactly once: {id} {acks:?}");
        let end = &answers.finals[id]["payload"];
        assert_eq!(end["runId"], acks[0].as_str(), "{end}");
        let honest = end["error"]
            .as_str()
            .is_some_and(|e| e.contains("session queue crashed or was restarted"));
        assert!(end["status"] == "ok" || honest, "{end}");
        run_ids.push(acks[0].clone());
    }
    let mut unique = run_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "one run per message");
    let users = texts(&history(&mut c, key).await, "user");
    let mut once = users.clone();
    once.sort();
    once.dedup();
    assert_eq!(
        users.len(),
        ids.len(),
        "each message stored once: {users:?}"
    );
    assert_eq!(once.len(), ids.len(), "each message stored once: {users:?}");
}

/// A run's answer reaches its client before any of the run's events (the queue sends a
/// run's start together with its acceptance, by another path than the answer), and its
/// events come in order: the lifecycle start first, deltas that join to the final text, the
/// final last. A burst over three sessions at once, on the fast path (no delay in the echo
/// provider, so a turn is accepted, started and ended within a few hundred microseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_answer_comes_before_its_events_which_come_in_order() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for round in 0..5 {
        let mut frames = Vec::new();
        for s in 0..3 {
            let key = format!("agent:main:order{s}");
            frames.extend(sends(&key, &format!("o{round}-{s}-"), 4));
        }
        let ids = c.burst(&frames).await;
        // Every frame in arrival order until every run has its final.
        let mut seen: Vec<Value> = Vec::new();
        let mut finals = 0;
        while finals < ids.len() {
            match c.recv().await {
                Received::Frame(f) => {
                    if f["event"] == "chat" && f["payload"]["state"] == "final" {
                        finals += 1;
                    }
                    seen.push(f);
                }
                Received::Pong(_) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
        for id in &ids {
            let answer = seen
                .iter()
                .position(|f| f["type"] == "res" && f["id"] == id.as_str())
                .unwrap_or_else(|| panic!("no answer to {id}"));
            assert_eq!(seen[answer]["ok"], true, "{}", seen[answer]);
            let run_id = seen[answer]["payload"]["runId"].as_str().expect("runId");
            let events: Vec<(usize, &Value)> = seen
                .iter()
                .enumerate()
                .filter(|(_, f)| f["type"] == "event" && f["payload"]["runId"] == run_id)
                .collect();
            assert!(!events.is_empty(), "no events for {run_id}");
            assert!(
                events.iter().all(|(i, _)| *i > answer),
                "an event of {run_id} came before its answer: {seen:#?}"
            );
            let first = events[0].1;
            assert_eq!(first["event"], "agent", "{first}");
            assert_eq!(first["payload"]["data"]["phase"], "start", "{first}");
            let last = events[events.len() - 1].1;
            assert_eq!(last["payload"]["state"], "final", "{last}");
            let deltas: String = events
                .iter()
                .filter(|(_, f)| f["event"] == "chat" && f["payload"]["state"] == "delta")
                .map(|(_, f)| f["payload"]["delta"].as_str().expect("delta"))
                .collect();
            let text = last["payload"]["message"]["text"].as_str().expect("text");
            assert!(text.starts_with("echo: o"), "{text}");
            assert_eq!(
                deltas, text,
                "the deltas of {run_id} join to its final text"
            );
        }
    }
}
