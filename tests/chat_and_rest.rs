//! `troupe chat` in a real terminal session (piped stdin/stdout) and the sessions REST API.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::*;

#[test]
fn troupe_chat_streams_replies_and_handles_slash_commands() {
    let gw = TestGateway::builder().start();
    let mut child = Command::new(troupe_bin())
        .arg("chat")
        .env("TROUPE_HOME", gw.home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe chat");
    let output = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push_str(&(line + "\n"));
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let seen = |needle: &str| output.lock().expect("lock").contains(needle);
    eventually_sync(WAIT, "the chat banner", || {
        seen("troupe chat: session agent:main:main").then_some(())
    });
    writeln!(stdin, "hello from the terminal").expect("type");
    eventually_sync(WAIT, "the streamed reply", || {
        seen("echo: hello from the terminal\n").then_some(())
    });
    writeln!(stdin, "/history").expect("type");
    eventually_sync(WAIT, "the history listing", || {
        seen("     user: hello from the terminal").then_some(())
    });
    writeln!(stdin, "/reset").expect("type");
    eventually_sync(WAIT, "the reset", || seen("[session reset]").then_some(()));
    writeln!(stdin, "/quit").expect("type");
    let status = eventually_sync(WAIT, "chat exits on /quit", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_posts_a_message_and_lists_sessions_and_messages() {
    let gw = TestGateway::builder().start();
    gw.wait_ready().await;
    let http = reqwest::Client::new();
    let url = gw.http("/api/sessions/agent:main:main/messages");
    let posted = http
        .post(&url)
        .bearer_auth(&gw.token)
        .header("Idempotency-Key", "rest-1")
        .json(&json!({ "message": "via rest" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 202);
    let ack: Value = posted.json().await.expect("json");
    assert_eq!(ack["status"], "accepted");
    let again: Value = http
        .post(&url)
        .bearer_auth(&gw.token)
        .header("Idempotency-Key", "rest-1")
        .json(&json!({ "message": "via rest" }))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    assert_eq!(again["runId"], ack["runId"], "idempotent over REST too");
    let messages = eventually(WAIT, "the reply is stored", || async {
        let v: Value = http
            .get(&url)
            .bearer_auth(&gw.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["messages"].as_array()?.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(messages["messages"][1]["text"], "echo: via rest");
    let sessions: Value = http
        .get(gw.http("/api/sessions"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(sessions["sessions"][0]["key"], "agent:main:main");

    let no_key = http
        .post(&url)
        .bearer_auth(&gw.token)
        .json(&json!({ "message": "x" }))
        .send()
        .await
        .expect("POST");
    assert_eq!(no_key.status(), 400);
    let bad_key = http
        .get(gw.http("/api/sessions/agent:nobody:x/messages"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(bad_key.status(), 400);
    let unknown_field = http
        .post(&url)
        .bearer_auth(&gw.token)
        .json(&json!({ "message": "x", "idempotencyKey": "k", "extra": 1 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(unknown_field.status(), 400);
    let body: Value = unknown_field.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("extra"),
        "{body}"
    );
    let form = http
        .post(&url)
        .bearer_auth(&gw.token)
        .header("content-type", "text/plain")
        .body(r#"{"message":"from a cross-site form","idempotencyKey":"csrf"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(
        form.status(),
        415,
        "a body that is not declared JSON is refused"
    );
    let unauth = http
        .get(gw.http("/api/sessions"))
        .send()
        .await
        .expect("GET");
    assert_eq!(unauth.status(), 401);
}
