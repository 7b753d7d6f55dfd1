//! Real `openai` and `anthropic` provider clients against a fake LLM that speaks both wire
//! formats on 127.0.0.1: streaming, multi-step tool calls, retries, timeouts, bad replies,
//! agents on disk, usage and cost.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use fake_llm::{FakeLlm, Script};
use serde_json::{Value, json};
use support::*;

/// Both provider formats: (agent id, provider name).
const FORMATS: [(&str, &str); 2] = [("oa", "openai"), ("an", "anthropic")];

fn home_with_agents(extra_toml: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    for (id, provider) in FORMATS {
        let dir = home.path().join("agents").join(id);
        std::fs::create_dir_all(dir.join("memory")).expect("agent dir");
        let toml = format!(
            "provider = \"{provider}\"\nmodel = \"fake-model\"\ntools = [\"current_time\", \"memory_read\", \"memory_write\", \"memory_search\", \"sessions_send\"]\n{extra_toml}"
        );
        std::fs::write(dir.join("agent.toml"), toml).expect("agent.toml");
        std::fs::write(
            dir.join("persona.md"),
            format!("You are {id}, a careful assistant."),
        )
        .expect("persona");
    }
    std::fs::write(
        home.path().join("config.toml"),
        "[[pricing]]\nmodel = \"fake-model\"\ninput_per_mtok = 2.0\noutput_per_mtok = 4.0\n",
    )
    .expect("config");
    home
}

/// A gateway whose provider timeouts are generous: tests of other behaviour must not fail
/// because a loaded machine was slow to send the first byte.
fn start(fake: &FakeLlm, home: tempfile::TempDir) -> TestGateway {
    start_with_timeouts(fake, home, "30000", "30000")
}

/// A gateway with short provider timeouts, for the tests of those timeouts.
fn start_with_short_timeouts(fake: &FakeLlm, home: tempfile::TempDir) -> TestGateway {
    start_with_timeouts(fake, home, "1500", "700")
}

fn start_with_timeouts(
    fake: &FakeLlm,
    home: tempfile::TempDir,
    first_byte_ms: &str,
    idle_ms: &str,
) -> TestGateway {
    TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("TROUPE__PROVIDERS__ANTHROPIC__BASE_URL", &fake.base_url())
        .env("OPENAI_API_KEY", "sk-test-openai")
        .env("ANTHROPIC_API_KEY", "sk-test-anthropic")
        .env(
            "TROUPE__PROVIDERS__HTTP__FIRST_BYTE_TIMEOUT_MS",
            first_byte_ms,
        )
        .env("TROUPE__PROVIDERS__HTTP__IDLE_TIMEOUT_MS", idle_ms)
        .env("TROUPE__PROVIDERS__HTTP__RETRY_BACKOFF_MS", "20")
        .env("TROUPE__PROVIDERS__HTTP__MAX_RETRIES", "2")
        .start_in(home)
}

async fn run_turn(c: &mut WsClient, agent: &str, message: &str, idem: &str) -> (Value, String) {
    let key = format!("agent:{agent}:test:dm:{idem}");
    let ack = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": key, "message": message, "idempotencyKey": idem })),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().expect("runId").to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 20_000 })),
        )
        .await;
    (done["payload"].clone(), run_id)
}

