//! Attachments on the other edges and across restarts: `POST /api/sessions/{key}/messages`
//! takes `attachments` as `chat.send` does; `/v1/chat/completions` takes OpenAI `image_url`
//! (data URL) and `file` parts and answers a reply's files as markdown links; `GET
//! /api/files/{path}` serves uploads and reply files (headers, ranges, confinement, auth);
//! and a turn accepted with images and recovered after a kill -9, a session-queue crash or
//! an agent crash runs with the images (checked at the fake LLM).
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

/// [`PNG_B64`] decoded.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

/// A state dir with one agent, `oa`, on the OpenAI provider.
fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agents").join("oa");
    std::fs::create_dir_all(dir.join("memory")).expect("agent dir");
    std::fs::write(
        dir.join("agent.toml"),
        "provider = \"openai\"\nmodel = \"fake-vision\"\n",
    )
    .expect("agent.toml");
    home
}

fn builder(fake: &FakeLlm) -> GatewayBuilder {
    TestGateway::builder()
        .env(
            "TROUPE__PROVIDERS__OPENAI__BASE_URL",
            &format!("{}/v1", fake.base_url()),
        )
        .env("OPENAI_API_KEY", "sk-test-openai")
}

async fn start(fake: &FakeLlm) -> TestGateway {
    let gw = builder(fake).start_in(home());
    gw.wait_ready().await;
    gw
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn upload(gw: &TestGateway, name: &str, bytes: &[u8]) -> Value {
    const BOUNDARY: &str = "attach-edges-boundary";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let res = http()
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

async fn post_message(gw: &TestGateway, key: &str, body: Value) -> reqwest::Response {
    http()
        .post(gw.http(&format!("/api/sessions/{key}/messages")))
        .bearer_auth(&gw.token)
        .json(&body)
        .send()
        .await
        .expect("POST messages")
}

async fn messages(gw: &TestGateway, key: &str) -> Vec<Value> {
    let res = http()
        .get(gw.http(&format!("/api/sessions/{key}/messages")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET messages");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    body["messages"].as_array().cloned().unwrap_or_default()
}

/// Waits for the session's reply to the `n`th user message (1-based count of replies).
async fn replies(gw: &TestGateway, key: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, "the reply is in the transcript", || async {
        let all = messages(gw, key).await;
        let got: Vec<Value> = all
            .into_iter()
            .filter(|m| m["role"] == "assistant")
            .collect();
        (got.len() >= n).then_some(got)
    })
    .await
}

/// The last user message the fake LLM received, in the most recent request.
fn last_user_message(fake: &FakeLlm) -> Value {
    let body = fake.requests().last().expect("a request").body.clone();
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|m| m["role"] == "user")
        .expect("a user message")
        .clone()
}

fn png_part() -> Value {
    json!({ "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{PNG_B64}") } })
}

