//! The OpenAI-compatible API (`POST /v1/chat/completions`, `GET /v1/models`) against the
//! real gateway, with reqwest and with the official `openai` Python package.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::*;

async fn started() -> TestGateway {
    started_with(TestGateway::builder()).await
}

async fn started_with(builder: GatewayBuilder) -> TestGateway {
    let gw = builder.start();
    gw.wait_ready().await;
    gw
}

fn completion(gw: &TestGateway, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(gw.http("/v1/chat/completions"))
        .bearer_auth(&gw.token)
        .json(&body)
}

fn ask(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

fn ask_streaming(model: &str, text: &str) -> Value {
    json!({ "model": model, "stream": true, "messages": [{ "role": "user", "content": text }] })
}

/// The `data:` payloads of an SSE body, `[DONE]` included as a string.
fn sse_data(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_string())))
        .collect()
}

fn streamed_content(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The error object of an OpenAI-shaped error response, after checking the status.
async fn openai_error(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "status of {}", res.url());
    let body: Value = res.json().await.expect("error JSON");
    let error = body["error"].clone();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    for field in ["type", "param", "code"] {
        assert!(error.get(field).is_some(), "error lacks {field}: {body}");
    }
    error
}

async fn session_messages(gw: &TestGateway, key: &str) -> Vec<Value> {
    let res = reqwest::Client::new()
        .get(gw.http(&format!("/api/sessions/{key}/messages")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET messages");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("messages JSON");
    body["messages"].as_array().cloned().unwrap_or_default()
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap_or("?"),
                m["text"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_completion_returns_the_agents_reply() {
    let gw = started().await;
    let res = completion(&gw, ask("main", "hello there"))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 200);
    let session = res.headers()["x-troupe-session-key"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(session.starts_with("agent:main:openai:dm:"), "{session}");
    let body: Value = res.json().await.expect("JSON");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{body}"
    );
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "main");
    assert!(
        body["created"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{body}"
    );
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_completion_sends_chunks_that_join_to_the_reply_then_done() {
    // Deltas further apart than the 30 ms coalescing interval each make their own chunk.
    let gw =
        started_with(TestGateway::builder().env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "40"))
            .await;
    let text = "one two three four five six seven eight";
    let res = completion(&gw, ask_streaming("main", text))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let events = sse_data(&res.text().await.expect("body"));
    assert_eq!(events.last(), Some(&json!("[DONE]")), "{events:?}");
    let chunks = &events[..events.len() - 1];
    for chunk in chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["model"], "main");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant" })
    );
    let content_chunks = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(
        content_chunks >= 3,
        "one chunk per delta, got {content_chunks}: {events:?}"
    );
    assert_eq!(streamed_content(chunks), format!("echo: {text}"));
    let last = chunks.last().expect("a last chunk");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troupe_prefixed_model_names_the_same_agent() {
    let gw = started().await;
    let res = completion(&gw, ask("troupe/main", "aliased"))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["model"], "troupe/main", "the model is echoed as given");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: aliased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_is_404_model_not_found() {
    let gw = started().await;
    for model in ["gpt-4o", "troupe/nobody"] {
        let res = completion(&gw, ask(model, "hi"))
            .send()
            .await
            .expect("POST");
        let error = openai_error(res, 404).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], "model");
        assert_eq!(error["code"], "model_not_found");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(model)),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401_invalid_api_key() {
    let gw = started().await;
    let http = reqwest::Client::new();
    let requests = [
        http.post(gw.http("/v1/chat/completions"))
            .json(&ask("main", "hi")),
        http.post(gw.http("/v1/chat/completions"))
            .bearer_auth("wrong")
            .json(&ask("main", "hi")),
        http.get(gw.http("/v1/models")),
        http.get(gw.http("/v1/models")).bearer_auth("wrong"),
    ];
    for request in requests {
        let error = openai_error(request.send().await.expect("send"), 401).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["code"], "invalid_api_key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_configured_agents() {
    let gw = started().await;
    let res = reqwest::Client::new()
        .get(gw.http("/v1/models"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["object"], "list");
    let main = body["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == "main"))
        .unwrap_or_else(|| panic!("main is listed: {body}"));
    assert_eq!(main["object"], "model");
    assert_eq!(main["owned_by"], "troupe");
    assert_eq!(main["created"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_header_puts_the_turn_in_that_session() {
    let gw = started().await;
    let key = "agent:main:openai:dm:alice";
    for text in ["first", "second"] {
        let res = completion(&gw, ask("main", text))
            .header("x-troupe-session-key", key)
            .send()
            .await
            .expect("POST");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-troupe-session-key"], key);
    }
    let messages = session_messages(&gw, key).await;
    assert_eq!(
        texts(&messages),
        [
            "user: first",
            "assistant: echo: first",
            "user: second",
            "assistant: echo: second"
        ]
    );
    let bad = completion(&gw, ask("main", "hi"))
        .header("x-troupe-session-key", "agent:nobody:main")
        .send()
        .await
        .expect("POST");
    let error = openai_error(bad, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-troupe-session-key")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_is_502_plain_and_an_error_event_when_streamed() {
    let gw = started().await;
    let res = completion(&gw, ask("main", "!fail boom"))
        .send()
        .await
        .expect("POST");
    let error = openai_error(res, 502).await;
    assert_eq!(error["type"], "api_error");
    assert_eq!(error["message"], "echo provider: boom");

    let res = completion(&gw, ask_streaming("main", "!fail boom"))
        .send()
        .await
        .expect("POST");
    assert_eq!(
        res.status(),
        200,
        "a stream has started before the run fails"
    );
    let events = sse_data(&res.text().await.expect("body"));
    assert_eq!(events.last(), Some(&json!("[DONE]")), "{events:?}");
    let error = &events[events.len() - 2]["error"];
    assert_eq!(error["type"], "api_error", "{events:?}");
    assert_eq!(error["message"], "echo provider: boom");
    assert!(
        events
            .iter()
            .all(|e| e["choices"][0]["finish_reason"] != "stop"),
        "a failed run does not finish with stop: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_is_the_last_user_message_and_unknown_openai_fields_are_ignored() {
    let gw = started().await;
    let body = json!({
        "model": "main",
        "messages": [
            { "role": "system", "content": "be terse" },
            { "role": "user", "content": "an earlier question" },
            { "role": "assistant", "content": null, "tool_calls": [] },
            { "role": "user", "name": "bob", "content": [
                { "type": "text", "text": "look at " },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,AA==" } },
                { "type": "text", "text": "this" },
            ] },
        ],
        "temperature": 0.3, "top_p": 1, "n": 1, "max_tokens": 100, "max_completion_tokens": 100,
        "presence_penalty": 0, "frequency_penalty": 0, "seed": 7, "user": "u-1", "stop": null,
        "stream": false, "stream_options": null, "tools": [], "tool_choice": "auto",
        "response_format": { "type": "text" }, "logit_bias": {}, "metadata": { "a": "b" },
    });
    let res = completion(&gw, body).send().await.expect("POST");
    assert_eq!(res.status(), 200);
    let reply: Value = res.json().await.expect("JSON");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "echo: look at this"
    );

    let no_user = json!({ "model": "main", "messages": [{ "role": "system", "content": "hi" }] });
    let error = openai_error(completion(&gw, no_user).send().await.expect("POST"), 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "messages");

    let not_json = reqwest::Client::new()
        .post(gw.http("/v1/chat/completions"))
        .bearer_auth(&gw.token)
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(
        openai_error(not_json, 400).await["type"],
        "invalid_request_error"
    );

    let not_declared_json = reqwest::Client::new()
        .post(gw.http("/v1/chat/completions"))
        .bearer_auth(&gw.token)
        .header("content-type", "text/plain")
        .body(
            json!({ "model": "main", "messages": [{ "role": "user", "content": "hi" }] })
                .to_string(),
        )
        .send()
        .await
        .expect("POST");
    openai_error(not_declared_json, 415).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_with_the_same_run_plain_or_streamed() {
    let gw = started().await;
    let send = |stream: bool| {
        let body = if stream {
            ask_streaming("main", "only once")
        } else {
            ask("main", "only once")
        };
        completion(&gw, body)
            .header("x-troupe-session-key", "agent:main:openai:dm:idem")
            .header("Idempotency-Key", "openai-idem-1")
            .send()
    };
    let first: Value = send(false).await.expect("POST").json().await.expect("JSON");
    let again: Value = send(false).await.expect("POST").json().await.expect("JSON");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["choices"][0]["message"]["content"], "echo: only once");
    let events = sse_data(&send(true).await.expect("POST").text().await.expect("body"));
    assert_eq!(events[0]["id"], first["id"]);
    assert_eq!(streamed_content(&events), "echo: only once", "{events:?}");
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let messages = session_messages(&gw, "agent:main:openai:dm:idem").await;
    assert_eq!(
        texts(&messages),
        ["user: only once", "assistant: echo: only once"]
    );
}

/// Reads a streamed response until its first content chunk has arrived.
async fn until_first_content(res: &mut reqwest::Response) -> String {
    let mut seen = String::new();
    while !seen.contains("\"content\"") {
        let chunk = res
            .chunk()
            .await
            .expect("read")
            .expect("a chunk before the end");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_run_still_streaming_gets_the_whole_reply() {
    let gw =
        started_with(TestGateway::builder().env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "150"))
            .await;
    let text = "a b c d e f g h i j k l";
    let send = || {
        completion(&gw, ask_streaming("main", text))
            .header("x-troupe-session-key", "agent:main:openai:dm:retry")
            .header("Idempotency-Key", "openai-retry-1")
            .send()
    };
    let mut first = send().await.expect("POST");
    until_first_content(&mut first).await;
    let retry = send().await.expect("POST");
    assert_eq!(retry.status(), 200);
    let events = sse_data(&retry.text().await.expect("body"));
    assert_eq!(
        streamed_content(&events),
        format!("echo: {text}"),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let rest = first.text().await.expect("body");
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_does_not_stop_the_run() {
    let gw =
        started_with(TestGateway::builder().env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "150"))
            .await;
    let key = "agent:main:openai:dm:leaver";
    let text = "a b c d e f g h i j k l";
    let mut res = completion(&gw, ask_streaming("main", text))
        .header("x-troupe-session-key", key)
        .send()
        .await
        .expect("POST");
    let seen = until_first_content(&mut res).await;
    assert!(
        !seen.contains("[DONE]"),
        "the run is still streaming: {seen}"
    );
    drop(res);
    let want = format!("assistant: echo: {text}");
    eventually(WAIT, "the abandoned run finishes and is stored", || async {
        let messages = session_messages(&gw, key).await;
        texts(&messages).contains(&want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_is_429_with_retry_after() {
    let gw = started_with(
        TestGateway::builder()
            .env("TROUPE__PROVIDERS__ECHO__DELTA_DELAY_MS", "300")
            .env("TROUPE__SESSIONS__LANE_CAPACITY", "1"),
    )
    .await;
    let key = "agent:main:openai:dm:busy";
    let long = "a b c d e f g h i j k l m n o p q r s t";
    // Running: its first content chunk has streamed.
    let mut running = completion(&gw, ask_streaming("main", long))
        .header("x-troupe-session-key", key)
        .send()
        .await
        .expect("POST");
    until_first_content(&mut running).await;
    // Waiting: a streamed response starts once its turn is accepted.
    let waiting = completion(&gw, ask_streaming("main", "next"))
        .header("x-troupe-session-key", key)
        .send()
        .await
        .expect("POST");
    assert_eq!(waiting.status(), 200);
    let refused = completion(&gw, ask("main", "one too many"))
        .header("x-troupe-session-key", key)
        .send()
        .await
        .expect("POST");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let error = openai_error(refused, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
}

/// The `openai` Python package the compatibility test runs (pinned: a new release must not
/// change what the test checks without anyone noticing).
const OPENAI_PY_VERSION: &str = "3.57.0";

/// `target/py-openai`, a virtualenv with the pinned `openai` package, created if missing.
fn python_with_openai() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .to_path_buf();
    let venv = target.join("py-openai");
    let python = venv.join("bin/python");
    let has_openai = || {
        Command::new(&python)
            .args([
                "-c",
                &format!(
                    "import openai, sys; sys.exit(openai.__version__ != {OPENAI_PY_VERSION:?})"
                ),
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has_openai() {
        return python;
    }
    // Only this test creates the venv; a concurrent create of the same venv is harmless.
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("openai=={OPENAI_PY_VERSION}"),
    ]));
    assert!(has_openai(), "openai is importable after pip install");
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_works_against_the_gateway() {
    let python = tokio::task::spawn_blocking(python_with_openai)
        .await
        .expect("venv setup");
    let gw = started().await;
    let vault = gw.home().join("agents/main/memory");
    std::fs::create_dir_all(&vault).expect("vault dir");
    std::fs::write(vault.join("pic.png"), PNG).expect("pic.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/openai_client.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("OPENAI_BASE_URL", gw.http("/v1"))
        .env("OPENAI_API_KEY", &gw.token)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .output()
        .await
        .expect("run openai_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_client.py failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("a JSON summary");
    assert!(
        summary["models"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("main"))),
        "{summary}"
    );
    assert_eq!(summary["content"], "echo: hello from the python sdk");
    assert_eq!(summary["streamed"], "echo: hello from the python sdk");
    assert!(
        summary["stream_chunks"].as_u64().is_some_and(|n| n >= 2),
        "{summary}"
    );
    assert_eq!(summary["failure"]["status"], 502);
    assert!(
        summary["stream_failure"]
            .as_str()
            .is_some_and(|m| m.contains("boom")),
        "{summary}"
    );
    assert_eq!(summary["unknown_model"]["status"], 404);
    assert_eq!(summary["unauthorized"]["status"], 401);
    let link = format!(
        "![pic.png](http://127.0.0.1:{}/api/files/agents/main/memory/pic.png)",
        gw.port
    );
    assert_eq!(
        summary["image_reply"],
        format!("echo: see\n\n{link}"),
        "{summary}"
    );
    assert_eq!(
        summary["image_download"],
        json!({ "status": 200, "type": "image/png", "bytes": PNG.len() })
    );
    assert_eq!(
        summary["image_streamed"],
        format!("echo: see [IMAGE:pic.png]\n\n{link}")
    );
    assert_eq!(summary["remote_image"]["status"], 400, "{summary}");
}

/// A 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];