fn user_texts(body: &Value) -> String {
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_reply_with_persona_and_api_key_for_both_formats() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        fake.push(Script::reply(&format!("hello from {provider}"), 4));
        let (done, run_id) = run_turn(&mut c, agent, "hi there", &format!("plain-{agent}")).await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        assert_eq!(done["summary"], format!("hello from {provider}"));
        let deltas = c
            .events
            .iter()
            .filter(|e| {
                e["event"] == "chat"
                    && e["payload"]["runId"] == run_id.as_str()
                    && e["payload"]["state"] == "delta"
            })
            .count();
        assert!(deltas >= 2, "{provider}: streamed in pieces ({deltas})");
    }
    let reqs = fake.requests();
    let openai = &reqs[0];
    assert_eq!(openai.path, "/v1/chat/completions");
    assert_eq!(
        openai.header("authorization"),
        Some("Bearer sk-test-openai")
    );
    assert_eq!(openai.body["messages"][0]["role"], "system");
    assert!(
        openai.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .contains("You are oa")
    );
    assert_eq!(openai.body["stream"], true);
    let anthropic = &reqs[1];
    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.header("x-api-key"), Some("sk-test-anthropic"));
    assert!(anthropic.header("anthropic-version").is_some());
    assert!(
        anthropic.body["system"]
            .as_str()
            .unwrap_or("")
            .contains("You are an")
    );
    let list = c.request("models.list", None).await;
    let ids: Vec<&str> = list["payload"]["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"oa") && ids.contains(&"an"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_step_tool_calls_write_memory_and_stream_tool_events() {
    let fake = FakeLlm::start();
    let home = home_with_agents("");
    let gw = start(&fake, home);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        fake.push(Script::tool_call(
            "call_1",
            "memory_write",
            r#"{"path":"notes/tea.md","content":"Alice likes green tea"}"#,
            3,
        ));
        fake.push(Script::tool_call(
            "call_2",
            "memory_search",
            r#"{"query":"green tea"}"#,
            2,
        ));
        fake.push(Script::reply("Noted: Alice likes green tea.", 2));
        let (done, run_id) = run_turn(
            &mut c,
            agent,
            "remember that Alice likes green tea",
            &format!("tools-{agent}"),
        )
        .await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        assert_eq!(done["summary"], "Noted: Alice likes green tea.");
        let note = std::fs::read_to_string(
            gw.home()
                .join(format!("agents/{agent}/memory/notes/tea.md")),
        )
        .expect("note written");
        assert_eq!(note, "Alice likes green tea");
        let tool_events: Vec<&Value> = c
            .events
            .iter()
            .filter(|e| {
                e["event"] == "agent"
                    && e["payload"]["runId"] == run_id.as_str()
                    && e["payload"]["stream"] == "tool"
            })
            .collect();
        let results: Vec<&Value> = tool_events
            .iter()
            .filter(|e| e["payload"]["data"]["phase"] == "result")
            .copied()
            .collect();
        assert_eq!(results.len(), 2, "{provider}: {tool_events:?}");
        assert!(
            results[1]["payload"]["data"]["result"]
                .as_str()
                .unwrap_or("")
                .contains("notes/tea.md")
        );
    }
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 6);
    assert!(
        user_texts(&reqs[2].body).contains("notes/tea.md"),
        "openai got the tool result: {}",
        reqs[2].body
    );
    assert_eq!(
        reqs[2].body["messages"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["role"] == "tool").count()),
        Some(2)
    );
    let tool_results: usize = reqs[5].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .count();
    assert_eq!(
        tool_results, 2,
        "anthropic got both tool results: {}",
        reqs[5].body
    );
}

/// Sends a turn to `key` and waits for its end; answers the end and the run id.
async fn turn_in(c: &mut WsClient, key: &str, message: &str, idem: &str) -> (Value, String) {
    let ack = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": key, "message": message, "idempotencyKey": idem })),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().expect("runId").to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 20_000 })),
        )
        .await;
    (done["payload"].clone(), run_id)
}

