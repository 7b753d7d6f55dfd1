//! Image `attachments` on `chat.send` / `agent` (OpenClaw's field) reach the model: an
//! OpenAI `image_url` data-URL part and an Anthropic base64 `image` block on the user's
//! message, checked at the fake LLM; bad images are refused naming the attachment.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/fake_llm.rs"]
mod fake_llm;
mod support;

use fake_llm::{FakeLlm, Script};
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
            { "type": "text", "text": "what is this?" },
            { "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{PNG_B64}") } },
        ]),
        "the PDF is not sent; the image is: {user}"
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
