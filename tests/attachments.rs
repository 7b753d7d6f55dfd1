//! Image `attachments` on `chat.send` / `agent` (OpenClaw's field) reach the model: an
//! OpenAI `image_url` data-URL part and an Anthropic base64 `image` block on the user's
//! message, checked at the fake LLM; bad images are refused naming the attachment. Files
//! uploaded with `POST /api/upload` are attached by `path` (never outside the uploads dir):
//! images reach the model, text files are inlined, and the transcript keeps them.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use fake_llm::{FakeLlm, Script, Transcription};
use serde_json::{Value, json};
use support::*;

/// A 1x1 PNG, base64.
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAACklEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg==";

fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    for (id, provider) in [("oa", "openai"), ("an", "anthropic")] {
        let dir = home.path().join("agents").join(id);
        std::fs::create_dir_all(&dir).expect("agent dir");
        std::fs::write(
            dir.join("agent.toml"),
            format!("provider = \"{provider}\"\nmodel = \"fake-vision\"\n"),
        )
        .expect("agent.toml");
    }
    home
}

fn start(fake: &FakeLlm) -> TestGateway {
    TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("TROUPE__PROVIDERS__ANTHROPIC__BASE_URL", &fake.base_url())
        .env("OPENAI_API_KEY", "sk-test-openai")
        .env("ANTHROPIC_API_KEY", "sk-test-anthropic")
        .start_in(home())
}

fn image() -> Value {
    json!({ "type": "image", "mimeType": "image/png", "fileName": "dot.png", "content": PNG_B64 })
}