async fn get_file(gw: &TestGateway, path: &str) -> reqwest::Response {
    http()
        .get(gw.http(&format!("/api/files/{path}")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET /api/files")
}

/// A GET written by hand (no client normalizes its path): status and JSON body.
async fn raw_get(gw: &TestGateway, target: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        gw.port, gw.token
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_messages_take_attachments_by_path_and_inline_and_refuse_bad_ones() {
    let fake = FakeLlm::start();
    let gw = start(&fake).await;
    let image = upload(&gw, "dot.png", PNG).await;

    fake.push(Script::reply("a dot", 1));
    let res = post_message(
        &gw,
        "agent:oa:rest",
        json!({
            "message": "what is this?", "idempotencyKey": "rest-1",
            "attachments": [
                { "type": "image", "path": image["path"] },
                { "type": "file", "fileName": "notes.txt", "content": "aGVsbG8gbm90ZXM=" },
            ],
        }),
    )
    .await;
    assert_eq!(res.status(), 202);
    replies(&gw, "agent:oa:rest", 1).await;
    let user = last_user_message(&fake);
    assert_eq!(
        user["content"][1]["image_url"]["url"],
        format!("data:image/png;base64,{PNG_B64}"),
        "{user}"
    );
    let text = user["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("what is this?") && text.contains("hello notes"),
        "the inline text file is inlined: {text}"
    );
    let transcript = messages(&gw, "agent:oa:rest").await;
    let attached = &transcript[0]["attachments"];
    assert_eq!(attached[0]["path"], image["path"], "{transcript:?}");
    assert_eq!(
        attached[0]["url"],
        format!("/api/files/{}", image["path"].as_str().unwrap())
    );
    assert!(
        attached[1]["path"]
            .as_str()
            .unwrap()
            .starts_with("uploads/"),
        "inline content is stored as an upload: {attached}"
    );

    for (attachment, needle) in [
        (
            json!({ "type": "file", "path": "../config.toml" }),
            "may not contain",
        ),
        (json!({ "type": "file", "path": "/etc/passwd" }), "absolute"),
        (
            json!({ "type": "image", "mimeType": "image/png", "fileName": "x.png", "content": "%%%" }),
            "base64",
        ),
        (json!({ "type": "file" }), "path"),
    ] {
        let res = post_message(
            &gw,
            "agent:oa:rest",
            json!({ "message": "x", "idempotencyKey": format!("bad-{needle}"), "attachments": [attachment] }),
        )
        .await;
        assert_eq!(res.status(), 400, "{attachment}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("attachments[0]") && message.contains(needle),
            "{message}"
        );
    }
    assert_eq!(fake.requests().len(), 1, "nothing else reached the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_image_parts_reach_the_model_and_reply_files_come_back_as_links() {
    let fake = FakeLlm::start();
    let gw = start(&fake).await;
    let vault = gw.home().join("agents/oa/memory");
    std::fs::write(vault.join("chart.png"), PNG).unwrap();
    std::fs::write(vault.join("report.md"), "# Report\n").unwrap();

    fake.push(Script::reply(
        "Here it is [IMAGE:chart.png] and [FILE:report.md]",
        2,
    ));
    let res = http()
        .post(gw.http("/v1/chat/completions"))
        .bearer_auth(&gw.token)
        .header("x-troupe-session-key", "agent:oa:oai")
        .json(&json!({
            "model": "oa",
            "messages": [{ "role": "user", "content": [{ "type": "text", "text": "draw it" }, png_part()] }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let base = format!("http://127.0.0.1:{}", gw.port);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        format!(
            "Here it is and\n\n![chart.png]({base}/api/files/agents/oa/memory/chart.png)\n[report.md]({base}/api/files/agents/oa/memory/report.md)"
        ),
        "{reply}"
    );
    let user = last_user_message(&fake);
    assert_eq!(
        user["content"],
        json!([{ "type": "text", "text": "draw it" }, png_part()]),
        "the image reached the model: {user}"
    );

    // Streamed: the deltas as the model wrote them, then the links, then stop.
    fake.push(Script::reply("again [FILE:report.md]", 2));
    let res = http()
        .post(gw.http("/v1/chat/completions"))
        .bearer_auth(&gw.token)
        .header("x-troupe-session-key", "agent:oa:oai")
        .json(&json!({
            "model": "oa", "stream": true,
            "messages": [{ "role": "user", "content": [png_part(), { "type": "text", "text": "once more" }] }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let chunks: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content,
        format!(
            "again [FILE:report.md]\n\n[report.md]({base}/api/files/agents/oa/memory/report.md)"
        ),
        "{body}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // Remote URLs are refused, not fetched; so are file ids.
    for (part, needle) in [
        (
            json!({ "type": "image_url", "image_url": { "url": "https://example.com/cat.png" } }),
            "remote image URLs are not fetched",
        ),
        (
            json!({ "type": "file", "file": { "file_id": "file-abc" } }),
            "file_id",
        ),
        (
            json!({ "type": "image_url", "image_url": { "url": "data:image/tiff;base64,AAAA" } }),
            "image/tiff",
        ),
    ] {
        let res = http()
            .post(gw.http("/v1/chat/completions"))
            .bearer_auth(&gw.token)
            .json(&json!({ "model": "oa", "messages": [{ "role": "user", "content": [{ "type": "text", "text": "x" }, part] }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{part}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], "messages", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(fake.requests().len(), 2, "refused requests reach no model");
}

/// The links to a reply's files use the `Host` the edge checked: a client's
/// `X-Forwarded-Host` / `Forwarded` / `X-Forwarded-Proto` (which the edge does not check)
/// cannot point them elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_reply_links_ignore_forwarded_host_headers() {
    let fake = FakeLlm::start();
    let gw = start(&fake).await;
    std::fs::write(gw.home().join("agents/oa/memory/report.md"), "# Report\n").unwrap();
    fake.push(Script::reply("see [FILE:report.md]", 1));
    let res = http()
        .post(gw.http("/v1/chat/completions"))
        .bearer_auth(&gw.token)
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "host=evil.example;proto=javascript")
        .header("x-forwarded-proto", "javascript")
        .json(&json!({ "model": "oa", "messages": [{ "role": "user", "content": "report?" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        format!(
            "see\n\n[report.md](http://127.0.0.1:{}/api/files/agents/oa/memory/report.md)",
            gw.port
        ),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_download_with_their_type_a_safe_disposition_and_ranges() {
    let fake = FakeLlm::start();
    let gw = start(&fake).await;
    let image = upload(&gw, "dot.png", PNG).await;
    let path = image["path"].as_str().unwrap();

    let res = get_file(&gw, path).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "image/png");
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&res, "content-disposition"),
        "inline; filename=\"dot.png\""
    );
    assert!(header(&res, "content-security-policy").contains("sandbox"));
    assert_eq!(res.bytes().await.unwrap().as_ref(), PNG);

    let res = http()
        .get(gw.http(&format!("/api/files/{path}")))
        .bearer_auth(&gw.token)
        .header("range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"PNG");

    let res = http()
        .get(gw.http(&format!("/api/files/{path}?download=true")))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&res, "content-disposition"),
        "attachment; filename=\"dot.png\""
    );

    // A page a reply sends is a download, never rendered on the gateway's origin.
    let page = b"<html><script>alert(document.cookie)</script></html>";
    let up = upload(&gw, "page.html", page).await;
    let res = get_file(&gw, up["path"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert!(
        header(&res, "content-disposition").starts_with("attachment;"),
        "{:?}",
        res.headers()
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), page);
    let svg = gw.home().join("agents/oa/memory/logo.svg");
    std::fs::write(
        &svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
    )
    .unwrap();
    let res = get_file(&gw, "agents/oa/memory/logo.svg").await;
    assert_eq!(res.status(), 200);
    assert!(header(&res, "content-disposition").starts_with("attachment;"));

    // A reply file: the transcript's attachment carries the URL that serves it.
    std::fs::write(gw.home().join("agents/oa/memory/plan.md"), "# Plan\n").unwrap();
    fake.push(Script::reply("the plan [FILE:plan.md]", 1));
    let res = post_message(
        &gw,
        "agent:oa:dl",
        json!({ "message": "plan?", "idempotencyKey": "dl-1" }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let reply = replies(&gw, "agent:oa:dl", 1).await[0].clone();
    let file = &reply["attachments"][0];
    assert_eq!(file["path"], "agents/oa/memory/plan.md", "{reply}");
    assert_eq!(file["url"], "/api/files/agents/oa/memory/plan.md");
    let res = http()
        .get(gw.http(file["url"].as_str().unwrap()))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/markdown; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "# Plan\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_stay_inside_uploads_and_agent_folders_and_need_the_token() {
    let fake = FakeLlm::start();
    let gw = start(&fake).await;
    let image = upload(&gw, "dot.png", PNG).await;
    let path = image["path"].as_str().unwrap();
    std::fs::write(gw.home().join("secret.txt"), "s3cret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        gw.home().join("secret.txt"),
        gw.home().join("uploads/link.txt"),
    )
    .unwrap();

    let res = http()
        .get(gw.http(&format!("/api/files/{path}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "no token, no file");
    let res = http()
        .get(gw.http(&format!("/api/files/{path}")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    for (raw, status, needle) in [
        ("uploads/../secret.txt", 400, "may not contain"),
        ("uploads/%2e%2e/secret.txt", 400, "may not contain"),
        ("../secret.txt", 400, "may not contain"),
        ("/etc/passwd", 400, "absolute"),
        ("secret.txt", 404, "not served"),
        ("config.toml", 404, "not served"),
        ("agents/nobody/x.md", 404, "no configured agent"),
        ("uploads/link.txt", 404, "leads outside"),
        ("uploads/nope/missing.png", 404, "does not exist"),
    ] {
        let (got, body) = raw_get(&gw, &format!("/api/files/{raw}")).await;
        assert_eq!(got, status, "{raw}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{raw}: {body}");
        assert!(!message.contains("s3cret"), "{body}");
    }
}

/// Turn 1 stalls at the model; turn 2 (an uploaded image and an inline one) waits behind
/// it. Returns turn 2's run id once both are accepted and turn 1 is at the model.
async fn a_turn_with_images_waits(fake: &FakeLlm, gw: &TestGateway, key: &str) -> String {
    let image = upload(gw, "dot.png", PNG).await;
    fake.push(Script::Stall { after_chunks: 1 });
    let mut c = gw.client().await;
    let first = c
        .request(
            "chat.send",
            Some(json!({ "sessionKey": key, "message": "hold on", "idempotencyKey": "hold" })),
        )
        .await;
    assert_eq!(first["ok"], true, "{first}");
    eventually(WAIT, "turn 1 is at the model", || async {
        (!fake.requests().is_empty()).then_some(())
    })
    .await;
    let second = c
        .request(
            "chat.send",
            Some(json!({
                "sessionKey": key, "message": "look after the restart", "idempotencyKey": "look",
                "attachments": [
                    { "type": "image", "path": image["path"] },
                    { "type": "image", "mimeType": "image/png", "fileName": "inline.png", "content": PNG_B64 },
                ],
            })),
        )
        .await;
    assert_eq!(second["ok"], true, "{second}");
    second["payload"]["runId"].as_str().unwrap().to_string()
}

/// The fake LLM eventually gets turn 2 with both images.
async fn the_recovered_turn_brings_its_images(fake: &FakeLlm, gw: &TestGateway, key: &str) {
    let user = eventually(WAIT, "the recovered turn reaches the model", || async {
        fake.requests().iter().find_map(|r| {
            let user = r.body["messages"]
                .as_array()?
                .iter()
                .rfind(|m| m["role"] == "user")?
                .clone();
            let text = user["content"][0]["text"]
                .as_str()
                .or(user["content"].as_str());
            (text == Some("look after the restart")).then_some(user)
        })
    })
    .await;
    let expected = png_part();
    assert_eq!(
        user["content"],
        json!([{ "type": "text", "text": "look after the restart" }, expected, expected]),
        "both images come back with the recovered turn: {user}"
    );
    let reply = replies(gw, key, 1).await;
    assert_eq!(reply.last().unwrap()["text"], "seen after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_turn_recovered_after_kill_9_runs_with_its_images() {
    let fake = FakeLlm::start();
    let gw = start(&fake).await;
    let key = "agent:oa:recover";
    a_turn_with_images_waits(&fake, &gw, key).await;
    let home = gw.kill9();
    fake.push(Script::reply("seen after the restart", 1));
    let gw = builder(&fake).start_in(home);
    gw.wait_ready().await;
    the_recovered_turn_brings_its_images(&fake, &gw, key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_turn_recovered_after_a_session_queue_crash_runs_with_its_images() {
    let fake = FakeLlm::start();
    let gw = builder(&fake).chaos().start_in(home());
    gw.wait_ready().await;
    let key = "agent:oa:crash";
    a_turn_with_images_waits(&fake, &gw, key).await;
    fake.push(Script::reply("seen after the restart", 1));
    let mut admin = gw.client().await;
    let crash = admin
        .request("supervisor.crash", Some(json!({ "id": "session-queue" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    the_recovered_turn_brings_its_images(&fake, &gw, key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_turn_runs_with_its_images_after_its_agent_crashed() {
    let fake = FakeLlm::start();
    let gw = builder(&fake).chaos().start_in(home());
    gw.wait_ready().await;
    let key = "agent:oa:agentcrash";
    a_turn_with_images_waits(&fake, &gw, key).await;
    fake.push(Script::reply("seen after the restart", 1));
    let mut admin = gw.client().await;
    let crash = admin
        .request("supervisor.crash", Some(json!({ "id": "agent:oa" })))
        .await;
    assert_eq!(crash["ok"], true, "{crash}");
    the_recovered_turn_brings_its_images(&fake, &gw, key).await;
}
