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

/// Runs `troupe chat ARGS` against `gw` with `input` on stdin; returns (code, stdout, stderr).
fn chat_with_input(gw: &TestGateway, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(troupe_bin())
        .arg("chat")
        .args(args)
        .env("TROUPE_HOME", gw.home())
        .env_remove("TROUPE_GATEWAY_TOKEN")
        .env_remove("TROUPE_GATEWAY_PORT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn troupe chat");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("troupe chat exits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn piped_chat_sends_every_line_prints_every_reply_and_exits_zero() {
    let gw = TestGateway::builder().start();
    let (code, stdout, stderr) = chat_with_input(
        &gw,
        &["--timeout", "60"],
        "first line\nsecond line\n\nthird line\n",
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout, "echo: first line\necho: second line\necho: third line\n",
        "each reply once, in order, nothing else; stderr: {stderr}"
    );
    let (code, history, _) = cli(
        gw.home(),
        &[
            "gateway",
            "call",
            "chat.history",
            "--params",
            r#"{"sessionKey":"agent:main:main"}"#,
        ],
    );
    assert_eq!(code, 0);
    let history: Value = serde_json::from_str(&history).expect("history JSON");
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(6),
        "{history}"
    );
}

#[test]
fn one_shot_message_prints_its_reply_as_text_or_json() {
    let gw = TestGateway::builder().start();
    let (code, stdout, stderr) = cli(gw.home(), &["chat", "--message", "just once"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout, "echo: just once\n");
    let (code, stdout, stderr) = cli(
        gw.home(),
        &[
            "chat",
            "--session",
            "agent:main:cli:dm:scripted",
            "--message",
            "as json",
            "--json",
        ],
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per reply: {stdout}");
    let reply: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["reply"], "echo: as json");
    assert_eq!(reply["sessionKey"], "agent:main:cli:dm:scripted");
    assert!(
        reply["runId"].as_str().is_some_and(|r| !r.is_empty()),
        "{reply}"
    );
    let (code, stdout, stderr) = chat_with_input(&gw, &["--json"], "a\nb\n");
    assert_eq!(code, 0, "stderr: {stderr}");
    let replies: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(replies.len(), 2, "{stdout}");
    assert_eq!(replies[0]["reply"], "echo: a");
    assert_eq!(replies[1]["reply"], "echo: b");
}

#[test]
fn a_refused_chat_exits_non_zero_with_the_reason_on_stderr() {
    let gw = TestGateway::builder().start();
    let (code, stdout, stderr) = cli(gw.home(), &["chat", "--agent", "nobody", "--message", "hi"]);
    assert_ne!(code, 0, "stdout: {stdout}");
    assert!(
        stderr.contains("nobody"),
        "the error names the agent: {stderr}"
    );
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    let (code, _, stderr) = chat_with_input(&gw, &["--session", "agent:main:\u{7}bell"], "hi\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("INVALID_SESSION_KEY"), "{stderr}");
    let (code, _, stderr) = cli(gw.home(), &["chat", "--token", "wrong", "--message", "hi"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unauthorized"), "{stderr}");
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

#[test]
fn a_long_pipe_stays_under_the_connection_bound_and_every_line_is_answered_in_order() {
    let gw = TestGateway::builder()
        .env("TROUPE__SESSIONS__LANE_CAPACITY", "1000")
        .start();
    let input: String = (0..400).map(|i| format!("line {i}\n")).collect();
    let (code, stdout, stderr) = chat_with_input(&gw, &["--timeout", "120"], &input);
    assert_eq!(code, 0, "stderr: {stderr}");
    let expected: String = (0..400).map(|i| format!("echo: line {i}\n")).collect();
    assert_eq!(stdout, expected, "stderr: {stderr}");
}