/// `chat.history` and `GET /api/sessions/{key}/messages` of a session: the same messages.
async fn both_histories(gw: &TestGateway, c: &mut WsClient, key: &str) -> Vec<Value> {
    let ws = c
        .request("chat.history", Some(json!({ "sessionKey": key })))
        .await;
    assert_eq!(ws["ok"], true, "{ws}");
    let ws = ws["payload"]["messages"]
        .as_array()
        .expect("messages")
        .clone();
    let rest: Value = reqwest::Client::new()
        .get(gw.http(&format!("/api/sessions/{key}/messages")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET messages")
        .json()
        .await
        .expect("json");
    assert_eq!(
        rest["messages"].as_array(),
        Some(&ws),
        "REST history is chat.history"
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_steps_are_stored_between_the_message_and_the_reply() {
    let fake = FakeLlm::start();
    let home = home_with_agents("");
    // A note longer than a tool message keeps (16 KiB).
    let big = "green tea ".repeat(4_000);
    for (agent, _) in FORMATS {
        std::fs::write(
            home.path().join(format!("agents/{agent}/memory/big.md")),
            &big,
        )
        .expect("note");
    }
    let gw = start(&fake, home);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        let key = format!("agent:{agent}:test:dm:steps");
        fake.push(Script::tool_call("call_t", "current_time", "{}", 1));
        fake.push(Script::reply("It is noon.", 1));
        let (done, first) = turn_in(&mut c, &key, "what time is it?", &format!("s1-{agent}")).await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        let history = both_histories(&gw, &mut c, &key).await;
        let rows: Vec<(&str, &str)> = history
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["runId"].as_str().unwrap()))
            .collect();
        assert_eq!(
            rows,
            [
                ("user", first.as_str()),
                ("tool", first.as_str()),
                ("assistant", first.as_str())
            ],
            "{provider}: {history:?}"
        );
        let step = &history[1];
        let text = step["text"].as_str().unwrap();
        assert!(
            text.starts_with("current_time({})\n→ {") && text.contains("\"utc\":"),
            "{provider}: the call and its result: {text}"
        );
        assert_eq!(step["tool"]["name"], "current_time");
        assert_eq!(step["tool"]["callId"], "call_t");
        assert!(step.get("truncated").is_none(), "{step}");
        assert_eq!(history[2]["text"], "It is noon.");

        // The next turn: its model request has the earlier text only, and its long tool
        // result is cut in the transcript (the model got all of it).
        fake.push(Script::tool_call(
            "call_b",
            "memory_read",
            r#"{"path":"big.md"}"#,
            1,
        ));
        fake.push(Script::reply("It is long.", 1));
        let before = fake.requests().len();
        let (done, second) = turn_in(&mut c, &key, "read big.md", &format!("s2-{agent}")).await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        let reqs = fake.requests();
        let asked = reqs[before].body.to_string();
        assert!(asked.contains("It is noon.") && asked.contains("what time is it?"));
        assert!(
            !asked.contains("call_t"),
            "{provider}: the earlier turn's tool steps are not context: {asked}"
        );
        assert!(
            reqs[before + 1].body.to_string().contains(&big),
            "{provider}: the model got the whole result"
        );
        let history = both_histories(&gw, &mut c, &key).await;
        let rows: Vec<(&str, &str)> = history
            .iter()
            .map(|m| (m["role"].as_str().unwrap(), m["runId"].as_str().unwrap()))
            .collect();
        assert_eq!(
            rows,
            [
                ("user", first.as_str()),
                ("tool", first.as_str()),
                ("assistant", first.as_str()),
                ("user", second.as_str()),
                ("tool", second.as_str()),
                ("assistant", second.as_str())
            ],
            "{provider}: {history:?}"
        );
        let long = &history[4];
        assert_eq!(long["truncated"], true, "{provider}: {long}");
        let text = long["text"].as_str().unwrap();
        assert!(text.len() <= 16 * 1024, "{}", text.len());
        assert!(text.starts_with("memory_read({\"path\":\"big.md\"})\n→ green tea green tea"));
        assert!(long["bytes"].as_i64().unwrap() > big.len() as i64, "{long}");
        assert_eq!(long["tool"]["name"], "memory_read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_by_its_timeout_keeps_the_tool_steps_it_made() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let key = "agent:oa:test:dm:cut";
    fake.push(Script::tool_call("call_c", "current_time", "{}", 1));
    fake.push(Script::Stall { after_chunks: 1 });
    let ack = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": key, "message": "slow", "idempotencyKey": "cut", "timeoutMs": 5000 })),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().expect("runId").to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 60_000 })),
        )
        .await;
    assert_eq!(done["payload"]["status"], "error", "{done}");
    let history = both_histories(&gw, &mut c, key).await;
    let rows: Vec<(&str, &str)> = history
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["runId"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [("user", run_id.as_str()), ("tool", run_id.as_str())],
        "{history:?}"
    );
    assert_eq!(history[1]["tool"]["callId"], "call_c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tool_returns_an_error_result_and_the_run_goes_on() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        fake.push(Script::tool_call(
            "call_x",
            "memory_read",
            r#"{"path":"../../etc/passwd"}"#,
            1,
        ));
        fake.push(Script::reply("I could not read that.", 1));
        let (done, _) = run_turn(
            &mut c,
            agent,
            "read the password file",
            &format!("badtool-{agent}"),
        )
        .await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        let second = fake.requests().last().expect("request").body.to_string();
        assert!(
            second.contains("must be relative"),
            "{provider}: the model saw the tool error: {second}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429_is_retried_after_retry_after_and_5xx_with_backoff() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        let before = fake.requests().len();
        fake.push(Script::Status {
            code: 429,
            retry_after_secs: Some(1),
            body: "slow down".into(),
        });
        fake.push(Script::status(500, "boom"));
        fake.push(Script::reply("third time lucky", 2));
        let (done, _) = run_turn(&mut c, agent, "hello", &format!("retry-{agent}")).await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        assert_eq!(done["summary"], "third time lucky");
        assert_eq!(fake.requests().len() - before, 3, "{provider}: two retries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_ends_the_run_with_a_clean_error_and_the_lane_moves_on() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        for _ in 0..3 {
            fake.push(Script::status(503, "upstream down"));
        }
        let (done, _) = run_turn(&mut c, agent, "hello", &format!("down-{agent}")).await;
        assert_eq!(done["status"], "error", "{provider}: {done}");
        let error = done["error"].as_str().unwrap_or("");
        assert!(
            error.contains("HTTP 503") && error.contains("upstream down"),
            "{provider}: {error}"
        );
        fake.push(Script::reply("back", 1));
        let (next, _) = run_turn(&mut c, agent, "again", &format!("down2-{agent}")).await;
        assert_eq!(next["status"], "ok", "{provider}: {next}");
    }
    let tree = gw.tree().await;
    assert_eq!(
        node(&tree, "agent:oa").expect("oa")["restarts"],
        0,
        "provider failures never crash the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_is_read_only_in_part_and_the_error_stays_short() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    // 8 MiB of error message, in the API's JSON error envelope: reading it whole would
    // hold it all in memory and put all of it in the run's error.
    let huge = format!("upstream exploded {}", "x".repeat(8 * 1024 * 1024));
    for (agent, provider) in FORMATS {
        for _ in 0..3 {
            fake.push(Script::status(500, &huge));
        }
        let (done, _) = run_turn(&mut c, agent, "hello", &format!("huge-{agent}")).await;
        assert_eq!(done["status"], "error", "{provider}: {done}");
        let error = done["error"].as_str().unwrap_or("");
        assert!(error.contains("HTTP 500"), "{provider}: {error:.200}");
        assert!(
            error.len() < 4096,
            "{provider}: the error is bounded, got {} bytes: {:.200}",
            error.len(),
            error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_times_out_between_chunks_without_retrying_what_streamed() {
    let fake = FakeLlm::start();
    let gw = start_with_short_timeouts(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        let before = fake.requests().len();
        fake.push(Script::Stall { after_chunks: 2 });
        let (done, _) = run_turn(&mut c, agent, "hello", &format!("stall-{agent}")).await;
        assert_eq!(done["status"], "error", "{provider}: {done}");
        assert!(
            done["error"].as_str().unwrap_or("").contains("next chunk"),
            "{provider}: {done}"
        );
        assert_eq!(
            fake.requests().len() - before,
            1,
            "{provider}: not retried after text streamed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_times_out_on_the_first_byte_and_is_retried() {
    let fake = FakeLlm::start();
    let gw = start_with_short_timeouts(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        fake.push(Script::NoResponse);
        fake.push(Script::reply("finally", 1));
        let (done, _) = run_turn(&mut c, agent, "hello", &format!("silent-{agent}")).await;
        assert_eq!(done["status"], "ok", "{provider}: {done}");
        assert_eq!(done["summary"], "finally");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_ends_the_run_with_an_error_that_says_so() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    for (agent, provider) in FORMATS {
        fake.push(Script::Malformed);
        let (done, _) = run_turn(&mut c, agent, "hello", &format!("garbage-{agent}")).await;
        assert_eq!(done["status"], "error", "{provider}: {done}");
        assert!(
            done["error"].as_str().unwrap_or("").contains("malformed"),
            "{provider}: {done}"
        );
    }
    assert_eq!(
        node(&gw.tree().await, "agent:an").expect("an")["restarts"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_loop_stops_at_max_iterations() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents("max_iterations = 2\n"));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    fake.push(Script::tool_call("a", "current_time", "{}", 1));
    fake.push(Script::tool_call("b", "current_time", "{}", 1));
    let (done, _) = run_turn(&mut c, "oa", "loop forever", "loop").await;
    assert_eq!(done["status"], "error");
    assert!(
        done["error"].as_str().unwrap_or("").contains("limit of 2"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_cost_are_recorded_per_run_agent_session_and_day() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    fake.push(Script::reply("four chunks of text", 4));
    fake.push(Script::reply("two chunks", 2));
    run_turn(&mut c, "oa", "one", "u1").await;
    run_turn(&mut c, "an", "two", "u2").await;
    let usage = c.request("usage.status", None).await;
    let u = &usage["payload"]["usage"];
    assert_eq!(u["total"]["runs"], 2, "{usage}");
    assert_eq!(u["total"]["inputTokens"], 20);
    assert_eq!(u["total"]["outputTokens"], 6);
    let cost = u["total"]["costUsd"].as_f64().expect("cost");
    assert!(
        (cost - (20.0 * 2.0 + 6.0 * 4.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(u["byAgent"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(u["byDay"].as_array().map(|a| a.len()), Some(1));
    let rest: Value = reqwest::Client::new()
        .get(gw.http("/api/usage"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["usage"]["total"]["runs"], 2);
}

#[test]
fn an_invalid_agent_on_disk_exits_64_naming_the_file_and_field() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agents/bad");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("agent.toml"),
        "provider = \"gemini\"\nmodel = \"x\"\n",
    )
    .expect("write");
    let (code, _, err) = cli(home.path(), &["gateway", "run", "--port", "0"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("agents/bad/agent.toml: provider"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_send_tool_starts_a_turn_in_another_session_once() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    fake.push(Script::tool_call(
        "call_s",
        "sessions_send",
        r#"{"sessionKey":"agent:main:main","message":"note from oa"}"#,
        2,
    ));
    fake.push(Script::reply("sent it", 1));
    let (done, _) = run_turn(&mut c, "oa", "tell main something", "send-tool").await;
    assert_eq!(done["status"], "ok", "{done}");
    let history = eventually(WAIT, "the other session answered", || async {
        let mut r = gw.client().await;
        let h = r
            .request(
                "chat.history",
                Some(json!({ "sessionKey": "agent:main:main" })),
            )
            .await;
        let messages = h["payload"]["messages"].as_array()?.clone();
        (messages.len() == 2).then_some(messages)
    })
    .await;
    assert_eq!(history[0]["text"], "note from oa");
    assert_eq!(history[1]["text"], "echo: note from oa");
    let result = fake.requests().last().expect("request").body.to_string();
    assert!(
        result.contains("runId"),
        "the model got the new run id back: {result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transcript_is_sent_as_context_on_the_next_turn() {
    let fake = FakeLlm::start();
    let gw = start(&fake, home_with_agents(""));
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let key = "agent:oa:main";
    for (i, text) in ["my name is Ada", "what is my name?"].iter().enumerate() {
        fake.push(Script::reply(&format!("reply {i}"), 1));
        let ack = c.request("chat.send", Some(json!({ "sessionKey": key, "message": text, "idempotencyKey": format!("ctx{i}") }))).await;
        let run = ack["payload"]["runId"].as_str().expect("run").to_string();
        let done = c
            .request(
                "agent.wait",
                Some(json!({ "runId": run, "timeoutMs": 20_000 })),
            )
            .await;
        assert_eq!(done["payload"]["status"], "ok", "{done}");
    }
    let second = &fake.requests()[1].body["messages"];
    let roles: Vec<&str> = second
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{second}");
    assert_eq!(second[1]["content"], "my name is Ada");
    assert_eq!(second[2]["content"], "reply 0");
    assert_eq!(second[3]["content"], "what is my name?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_can_come_from_a_file_and_never_reaches_the_logs() {
    let fake = FakeLlm::start();
    let home = home_with_agents("");
    let key_file = home.path().join("openai.key");
    std::fs::write(&key_file, "sk-from-file-0123456789\n").expect("key file");
    let gw = TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env(
            "TROUPE__PROVIDERS__OPENAI__API_KEY_ENV",
            "TROUPE_TEST_UNSET_KEY_VAR",
        )
        .env(
            "TROUPE__PROVIDERS__OPENAI__API_KEY_FILE",
            key_file.to_str().expect("utf-8 path"),
        )
        .env("TROUPE__LOGGING__LEVEL", "debug")
        .start_in(home);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    fake.push(Script::reply("ok", 1));
    let (done, _) = run_turn(&mut c, "oa", "hi", "keyfile").await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some("Bearer sk-from-file-0123456789")
    );
    let log = std::fs::read_to_string(gw.home().join("logs/troupe.log")).expect("log");
    assert!(
        !log.contains("sk-from-file"),
        "the key must never be logged"
    );
}