async fn send_and_wait(c: &mut WsClient, params: Value) -> Value {
    let ack = c.request("chat.send", Some(params)).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().expect("runId").to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 20_000 })),
        )
        .await;
    done["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_attachments_reach_openai_and_anthropic_models() {
    let fake = FakeLlm::start();
    let gw = start(&fake);
    gw.wait_ready().await;
    let mut c = gw.client().await;

    fake.push(Script::reply("a dot", 2));
    let done = send_and_wait(
        &mut c,
        json!({
            "sessionKey": "agent:oa:pics", "message": "what is this?", "idempotencyKey": "img-oa",
            "attachments": [image(), { "type": "file", "mimeType": "application/pdf", "fileName": "x.pdf", "content": "JVBERi0=" }],
        }),
    )
    .await;
    assert_eq!(done["status"], "ok", "{done}");
    let openai = fake.requests().last().expect("openai request").body.clone();
    let user = openai["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|m| m["role"] == "user")
        .expect("user message")
        .clone();
    assert_eq!(
        user["content"],
        json!([
            { "type": "text", "text": "what is this?\n\n[attached file: x.pdf (application/pdf, 5 bytes); its content cannot be shown here]" },
            { "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{PNG_B64}") } },
        ]),
        "the PDF is named, not sent; the image is: {user}"
    );

    fake.push(Script::reply("a dot", 2));
    let ack = c
        .request(
            "agent",
            Some(json!({
                "agentId": "an", "sessionKey": "agent:an:pics", "message": "and this?",
                "idempotencyKey": "img-an", "attachments": [image()],
            })),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let run_id = ack["payload"]["runId"].as_str().unwrap().to_string();
    let done = c
        .request(
            "agent.wait",
            Some(json!({ "runId": run_id, "timeoutMs": 20_000 })),
        )
        .await;
    assert_eq!(done["payload"]["status"], "ok", "{done}");
    let anthropic = fake
        .requests()
        .last()
        .expect("anthropic request")
        .body
        .clone();
    let blocks = anthropic["messages"]
        .as_array()
        .unwrap()
        .last()
        .expect("user message")["content"]
        .clone();
    assert_eq!(
        blocks[0],
        json!({ "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": PNG_B64 } }),
        "{anthropic}"
    );
    assert_eq!(blocks[1]["text"], "and this?");

    // A message without attachments stays plain text.
    fake.push(Script::reply("ok", 1));
    send_and_wait(
        &mut c,
        json!({ "sessionKey": "agent:oa:pics", "message": "thanks", "idempotencyKey": "plain-oa" }),
    )
    .await;
    let last = fake.requests().last().unwrap().body.clone();
    let messages = last["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["content"], "thanks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_image_attachment_is_refused_naming_it() {
    let fake = FakeLlm::start();
    let gw = start(&fake);
    gw.wait_ready().await;
    let mut c = gw.client().await;
    let res = c
        .request(
            "chat.send",
            Some(json!({
                "sessionKey": "agent:oa:pics", "message": "look", "idempotencyKey": "bad-img",
                "attachments": [{ "type": "image", "mimeType": "image/png", "fileName": "x.png", "content": "%%% not base64" }],
            })),
        )
        .await;
    assert_eq!(res["ok"], false, "{res}");
    let message = res["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("attachments[0]") && message.contains("x.png"),
        "{res}"
    );
    assert!(fake.requests().is_empty(), "nothing reached the model");
}

/// [`PNG_B64`] decoded.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

async fn upload(gw: &TestGateway, name: &str, bytes: &[u8]) -> Value {
    const BOUNDARY: &str = "attach-test-boundary";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let res = reqwest::Client::new()
        .post(gw.http("/api/upload"))
        .bearer_auth(&gw.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("POST /api/upload");
    assert_eq!(res.status().as_u16(), 201);
    res.json().await.expect("upload answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_are_attached_by_path_and_kept_in_the_transcript() {
    let fake = FakeLlm::start();
    let gw = start(&fake);
    gw.wait_ready().await;
    let image = upload(&gw, "dot.png", PNG).await;
    let notes = upload(&gw, "notes.md", b"# Plan\n\n- ship it\n").await;
    let mut c = gw.client().await;

    fake.push(Script::reply("seen", 1));
    let done = send_and_wait(
        &mut c,
        json!({
            "sessionKey": "agent:oa:up", "message": "look", "idempotencyKey": "up-1",
            "attachments": [
                { "type": "image", "path": image["path"] },
                { "type": "file", "fileName": "notes.md", "path": notes["path"] },
            ],
        }),
    )
    .await;
    assert_eq!(done["status"], "ok", "{done}");
    let body = fake.requests().last().unwrap().body.clone();
    let user = body["messages"].as_array().unwrap().last().unwrap().clone();
    let text = user["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("look\n\n[attached file: notes.md"),
        "{text}"
    );
    assert!(
        text.contains("- ship it"),
        "the text file is inlined: {text}"
    );
    assert_eq!(
        user["content"][1]["image_url"]["url"],
        format!("data:image/png;base64,{PNG_B64}")
    );

    // The transcript keeps them: chat.history shows them, a later turn sees them named.
    let history = c
        .request("chat.history", Some(json!({ "sessionKey": "agent:oa:up" })))
        .await;
    let first = history["payload"]["messages"][0].clone();
    assert_eq!(first["role"], "user", "{history}");
    assert_eq!(first["attachments"][0]["type"], "image");
    assert_eq!(first["attachments"][0]["path"], image["path"]);
    assert_eq!(first["attachments"][1]["mimeType"], "text/markdown");
    assert!(
        first["attachments"][0].get("file").is_none(),
        "no absolute path: {first}"
    );
    fake.push(Script::reply("ok", 1));
    send_and_wait(
        &mut c,
        json!({ "sessionKey": "agent:oa:up", "message": "and now?", "idempotencyKey": "up-2" }),
    )
    .await;
    let body = fake.requests().last().unwrap().body.clone();
    let earlier = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    assert!(
        earlier["content"]
            .as_str()
            .unwrap()
            .contains("[attached image: dot.png"),
        "{earlier}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_paths_outside_the_uploads_dir_are_refused() {
    let fake = FakeLlm::start();
    let gw = start(&fake);
    gw.wait_ready().await;
    std::fs::create_dir_all(gw.home().join("uploads")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        gw.home().join("agents/oa/agent.toml"),
        gw.home().join("uploads/link.toml"),
    )
    .unwrap();
    let mut c = gw.client().await;
    for (i, path) in [
        "../agents/oa/agent.toml",
        "/etc/passwd",
        "uploads/link.toml",
        "uploads/nope/missing.png",
    ]
    .into_iter()
    .enumerate()
    {
        let res = c
            .request(
                "chat.send",
                Some(json!({
                    "sessionKey": "agent:oa:up", "message": "x", "idempotencyKey": format!("bad-{i}"),
                    "attachments": [{ "type": "file", "path": path }],
                })),
            )
            .await;
        assert_eq!(res["ok"], false, "{path}: {res}");
        assert_eq!(res["error"]["code"], "INVALID_REQUEST", "{res}");
        let message = res["error"]["message"].as_str().unwrap();
        assert!(message.contains("attachments[0]"), "{message}");
    }
    assert!(fake.requests().is_empty(), "nothing reached the model");
}

/// OGG bytes (sniffed as `audio/ogg`).
fn ogg() -> Vec<u8> {
    let mut b = b"OggS\x00\x02".to_vec();
    b.resize(64, 0);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_attachments_are_transcribed_when_transcription_is_on() {
    let fake = FakeLlm::start();
    let gw = TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test-openai")
        .env("TROUPE__TRANSCRIPTION__ENABLED", "true")
        .env("TROUPE__TRANSCRIPTION__MODEL", "fake-whisper")
        .start_in(home());
    gw.wait_ready().await;
    let memo = upload(&gw, "memo.ogg", &ogg()).await;
    assert_eq!(memo["mime"], "audio/ogg", "{memo}");
    let mut c = gw.client().await;
    fake.push_transcription(Transcription::Text("buy milk".into()));
    fake.push(Script::reply("noted", 1));
    let done = send_and_wait(
        &mut c,
        json!({
            "sessionKey": "agent:oa:voice", "message": "my memo", "idempotencyKey": "voice-1",
            "attachments": [{ "type": "file", "path": memo["path"] }],
        }),
    )
    .await;
    assert_eq!(done["status"], "ok", "{done}");
    let sent = fake.transcribed();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].model, "fake-whisper");
    assert_eq!(sent[0].bytes, ogg());
    let body = fake.chat_requests().last().unwrap().body.clone();
    let user = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        user["content"], "my memo\n\n[voice transcript: memo.ogg]\nbuy milk",
        "the transcript, not the audio: {user}"
    );

    // A later turn sees the transcript in its history, without transcribing again.
    fake.push(Script::reply("ok", 1));
    send_and_wait(
        &mut c,
        json!({ "sessionKey": "agent:oa:voice", "message": "what did I say?", "idempotencyKey": "voice-2" }),
    )
    .await;
    let body = fake.chat_requests().last().unwrap().body.clone();
    let earlier = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    let earlier = earlier["content"].as_str().unwrap();
    assert!(
        earlier.contains("[attached file: memo.ogg (uploads/")
            && earlier.ends_with("[voice transcript: memo.ogg]\nbuy milk"),
        "{earlier}"
    );
    assert_eq!(fake.transcribed().len(), 1, "transcribed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcription_server_that_is_down_leaves_a_note_and_the_turn_runs() {
    let fake = FakeLlm::start();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let gw = TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test-openai")
        .env("TROUPE__TRANSCRIPTION__ENABLED", "true")
        .env("TROUPE__TRANSCRIPTION__BASE_URL", &down)
        .start_in(home());
    gw.wait_ready().await;
    let memo = upload(&gw, "memo.ogg", &ogg()).await;
    let mut c = gw.client().await;
    fake.push(Script::reply("ok", 1));
    let done = send_and_wait(
        &mut c,
        json!({
            "sessionKey": "agent:oa:voice", "message": "memo", "idempotencyKey": "voice-down",
            "attachments": [{ "type": "file", "path": memo["path"] }],
        }),
    )
    .await;
    assert_eq!(done["status"], "ok", "{done}");
    let body = fake.chat_requests().last().unwrap().body.clone();
    let text = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with("memo\n\n[attached audio: memo.ogg (audio/ogg, 64 bytes); transcription failed: the transcription server cannot be reached"),
        "{text}"
    );
}
