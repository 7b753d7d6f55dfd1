//! The operator REST surface: agents and agent-info, session reset/delete, logs, config
//! PUT/PATCH through the hot-reload path, model providers (masked keys, edits, smoke test),
//! daily usage and pricing, and the OpenAPI document.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use std::time::Duration;

use fake_llm::{FakeLlm, Script};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

/// One authorized JSON call; answers (status, body).
async fn call(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, gw.http(path))
        .bearer_auth(&gw.token)
        .timeout(Duration::from_secs(60));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Posts a message over REST and waits until the echo reply is in the transcript.
async fn turn(gw: &TestGateway, key: &str, message: &str) {
    let (status, body) = call(
        gw,
        Method::POST,
        &format!("/api/sessions/{key}/messages"),
        Some(json!({ "message": message, "idempotencyKey": message })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually(WAIT, "the reply is stored", || async {
        let (_, page) = call(
            gw,
            Method::GET,
            &format!("/api/sessions/{key}/messages"),
            None,
        )
        .await;
        page["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant"))
            .then_some(())
    })
    .await;
}

fn home_with_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.toml"), text).expect("config");
    let file = dir.path().join("config.toml");
    (dir, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sessions_logs_and_usage_are_served_over_rest() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let (status, agents) = call(&gw, Method::GET, "/api/agents", None).await;
    assert_eq!(status, 200);
    assert_eq!(agents["defaultId"], "main", "{agents}");
    assert_eq!(agents["agents"][0]["id"], "main");

    turn(&gw, "main", "hello rest").await;
    let (status, info) = call(&gw, Method::GET, "/api/agent-info?agent=main", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["provider"], "echo");
    assert_eq!(info["sessions"], 1, "{info}");
    assert!(
        info["workspaceDir"]
            .as_str()
            .unwrap()
            .ends_with("agents/main"),
        "{info}"
    );
    let (status, _) = call(&gw, Method::GET, "/api/agent-info?agent=nobody", None).await;
    assert_eq!(status, 404);

    let (status, daily) = call(&gw, Method::GET, "/api/usage/daily?days=2", None).await;
    assert_eq!(status, 200, "{daily}");
    let day = &daily["days"][0];
    assert_eq!(day["agentId"], "main", "{daily}");
    assert_eq!(day["runs"], 1, "{daily}");
    let (status, pricing) = call(&gw, Method::GET, "/api/usage/pricing", None).await;
    assert_eq!(status, 200);
    assert_eq!(pricing["configKey"], "pricing", "{pricing}");

    let (status, reset) = call(&gw, Method::POST, "/api/sessions/main/reset", None).await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["existed"], true);
    let (_, page) = call(&gw, Method::GET, "/api/sessions/main/messages", None).await;
    assert_eq!(page["messages"], json!([]), "reset clears the transcript");
    let (status, deleted) = call(&gw, Method::DELETE, "/api/sessions/main", None).await;
    assert_eq!(status, 200, "{deleted}");
    let (_, sessions) = call(&gw, Method::GET, "/api/sessions", None).await;
    assert_eq!(sessions["sessions"], json!([]), "{sessions}");
    let (status, _) = call(&gw, Method::DELETE, "/api/sessions/agent:nobody:x", None).await;
    assert_eq!(status, 400, "an unknown agent's key is refused");

    let logs = eventually(WAIT, "the start is in the log", || async {
        let (status, logs) = call(
            &gw,
            Method::GET,
            "/api/logs?level=info&target=troupe&limit=50",
            None,
        )
        .await;
        assert_eq!(status, 200, "{logs}");
        logs["events"]
            .as_array()
            .is_some_and(|e| {
                e.iter().any(|e| {
                    e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("gateway started")
                })
            })
            .then_some(logs)
    })
    .await;
    for event in logs["events"].as_array().unwrap() {
        assert!(
            event["target"].as_str().unwrap().starts_with("troupe"),
            "{event}"
        );
        assert_ne!(event["level"], "DEBUG");
    }
    let (status, errors) = call(&gw, Method::GET, "/api/logs?level=error", None).await;
    assert_eq!(status, 200);
    assert!(
        errors["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["level"] == "ERROR")
    );
    let (status, _) = call(&gw, Method::GET, "/api/logs?level=loud", None).await;
    assert_eq!(status, 400);
    let (status, _) = call(&gw, Method::GET, "/api/logs?since=9999999999999", None).await;
    assert_eq!(status, 200);

    let res = reqwest::get(gw.http("/api/agents")).await.expect("GET");
    assert_eq!(res.status(), 401, "bearer auth like every /api route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_and_patch_go_through_the_reload_path_and_refuse_bad_edits() {
    let original = "# operator notes: keep me\n[hooks]\ntoken = \"hook-secret-0123456789\"\n";
    let (dir, file) = home_with_config(original);
    let gw = TestGateway::builder().start_in(dir);
    gw.wait_ready().await;
    let (_, got) = call(&gw, Method::GET, "/api/config", None).await;
    let hash = got["hash"].as_str().unwrap().to_string();

    let (status, stale) = call(
        &gw,
        Method::PUT,
        "/api/config",
        Some(json!({ "raw": "", "baseHash": "0000" })),
    )
    .await;
    assert_eq!(status, 409, "{stale}");
    assert_eq!(stale["error"]["code"], "STALE_BASE_HASH");
    let bad = json!({ "raw": "[sessions]\nlane_capacity = \"many\"\n", "baseHash": hash });
    let (status, invalid) = call(&gw, Method::PUT, "/api/config", Some(bad)).await;
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(invalid["error"]["code"], "INVALID_CONFIG");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        original,
        "file untouched"
    );

    let agents = json!([{ "id": "main", "provider": "echo", "model": "echo" },
                        { "id": "helper", "provider": "echo", "model": "echo" }]);
    let (status, patched) = call(
        &gw,
        Method::PATCH,
        "/api/config",
        Some(json!({ "section": "agents", "value": agents })),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    eventually(WAIT, "the new agent is live", || async {
        let (_, list) = call(&gw, Method::GET, "/api/agents", None).await;
        (list["agents"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;

    let hooks = json!({ "token": "<redacted>", "mappings": [] });
    let (status, patched) = call(
        &gw,
        Method::PATCH,
        "/api/config",
        Some(json!({ "section": "hooks", "value": hooks })),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["value"]["token"], "<redacted>",
        "the secret is never echoed: {patched}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("hook-secret-0123456789"),
        "the placeholder kept the secret: {text}"
    );
    assert!(!patched.to_string().contains("hook-secret"), "{patched}");

    let before = std::fs::read_to_string(&file).unwrap();
    let (status, invalid) = call(
        &gw,
        Method::PATCH,
        "/api/config",
        Some(json!({ "section": "sessions", "value": { "lane_capacity": "many" } })),
    )
    .await;
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "file untouched"
    );
    let (status, _) = call(
        &gw,
        Method::PATCH,
        "/api/config",
        Some(json!({ "section": "x", "value": 1, "baseHash": "0000" })),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_providers_are_listed_masked_edited_and_smoke_tested() {
    let fake = FakeLlm::start();
    let config = "[[agents]]\nid = \"main\"\nprovider = \"openai\"\nmodel = \"gpt-test\"\n";
    let (dir, file) = home_with_config(config);
    let gw = TestGateway::builder()
        .env("OPENAI_API_KEY", "sk-test-abcdefgh1234")
        .start_in(dir);
    gw.wait_ready().await;
    let (status, list) = call(&gw, Method::GET, "/api/models", None).await;
    assert_eq!(status, 200, "{list}");
    let openai = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "openai")
        .unwrap()
        .clone();
    assert_eq!(openai["apiKey"], "…1234", "{openai}");
    assert_eq!(openai["agents"], json!(["main"]));
    assert!(
        !list.to_string().contains("abcdefgh"),
        "the key is masked: {list}"
    );

    let url = format!("{}/v1", fake.base_url());
    let (status, added) = call(
        &gw,
        Method::POST,
        "/api/models",
        Some(json!({ "name": "openai", "baseUrl": url })),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let (status, again) = call(
        &gw,
        Method::POST,
        "/api/models",
        Some(json!({ "name": "openai", "baseUrl": url })),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert!(std::fs::read_to_string(&file).unwrap().contains(&url));

    fake.push(Script::reply("pong", 1));
    let (status, test) = call(&gw, Method::POST, "/api/models/openai/test", None).await;
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["reply"], "pong");
    assert!(test["latencyMs"].is_u64());
    fake.push(Script::status(500, "{\"error\":{\"message\":\"boom\"}}"));
    let (_, failed) = call(
        &gw,
        Method::POST,
        "/api/models/openai/test",
        Some(json!({ "model": "gpt-test" })),
    )
    .await;
    assert_eq!(failed["ok"], false, "{failed}");
    assert!(failed["error"].is_string());

    let (status, updated) = call(
        &gw,
        Method::PUT,
        "/api/models/openai",
        Some(json!({ "apiKey": "sk-file-key-99998888" })),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("sk-file-key"),
        "the key is kept out of the config file: {text}"
    );
    let (status, _) = call(
        &gw,
        Method::PUT,
        "/api/models/openai",
        Some(json!({ "baseUrl": 5 })),
    )
    .await;
    assert_eq!(status, 400);
    let (status, removed) = call(&gw, Method::DELETE, "/api/models/openai", None).await;
    assert_eq!(status, 200, "{removed}");
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains("providers")
    );
    let (status, _) = call(&gw, Method::DELETE, "/api/models/openai", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&gw, Method::PUT, "/api/models/mystery", Some(json!({}))).await;
    assert_eq!(status, 404);
    let (status, echo) = call(
        &gw,
        Method::POST,
        "/api/models/echo/test",
        Some(json!({ "model": "echo" })),
    )
    .await;
    assert_eq!(
        (status.as_u16(), echo["ok"].clone()),
        (200, json!(true)),
        "{echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_without_a_credential() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let res = reqwest::get(gw.http("/api/openapi.json"))
        .await
        .expect("GET");
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.expect("JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/api/restart",
        "/api/models/{name}/test",
        "/v1/chat/completions",
        "/hooks/agent",
        "/healthz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
