//! OpenClaw's own CLI against Troupe, replayed: the exact frames `openclaw agent --message`,
//! `openclaw models list` and `openclaw logs` (openclaw 2026.9.6, gateway.mode = "remote")
//! send, and what each reads from the answers. Plus the OpenClaw fields Troupe honours
//! (`timeout`, `extraSystemPrompt`, `model`) checked against a fake LLM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use fake_llm::{FakeLlm, Script};
use serde_json::{Value, json};
use support::*;

/// The `connect` params openclaw's CLI sends (captured), with `scopes` and client per command.
fn openclaw_connect(token: &str, scope: &str, client_id: &str, mode: &str) -> Value {
    json!({
        "minProtocol": 4, "maxProtocol": 4,
        "client": {
            "id": client_id, "version": "2026.9.6", "platform": "linux", "deviceFamily": "Linux",
            "mode": mode, "instanceId": "84d78c10-11f1-437c-962b-5f11cb0197c9",
        },
        "caps": [], "auth": { "token": token }, "role": "operator", "scopes": [scope],
    })
}

/// Opens a connection and handshakes as openclaw's CLI does; returns it and `hello-ok`.
async fn openclaw_client(gw: &TestGateway, scope: &str) -> (WsClient, Value) {
    let mut c = WsClient::open(&gw.ws_url()).await;
    let hello = c
        .request(
            "connect",
            Some(openclaw_connect(&gw.token, scope, "cli", "cli")),
        )
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    (c, hello["payload"].clone())
}

