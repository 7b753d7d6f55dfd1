//! Sessions and turns (DESIGN.md §5-6): FIFO lanes, queue modes, aborts, idempotency,
//! bounded lanes, crash containment, durability across kill -9.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::*;

const MAIN: &str = "agent:main:main";

fn send_params(key: &str, message: &str, idem: &str) -> Value {
    json!({ "sessionKey": key, "message": message, "idempotencyKey": idem })
}

async fn chat_send(c: &mut WsClient, key: &str, message: &str, idem: &str) -> Value {
    let res = c
        .request("chat.send", Some(send_params(key, message, idem)))
        .await;
    assert_eq!(res["ok"], true, "chat.send failed: {res}");
    res["payload"].clone()
}

async fn wait_run(c: &mut WsClient, run_id: &str) -> Value {
    let res = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 20_000 })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"].clone()
}

async fn history(c: &mut WsClient, key: &str) -> Vec<Value> {
    let res = c
        .request(
            "chat.history",
            Some(json!({ "sessionKey": key, "limit": 1000 })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"]["messages"]
        .as_array()
        .expect("messages")
        .clone()
}

fn run_ids_of(messages: &[Value], role: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["runId"].as_str().unwrap_or("").to_string())
        .collect()
}

fn slow(delay_ms: u32) -> GatewayBuilder {
    TestGateway::builder().chaos().env(
        "TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS",
        &delay_ms.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_of_one_session_run_in_fifo_order_under_50_concurrent_submitters() {
    let gw = slow(1)
        .env("TROUPE__SESSIONS__LANE_CAPACITY", "100")
        .start();
    gw.wait_ready().await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(gw.client().await);
    }
    let acks =
        futures_util::future::join_all(clients.iter_mut().enumerate().map(|(i, c)| async move {
            chat_send(c, MAIN, &format!("message {i}"), &format!("fifo-{i}")).await
        }))
        .await;
    let mut run_ids: Vec<String> = acks
        .iter()
        .map(|a| a["runId"].as_str().expect("runId").to_string())
        .collect();
    run_ids.sort();
    run_ids.dedup();
    assert_eq!(run_ids.len(), 50, "50 distinct runs");
    let mut reader = gw.client().await;
    let messages = eventually(WAIT, "all 50 replies stored", || async {
        let mut c = gw.client().await;
        let m = history(&mut c, MAIN).await;
        (m.len() == 100).then_some(m)
    })
    .await;
    let users = run_ids_of(&messages, "user");
    let replies = run_ids_of(&messages, "assistant");
    assert_eq!(
        users, replies,
        "replies come in the order the turns were accepted"
    );
    for m in messages.iter().filter(|m| m["role"] == "assistant") {
        let run = wait_run(&mut reader, m["runId"].as_str().expect("id")).await;
        assert_eq!(run["status"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_sessions_run_at_the_same_time() {
    let gw = slow(100).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let a = chat_send(&mut c, MAIN, "one two three four five six", "a").await;
    let b = chat_send(
        &mut c,
        "agent:main:telegram:dm:42",
        "one two three four five six",
        "b",
    )
    .await;
    let (a_id, b_id) = (a["runId"].clone(), b["runId"].clone());
    let b_started = c.run_started(b_id.as_str().unwrap_or_default()).await;
    assert_eq!(
        b_started["payload"]["sessionKey"],
        "agent:main:telegram:dm:42"
    );
    let a_final_seen_before_b_start = c.events.iter().any(|e| {
        e["event"] == "chat" && e["payload"]["runId"] == a_id && e["payload"]["state"] == "final"
    });
    assert!(
        !a_final_seen_before_b_start,
        "session b waited for session a"
    );
    assert_eq!(
        wait_run(&mut c, a_id.as_str().expect("id")).await["status"],
        "ok"
    );
    assert_eq!(
        wait_run(&mut c, b_id.as_str().expect("id")).await["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_send_streams_deltas_then_a_final_to_the_sender() {
    let gw = slow(5).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let ack = chat_send(
        &mut c,
        MAIN,
        "alpha beta gamma delta epsilon zeta eta",
        "stream",
    )
    .await;
    assert_eq!(ack["status"], "accepted");
    assert_eq!(ack["queued"]["position"], 0);
    let run = ack["runId"].clone();
    let fin = c
        .event_where(|e| {
            e["event"] == "chat" && e["payload"]["runId"] == run && e["payload"]["state"] == "final"
        })
        .await;
    assert_eq!(
        fin["payload"]["message"]["text"],
        "echo: alpha beta gamma delta epsilon zeta eta"
    );
    let deltas: String = c
        .events
        .iter()
        .filter(|e| e["event"] == "chat" && e["payload"]["state"] == "delta")
        .map(|e| e["payload"]["delta"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        deltas, "echo: alpha beta gamma delta epsilon zeta eta",
        "deltas add up to the reply"
    );
    let seqs: Vec<u64> = c.events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "frame seq increases: {seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_method_answers_twice_on_one_id_accepted_then_final() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let id = c
        .send_request("agent", json!({ "message": "hi", "idempotencyKey": "two" }))
        .await;
    let first = c.response(&id).await;
    assert_eq!(first["payload"]["status"], "accepted", "{first}");
    let second = c.response(&id).await;
    assert_eq!(second["payload"]["status"], "ok", "{second}");
    assert_eq!(second["payload"]["summary"], "echo: hi");
    assert_eq!(second["payload"]["runId"], first["payload"]["runId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_idempotency_key_returns_the_same_run_and_runs_once() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let first = chat_send(&mut c, MAIN, "only once", "same-key").await;
    let mut other = gw.client().await;
    let again = chat_send(&mut other, MAIN, "only once", "same-key").await;
    assert_eq!(first["runId"], again["runId"]);
    assert_eq!(again["duplicate"], true);
    wait_run(&mut c, first["runId"].as_str().expect("id")).await;
    let messages = history(&mut c, MAIN).await;
    assert_eq!(
        messages.len(),
        2,
        "one user message and one reply: {messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_mode_coalesces_waiting_messages_into_one_turn() {
    let gw = slow(60).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let busy = chat_send(&mut c, MAIN, "first one runs alone now", "c0").await;
    let mut ids = Vec::new();
    for (i, text) in ["second", "third", "fourth"].iter().enumerate() {
        let p = json!({ "sessionKey": MAIN, "message": text, "idempotencyKey": format!("c{}", i + 1), "queueMode": "collect" });
        let res = c.request("chat.send", Some(p)).await;
        assert_eq!(res["payload"]["queued"]["position"], i + 1, "{res}");
        ids.push(res["payload"]["runId"].as_str().expect("id").to_string());
    }
    assert_eq!(
        wait_run(&mut c, busy["runId"].as_str().expect("id")).await["status"],
        "ok"
    );
    let carrier = wait_run(&mut c, &ids[0]).await;
    assert_eq!(carrier["status"], "ok");
    assert_eq!(carrier["summary"], "echo: second\n\nthird\n\nfourth");
    for id in &ids[1..] {
        assert_eq!(wait_run(&mut c, id).await["status"], "coalesced");
    }
    let replies = run_ids_of(&history(&mut c, MAIN).await, "assistant");
    assert_eq!(replies.len(), 2, "two turns ran: {replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_mode_aborts_the_active_run_drops_the_waiting_and_runs_the_newest() {
    let gw = slow(200).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let active = chat_send(
        &mut c,
        MAIN,
        "long running turn with many many words in it",
        "i0",
    )
    .await;
    let active_id = active["runId"].clone();
    c.run_started(active_id.as_str().unwrap_or_default()).await;
    let waiting = chat_send(&mut c, MAIN, "waiting", "i1").await;
    let p = json!({ "sessionKey": MAIN, "message": "urgent", "idempotencyKey": "i2", "queueMode": "interrupt" });
    let urgent = c.request("chat.send", Some(p)).await["payload"].clone();
    assert_eq!(
        wait_run(&mut c, active_id.as_str().expect("id")).await["status"],
        "aborted"
    );
    assert_eq!(
        wait_run(&mut c, waiting["runId"].as_str().expect("id")).await["status"],
        "aborted"
    );
    let done = wait_run(&mut c, urgent["runId"].as_str().expect("id")).await;
    assert_eq!(done["status"], "ok");
    assert_eq!(done["summary"], "echo: urgent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_abort_cancels_the_active_run_and_the_lane_moves_on() {
    let gw = slow(200).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let a = chat_send(
        &mut c,
        MAIN,
        "one two three four five six seven eight nine",
        "ab0",
    )
    .await;
    let b = chat_send(&mut c, MAIN, "next", "ab1").await;
    let a_id = a["runId"].clone();
    c.run_started(a_id.as_str().unwrap_or_default()).await;
    let abort = c
        .request("chat.abort", Some(json!({ "sessionKey": MAIN })))
        .await;
    assert_eq!(abort["payload"]["aborted"], true, "{abort}");
    assert_eq!(abort["payload"]["cleared"], 0);
    let aborted = c
        .event_where(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == a_id
                && e["payload"]["state"] == "aborted"
        })
        .await;
    assert!(aborted["payload"]["message"]["text"].is_string());
    assert_eq!(
        wait_run(&mut c, b["runId"].as_str().expect("id")).await["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_abort_with_clear_queued_drops_the_waiting_turns_too() {
    let gw = slow(200).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let a = chat_send(
        &mut c,
        MAIN,
        "one two three four five six seven eight nine",
        "cq0",
    )
    .await;
    let b = chat_send(&mut c, MAIN, "queued one", "cq1").await;
    let d = chat_send(&mut c, MAIN, "queued two", "cq2").await;
    let abort = c
        .request(
            "chat.abort",
            Some(json!({ "sessionKey": MAIN, "clearQueued": true })),
        )
        .await;
    assert_eq!(abort["payload"]["aborted"], true, "{abort}");
    assert_eq!(abort["payload"]["cleared"], 2);
    for run in [&a, &b, &d] {
        assert_eq!(
            wait_run(&mut c, run["runId"].as_str().expect("id")).await["status"],
            "aborted"
        );
    }
    let after = chat_send(&mut c, MAIN, "lane is free", "cq3").await;
    assert_eq!(after["queued"]["position"], 0);
    assert_eq!(
        wait_run(&mut c, after["runId"].as_str().expect("id")).await["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_ends_the_run_with_an_error_event_and_releases_the_lane() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let bad = chat_send(&mut c, MAIN, "!fail upstream said 500", "pe0").await;
    let next = chat_send(&mut c, MAIN, "after the failure", "pe1").await;
    let bad_id = bad["runId"].clone();
    let err = c
        .event_where(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == bad_id
                && e["payload"]["state"] == "error"
        })
        .await;
    assert_eq!(
        err["payload"]["errorMessage"],
        "echo provider: upstream said 500"
    );
    let failed = wait_run(&mut c, bad_id.as_str().expect("id")).await;
    assert_eq!(failed["status"], "error");
    assert_eq!(
        wait_run(&mut c, next["runId"].as_str().expect("id")).await["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_panic_mid_run_fails_that_run_and_the_lane_and_other_sessions_go_on() {
    let gw = slow(150).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let doomed = chat_send(
        &mut c,
        MAIN,
        "one two three four five six seven eight nine",
        "pm0",
    )
    .await;
    let queued = chat_send(&mut c, MAIN, "queued behind", "pm1").await;
    let doomed_id = doomed["runId"].clone();
    c.run_started(doomed_id.as_str().unwrap_or_default()).await;
    let crash = c
        .request("supervisor.crash", Some(json!({ "id": "agent:main" })))
        .await;
    assert_eq!(crash["ok"], true);
    let err = c
        .event_where(|e| {
            e["event"] == "chat"
                && e["payload"]["runId"] == doomed_id
                && e["payload"]["state"] == "error"
        })
        .await;
    assert!(
        err["payload"]["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("crashed"),
        "{err}"
    );
    assert_eq!(
        wait_run(&mut c, doomed_id.as_str().expect("id")).await["status"],
        "error"
    );
    assert_eq!(
        wait_run(&mut c, queued["runId"].as_str().expect("id")).await["status"],
        "ok",
        "the lane moved on to a restarted agent"
    );
    let other = chat_send(&mut c, "agent:main:discord:dm:7", "another session", "pm2").await;
    assert_eq!(
        wait_run(&mut c, other["runId"].as_str().expect("id")).await["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_outlives_its_client_and_shows_in_history_after_reconnect() {
    let gw = slow(50).start();
    gw.wait_ready().await;
    let run_id = {
        let mut c = gw.client().await;
        let ack = chat_send(&mut c, MAIN, "finish without me please", "dc0").await;
        ack["runId"].as_str().expect("id").to_string()
    };
    let mut again = gw.client().await;
    assert_eq!(wait_run(&mut again, &run_id).await["status"], "ok");
    let messages = history(&mut again, MAIN).await;
    assert_eq!(
        messages.last().expect("reply")["text"],
        "echo: finish without me please"
    );
    let next = chat_send(&mut again, MAIN, "lane free", "dc1").await;
    assert_eq!(next["queued"]["position"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_refuses_with_retryable_unavailable_and_loses_nothing_accepted() {
    let gw = slow(200)
        .env("TROUPE__SESSIONS__LANE_CAPACITY", "2")
        .start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let mut accepted = Vec::new();
    for i in 0..3 {
        accepted.push(
            chat_send(
                &mut c,
                MAIN,
                "one two three four five six",
                &format!("full{i}"),
            )
            .await,
        );
    }
    let refused = c
        .request(
            "chat.send",
            Some(send_params(MAIN, "one too many", "full3")),
        )
        .await;
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "UNAVAILABLE");
    assert_eq!(refused["error"]["retryable"], true);
    assert!(
        refused["error"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0)
    );
    assert_eq!(refused["error"]["details"]["code"], "LANE_FULL");
    for a in &accepted {
        assert_eq!(
            wait_run(&mut c, a["runId"].as_str().expect("id")).await["status"],
            "ok"
        );
    }
    let users = run_ids_of(&history(&mut c, MAIN).await, "user");
    assert_eq!(users.len(), 3, "the refused message was not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_queued_turns_then_restart_loses_nothing_and_runs_nothing_twice() {
    let gw = slow(300).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let ack = chat_send(
            &mut c,
            MAIN,
            &format!("durable turn number {i} with words"),
            &format!("k9-{i}"),
        )
        .await;
        ids.push(ack["runId"].as_str().expect("id").to_string());
    }
    let first = ids[0].clone();
    c.run_started(first.as_str()).await;
    drop(c);
    let home = gw.kill9();

    let gw = TestGateway::builder().start_in(home);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let interrupted = wait_run(&mut c, &ids[0]).await;
    assert_eq!(
        interrupted["status"], "error",
        "the run cut by kill -9 is failed visibly: {interrupted}"
    );
    assert!(
        interrupted["error"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted")
    );
    for id in &ids[1..] {
        assert_eq!(
            wait_run(&mut c, id).await["status"],
            "ok",
            "queued turn {id} ran after the restart"
        );
    }
    let messages = history(&mut c, MAIN).await;
    assert_eq!(
        run_ids_of(&messages, "user"),
        ids,
        "every accepted message is still there, in order"
    );
    assert_eq!(
        run_ids_of(&messages, "assistant"),
        ids[1..].to_vec(),
        "each queued turn answered exactly once"
    );
    let retry = chat_send(&mut c, MAIN, "durable turn number 1 with words", "k9-1").await;
    assert_eq!(retry["runId"], ids[1], "idempotency survives the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_params_are_invalid_request_naming_the_field() {
    let gw = TestGateway::builder().start();
    let mut c = gw.client().await;
    let cases = [
        (
            "chat.send",
            json!({ "sessionKey": MAIN, "message": "x" }),
            "idempotencyKey",
        ),
        (
            "chat.send",
            json!({ "sessionKey": MAIN, "message": "x", "idempotencyKey": "k", "colour": 1 }),
            "colour",
        ),
        (
            "chat.send",
            json!({ "sessionKey": MAIN, "message": 5, "idempotencyKey": "k" }),
            "invalid type",
        ),
        (
            "chat.send",
            json!({ "sessionKey": MAIN, "message": "x", "idempotencyKey": "k", "queueMode": "sometimes" }),
            "sometimes",
        ),
        ("agent", json!({ "message": "x" }), "idempotencyKey"),
        (
            "chat.history",
            json!({ "sessionKey": "agent:ghost:main" }),
            "ghost",
        ),
        ("chat.abort", json!({}), "sessionKey"),
        ("agent.wait", json!({ "runId": 7 }), "invalid type"),
    ];
    for (method, params, needle) in cases {
        let res = c.request(method, Some(params.clone())).await;
        assert_eq!(
            res["error"]["code"], "INVALID_REQUEST",
            "{method} {params}: {res}"
        );
        let msg = res["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "{method} {params}: message {msg:?} should name {needle:?}"
        );
    }
    let readonly = {
        let mut r = WsClient::open(&gw.ws_url()).await;
        r.connect(&gw.token, &["operator.read"]).await;
        r.request("chat.send", Some(send_params(MAIN, "x", "ro")))
            .await
    };
    assert_eq!(readonly["error"]["details"]["code"], "MISSING_SCOPE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_reset_and_delete() {
    let gw = TestGateway::builder().start();
    let mut c = gw.client().await;
    let a = chat_send(&mut c, MAIN, "a", "sl0").await;
    let b = chat_send(&mut c, "agent:main:slack:group:9", "b", "sl1").await;
    wait_run(&mut c, a["runId"].as_str().expect("id")).await;
    wait_run(&mut c, b["runId"].as_str().expect("id")).await;
    let list = c.request("sessions.list", None).await;
    let keys: Vec<&str> = list["payload"]["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert!(
        keys.contains(&MAIN) && keys.contains(&"agent:main:slack:group:9"),
        "{list}"
    );
    let reset = c
        .request("sessions.reset", Some(json!({ "sessionKey": MAIN })))
        .await;
    assert_eq!(reset["payload"]["ok"], true);
    assert!(history(&mut c, MAIN).await.is_empty());
    let delete = c
        .request(
            "sessions.delete",
            Some(json!({ "sessionKey": "agent:main:slack:group:9" })),
        )
        .await;
    assert_eq!(delete["payload"]["existed"], true);
    let list = c.request("sessions.list", None).await;
    let keys: Vec<&str> = list["payload"]["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert!(!keys.contains(&"agent:main:slack:group:9"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restart_during_a_run_loses_neither_the_reply_nor_the_order() {
    let gw = slow(150).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let first = chat_send(&mut c, MAIN, "one two three four five six", "sr0").await;
    let second = chat_send(&mut c, MAIN, "after the store came back", "sr1").await;
    let first_id = first["runId"].clone();
    c.run_started(first_id.as_str().unwrap_or_default()).await;
    let crash = c
        .request("supervisor.crash", Some(json!({ "id": "store" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    assert_eq!(
        wait_run(&mut c, first_id.as_str().expect("id")).await["status"],
        "ok"
    );
    assert_eq!(
        wait_run(&mut c, second["runId"].as_str().expect("id")).await["status"],
        "ok"
    );
    let messages = history(&mut c, MAIN).await;
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(
        texts,
        [
            "one two three four five six",
            "echo: one two three four five six",
            "after the store came back",
            "echo: after the store came back"
        ],
        "both replies stored, in turn order"
    );
    assert_eq!(
        node(&gw.tree().await, "store").expect("store")["restarts"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cannot_pile_up_unanswered_requests_without_limit() {
    let gw = slow(300).start();
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let run = chat_send(
        &mut c,
        MAIN,
        "one two three four five six seven eight nine ten",
        "pile",
    )
    .await;
    let run_id = run["runId"].as_str().expect("id").to_string();
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(
            c.send_request(
                "agent.wait",
                json!({ "runId": run_id, "timeoutMs": 60_000 }),
            )
            .await,
        );
    }
    let mut refused = 0;
    let mut answered = 0;
    while refused + answered < 300 {
        match c.recv().await {
            Received::Frame(f) if f["type"] == "res" => {
                if f["error"]["details"]["code"] == "TOO_MANY_IN_FLIGHT" {
                    assert_eq!(f["error"]["retryable"], true);
                    refused += 1;
                } else {
                    assert_eq!(f["payload"]["status"], "ok", "{f}");
                    answered += 1;
                }
            }
            Received::Frame(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answered, 256, "the limit of owed answers per connection");
    assert_eq!(refused, 44);
    assert_eq!(
        c.request("health", None).await["ok"],
        true,
        "the connection is still usable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_follower_of_a_session_gets_the_same_events_each_with_its_own_seq() {
    // The payloads are serialized once for all connections (each adds its own `seq`):
    // followers that joined at different times must still see identical payloads and a
    // gap-free `seq` of their own.
    // No `tick` events in between: the run's events are all a follower gets.
    let gw = TestGateway::builder()
        .env("TROUPE__GATEWAY__WS__TICK_INTERVAL_MS", "3600000")
        .start();
    gw.wait_ready().await;
    let mut sender = gw.client().await;
    let mut followers = Vec::new();
    for _ in 0..3 {
        let mut c = gw.client().await;
        history(&mut c, MAIN).await;
        followers.push(c);
    }
    let accepted = chat_send(&mut sender, MAIN, "hello followers", "follow-1").await;
    let run_id = accepted["runId"].as_str().expect("runId").to_string();
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for c in &mut followers {
        let mut frames = Vec::new();
        loop {
            let frame = c
                .event_where(|e| e["payload"]["runId"] == run_id.as_str())
                .await;
            let done = frame["event"] == "chat" && frame["payload"]["state"] == "final";
            frames.push(frame);
            if done {
                break;
            }
        }
        seen.push(frames);
    }
    let payloads = |frames: &[Value]| -> Vec<Value> {
        frames
            .iter()
            .map(|f| json!([f["event"], f["payload"]]))
            .collect()
    };
    for frames in &seen {
        assert_eq!(
            payloads(frames),
            payloads(&seen[0]),
            "same events, same payloads"
        );
        assert_eq!(
            frames.last().unwrap()["payload"]["message"]["text"],
            "echo: hello followers"
        );
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| f["seq"].as_u64().expect("seq"))
            .collect();
        let expected: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "each connection's own seq, without gaps");
    }
}