/// Sends a request with openclaw's id shape (`<n>:<uuid>`) and returns its id.
async fn send_openclaw(c: &mut WsClient, n: u32, method: &str, params: Value) -> String {
    let id = format!("{n}:26c51f2d-cd15-4da2-a589-e6af262daa2a");
    let frame = json!({ "type": "req", "id": id, "method": method, "params": params });
    c.send_text(&frame.to_string()).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_agent_message_picks_the_agent_then_gets_accepted_and_a_printable_final() {
    let gw = TestGateway::builder().start();
    // 1. The roster: `agents.list {}` with operator.read.
    let (mut roster, _) = openclaw_client(&gw, "operator.read").await;
    let id = send_openclaw(&mut roster, 2, "agents.list", json!({})).await;
    let list = roster.response(&id).await;
    assert_eq!(list["ok"], true, "{list}");
    let p = &list["payload"];
    assert_eq!(p["defaultId"], "main", "{p}");
    assert_eq!(p["mainKey"], "main");
    assert_eq!(p["scope"], "per-sender");
    assert_eq!(p["agents"][0]["id"], "main");

    // 2. The turn: exactly what `openclaw agent --message hi` sends, expecting two answers.
    let (mut c, _) = openclaw_client(&gw, "operator.write").await;
    let params = json!({
        "message": "hi", "agentId": "main", "deliver": false, "timeout": 600,
        "idempotencyKey": "e81f4426-3cc0-4bfe-88da-8328f48a3069",
    });
    let id = send_openclaw(&mut c, 2, "agent", params).await;
    let accepted = c.response(&id).await;
    assert_eq!(accepted["ok"], true, "{accepted}");
    assert_eq!(accepted["payload"]["status"], "accepted");
    let run_id = accepted["payload"]["runId"].clone();
    let done = c.response(&id).await;
    assert_eq!(done["ok"], true, "{done}");
    let fin = &done["payload"];
    assert_eq!(fin["runId"], run_id);
    assert_eq!(fin["status"], "ok", "openclaw exits 0 on ok: {fin}");
    assert_eq!(
        fin["result"]["payloads"][0]["text"], "echo: hi",
        "openclaw prints result.payloads[].text: {fin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_models_list_finds_the_capability_it_requires_and_rows_it_prints() {
    let gw = TestGateway::builder().start();
    let mut c = WsClient::open(&gw.ws_url()).await;
    let connect = openclaw_connect(&gw.token, "operator.read", "gateway-client", "backend");
    let mut connect = connect;
    connect["client"]["displayName"] = json!("gateway:models.list");
    let hello = c.request("connect", Some(connect)).await;
    assert_eq!(hello["ok"], true, "{hello}");
    let caps = hello["payload"]["features"]["capabilities"]
        .as_array()
        .expect("features.capabilities");
    assert!(
        caps.iter().any(|c| c == "published-model-catalog"),
        "`openclaw models list` refuses a gateway without it: {caps:?}"
    );
    let id = send_openclaw(
        &mut c,
        2,
        "models.list",
        json!({ "view": "default", "includeDetails": true }),
    )
    .await;
    let res = c.response(&id).await;
    assert_eq!(res["ok"], true, "{res}");
    let model = &res["payload"]["models"][0];
    assert_eq!(model["id"], "main");
    assert_eq!(model["provider"], "echo");
    assert!(
        model["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{model}"
    );
    assert_eq!(model["input"], json!(["text"]));
    let id = send_openclaw(&mut c, 3, "models.list", json!({ "provider": "openai" })).await;
    let none = c.response(&id).await;
    assert_eq!(
        none["payload"]["models"],
        json!([]),
        "the provider filter: {none}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_logs_tails_the_gateway_log_and_follows_with_the_cursor() {
    let gw = TestGateway::builder().start();
    let (mut c, hello) = openclaw_client(&gw, "operator.read").await;
    assert!(
        hello["features"]["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .any(|m| m == "logs.tail")
    );
    let first = eventually(WAIT, "the startup lines in the log", || async {
        let (mut fresh, _) = openclaw_client(&gw, "operator.read").await;
        let id = send_openclaw(
            &mut fresh,
            2,
            "logs.tail",
            json!({ "limit": 3, "maxBytes": 250000 }),
        )
        .await;
        let res = fresh.response(&id).await;
        assert_eq!(res["ok"], true, "{res}");
        let p = res["payload"].clone();
        (!p["lines"].as_array()?.is_empty()).then_some(p)
    })
    .await;
    assert!(
        first["file"].as_str().unwrap().ends_with("logs/troupe.log"),
        "{first}"
    );
    assert!(first["lines"].as_array().unwrap().len() <= 3);
    let cursor = first["cursor"].as_u64().expect("cursor");
    assert!(cursor > 0 && cursor <= first["size"].as_u64().unwrap());
    let id = send_openclaw(
        &mut c,
        100,
        "logs.tail",
        json!({ "cursor": cursor, "limit": 200, "maxBytes": 250000 }),
    )
    .await;
    let next = c.response(&id).await;
    assert_eq!(next["ok"], true, "{next}");
    assert_eq!(
        next["payload"]["reset"], false,
        "the cursor continues: {next}"
    );
    assert!(next["payload"]["cursor"].as_u64().unwrap() >= cursor);
    let id = send_openclaw(&mut c, 101, "logs.tail", json!({ "lines": 5 })).await;
    let bad = c.response(&id).await;
    assert_eq!(bad["error"]["code"], "INVALID_REQUEST");
    assert!(bad["error"]["message"].as_str().unwrap().contains("lines"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_only_fields_are_accepted_and_fields_in_no_schema_refused_by_name() {
    let gw = TestGateway::builder().start();
    let mut c = gw.client().await;
    let everything = json!({
        "message": "all the fields", "agentId": "main", "sessionKey": "agent:main:main",
        "idempotencyKey": "every-field", "to": "+15550001", "replyTo": "m1", "sessionId": "s1",
        "thinking": "low", "deliver": false, "attachments": [], "channel": "telegram",
        "replyChannel": "telegram", "accountId": "a", "replyAccountId": "a", "threadId": "t",
        "groupId": "g", "groupChannel": "c", "groupSpace": "s", "timeout": 0,
        "bestEffortDeliver": true, "lane": "main", "label": "a label", "extraSystemPrompt": "",
        "promptMode": "full", "inputProvenance": { "kind": "external_user" },
    });
    let res = c.request("agent", Some(everything)).await;
    assert_eq!(res["ok"], true, "{res}");
    let done = c.response(res["id"].as_str().unwrap()).await;
    assert_eq!(done["payload"]["status"], "ok", "{done}");

    let send = json!({
        "sessionKey": "agent:main:main", "message": "m", "idempotencyKey": "cs-1",
        "thinking": "low", "deliver": false, "attachments": [], "originatingChannel": "webchat",
        "queueMode": "steer", "timeoutMs": 0, "fastMode": "auto",
    });
    let res = c.request("chat.send", Some(send)).await;
    assert_eq!(res["ok"], true, "{res}");

    for (method, params) in [
        (
            "agent",
            json!({ "message": "m", "idempotencyKey": "u1", "bogusField": 1 }),
        ),
        (
            "chat.send",
            json!({ "sessionKey": "main", "message": "m", "idempotencyKey": "u2", "bogusField": 1 }),
        ),
    ] {
        let res = c.request(method, Some(params)).await;
        assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
        assert!(
            res["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bogusField"),
            "{res}"
        );
    }
    let res = c
        .request(
            "agent",
            Some(json!({ "message": "m", "idempotencyKey": "d1", "deliver": true })),
        )
        .await;
    assert_eq!(
        res["error"]["details"]["code"], "DELIVERY_UNSUPPORTED",
        "{res}"
    );
}

fn home_with_openai_agent() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agents").join("oa");
    std::fs::create_dir_all(&dir).expect("agent dir");
    std::fs::write(
        dir.join("agent.toml"),
        "provider = \"openai\"\nmodel = \"fake-model\"\n",
    )
    .expect("agent.toml");
    std::fs::write(dir.join("persona.md"), "You are oa.").expect("persona");
    home
}

fn start_with(fake: &FakeLlm) -> TestGateway {
    start_over(fake, home_with_openai_agent())
}

/// A gateway over `home` (a restart keeps its store) whose `openai` provider is `fake`.
fn start_over(fake: &FakeLlm, home: tempfile::TempDir) -> TestGateway {
    builder(fake).start_in(home)
}

/// The builder of a gateway whose `openai` provider is `fake`.
fn builder(fake: &FakeLlm) -> GatewayBuilder {
    TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test-openai")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_system_prompt_and_model_override_reach_the_provider_for_that_turn_only() {
    let fake = FakeLlm::start();
    let gw = start_with(&fake);
    let mut admin = gw.client().await;
    fake.push(Script::reply("first", 1));
    let res = admin
        .request(
            "agent",
            Some(json!({
                "message": "hello", "agentId": "oa", "idempotencyKey": "x1",
                "extraSystemPrompt": "Answer in French.", "model": "bigger-model",
            })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    let done = admin.response(res["id"].as_str().unwrap()).await;
    assert_eq!(done["payload"]["status"], "ok", "{done}");
    fake.push(Script::reply("second", 1));
    let res = admin
        .request(
            "agent",
            Some(json!({ "message": "again", "agentId": "oa", "idempotencyKey": "x2" })),
        )
        .await;
    let done = admin.response(res["id"].as_str().unwrap()).await;
    assert_eq!(done["payload"]["status"], "ok", "{done}");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (&requests[0].body, &requests[1].body);
    assert_eq!(first["model"], "bigger-model");
    let system = first["messages"][0].to_string();
    assert!(
        system.contains("You are oa.") && system.contains("Answer in French."),
        "persona, then the extra prompt: {system}"
    );
    assert_eq!(
        second["model"], "fake-model",
        "the override was for one turn"
    );
    assert!(!second["messages"][0].to_string().contains("French"));

    let mut writer = WsClient::open(&gw.ws_url()).await;
    assert_eq!(
        writer.connect(&gw.token, &["operator.write"]).await["ok"],
        true
    );
    let res = writer
        .request(
            "agent",
            Some(json!({ "message": "m", "agentId": "oa", "idempotencyKey": "x3", "model": "other" })),
        )
        .await;
    assert_eq!(res["error"]["details"]["code"], "MISSING_SCOPE", "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_its_timeout_ends_with_an_error_saying_so() {
    let fake = FakeLlm::start();
    let gw = start_with(&fake);
    let mut c = gw.client().await;
    fake.push(Script::Stall { after_chunks: 1 });
    let res = c
        .request(
            "agent",
            Some(
                json!({ "message": "slow", "agentId": "oa", "idempotencyKey": "t1", "timeout": 1 }),
            ),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    let done = c.response(res["id"].as_str().unwrap()).await;
    let fin = &done["payload"];
    assert_eq!(fin["status"], "error", "{fin}");
    assert!(
        fin["error"]
            .as_str()
            .unwrap_or("")
            .contains("timeout of 1000 ms"),
        "{fin}"
    );
    fake.push(Script::reply("after", 1));
    let res = c
        .request(
            "agent",
            Some(json!({ "message": "next", "agentId": "oa", "idempotencyKey": "t2" })),
        )
        .await;
    let done = c.response(res["id"].as_str().unwrap()).await;
    assert_eq!(
        done["payload"]["status"], "ok",
        "the session goes on: {done}"
    );
}

/// Waits (20 s at most) for a run's end; its `agent.wait` payload.
async fn wait_run(c: &mut WsClient, run_id: &Value) -> Value {
    let res = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 20_000 })),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    res["payload"].clone()
}

/// The session of the recovery tests.
const RECOVER: &str = "agent:oa:main";

/// `chat.send` / `agent` params for [`RECOVER`], with `extra` fields.
fn recover_params(message: &str, idem: &str, extra: Value) -> Value {
    let mut params = json!({ "sessionKey": RECOVER, "message": message, "idempotencyKey": idem });
    if let (Some(p), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    params
}

/// The run ids of the turns [`turns_with_options_wait`] queues.
struct Queued {
    holding: Value,
    prompted: Value,
    timed: Value,
    plain: Value,
}

/// Turn 1 hangs at the model; behind it wait an `agent` turn with `extraSystemPrompt` and
/// `model`, a `chat.send` turn with `timeoutMs: 1500`, and a plain one. Then queues the
/// fake's answers to the three: a reply, a stall (past the timeout), a reply.
async fn turns_with_options_wait(fake: &FakeLlm, gw: &TestGateway) -> Queued {
    let mut c = gw.client().await;
    fake.push(Script::Stall { after_chunks: 1 });
    let res = c
        .request(
            "chat.send",
            Some(recover_params("hold the lane", "o1", json!({}))),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    let holding = res["payload"]["runId"].clone();
    c.run_started(holding.as_str().unwrap()).await;
    let asked = json!({ "agentId": "oa", "extraSystemPrompt": "Answer in French.", "model": "bigger-model" });
    let res = c
        .request("agent", Some(recover_params("say hello", "o2", asked)))
        .await;
    assert_eq!(res["payload"]["status"], "accepted", "{res}");
    let prompted = res["payload"]["runId"].clone();
    let timeout = json!({ "timeoutMs": 1500 });
    let res = c
        .request(
            "chat.send",
            Some(recover_params("take your time", "o3", timeout)),
        )
        .await;
    assert_eq!(res["ok"], true, "{res}");
    let timed = res["payload"]["runId"].clone();
    let res = c
        .request("chat.send", Some(recover_params("plain", "o4", json!({}))))
        .await;
    assert_eq!(res["ok"], true, "{res}");
    let plain = res["payload"]["runId"].clone();
    fake.push(Script::reply("bonjour", 1));
    fake.push(Script::Stall { after_chunks: 1 });
    fake.push(Script::reply("plain reply", 1));
    Queued {
        holding,
        prompted,
        timed,
        plain,
    }
}

/// After the restart (of the gateway or its queue) the queued turns run in order, each
/// with the options it was sent with; the defaults stay the defaults.
async fn they_run_with_their_options(fake: &FakeLlm, gw: &TestGateway, runs: &Queued) {
    let mut c = gw.client().await;
    let cut = wait_run(&mut c, &runs.holding).await;
    assert_eq!(cut["status"], "error", "cut by the restart: {cut}");
    let done = wait_run(&mut c, &runs.prompted).await;
    assert_eq!(
        (&done["status"], &done["summary"]),
        (&json!("ok"), &json!("bonjour")),
        "{done}"
    );
    // Turn 1's request, then the recovered ones in order.
    let model_and_system = |i: usize| {
        let body = fake.chat_requests()[i].body.clone();
        (body["model"].clone(), body["messages"][0].to_string())
    };
    let (model, system) = model_and_system(1);
    assert_eq!(model, "bigger-model", "the recovered turn keeps its model");
    assert!(
        system.contains("You are oa.") && system.contains("Answer in French."),
        "the recovered turn keeps its extra prompt: {system}"
    );
    let done = wait_run(&mut c, &runs.timed).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap_or("")
            .contains("timeout of 1500 ms"),
        "the recovered turn keeps its timeout: {done}"
    );
    assert_eq!(wait_run(&mut c, &runs.plain).await["status"], "ok");
    assert_eq!(
        fake.chat_requests().len(),
        4,
        "the stalled turn, then three recovered"
    );
    for i in [2, 3] {
        let (model, system) = model_and_system(i);
        assert_eq!(model, "fake-model", "turn {i} had no model override");
        assert!(!system.contains("French"), "turn {i}: {system}");
    }
    // A retry of an accepted turn after the restart is still that turn.
    let timeout = json!({ "timeoutMs": 1500 });
    let res = c
        .request(
            "chat.send",
            Some(recover_params("take your time", "o3", timeout)),
        )
        .await;
    assert_eq!(res["payload"]["runId"], runs.timed, "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_turns_keep_their_prompt_model_and_timeout_across_kill_9() {
    let fake = FakeLlm::start();
    let gw = start_with(&fake);
    let runs = turns_with_options_wait(&fake, &gw).await;
    let home = gw.kill9();
    let gw = start_over(&fake, home);
    gw.wait_ready().await;
    they_run_with_their_options(&fake, &gw, &runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_turns_keep_their_prompt_model_and_timeout_across_a_session_queue_crash() {
    let fake = FakeLlm::start();
    let gw = builder(&fake).chaos().start_in(home_with_openai_agent());
    gw.wait_ready().await;
    let runs = turns_with_options_wait(&fake, &gw).await;
    let mut admin = gw.client().await;
    let crash = admin
        .request("supervisor.crash", Some(json!({ "id": "session-queue" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    they_run_with_their_options(&fake, &gw, &runs).await;
}
