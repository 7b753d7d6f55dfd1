//! `troupe chat`: an interactive terminal client through the gateway. Replies stream as
//! they arrive; `/abort`, `/reset`, `/history`, `/quit`.

use std::collections::HashMap;
use std::io::Write;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::ClientFlags;
use crate::client::{Connection, Target};
use crate::exit;
use crate::paths::StatePaths;

const HELP: &str = "commands: /abort (stop the reply), /reset (clear the session), /history, /quit";

/// Runs the chat loop until `/quit` or end of input.
pub fn run(
    paths: &StatePaths,
    env: &HashMap<String, String>,
    agent: Option<String>,
    session: Option<String>,
    flags: &ClientFlags,
) -> i32 {
    let target = Target::resolve(flags, paths, env);
    let agent = agent.unwrap_or_else(|| "main".into());
    let session = session.unwrap_or_else(|| format!("agent:{agent}:main"));
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return exit::FAILURE;
    };
    runtime.block_on(chat_loop(target, session))
}

fn print_flush(text: &str) {
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

async fn chat_loop(target: Target, session: String) -> i32 {
    let mut conn = match Connection::open(&target).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("troupe: {e}");
            return exit::FAILURE;
        }
    };
    println!("troupe chat: session {session}. {HELP}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                let line = line.trim().to_string();
                let sent = match line.as_str() {
                    "" => continue,
                    "/quit" | "/exit" => break,
                    "/help" => { println!("{HELP}"); continue }
                    "/abort" => conn.send_request("chat.abort", Some(json!({ "sessionKey": session }))).await,
                    "/reset" => conn.send_request("sessions.reset", Some(json!({ "sessionKey": session }))).await,
                    "/history" => conn.send_request("chat.history", Some(json!({ "sessionKey": session, "limit": 50 }))).await,
                    text => {
                        let params = json!({ "sessionKey": session, "message": text, "idempotencyKey": uuid::Uuid::new_v4().to_string() });
                        conn.send_request("chat.send", Some(params)).await
                    }
                };
                if let Err(e) = sent {
                    eprintln!("troupe: {e}");
                    return exit::FAILURE;
                }
            }
            frame = conn.next_frame() => match frame {
                Ok(Some(frame)) => show(&frame, &session),
                Ok(None) => { eprintln!("troupe: the gateway closed the connection"); return exit::FAILURE }
                Err(e) => { eprintln!("troupe: {e}"); return exit::FAILURE }
            }
        }
    }
    conn.close().await;
    exit::OK
}

fn show(frame: &Value, session: &str) {
    let payload = &frame["payload"];
    if frame["type"] == "res" {
        if frame["ok"] == false {
            println!(
                "[error] {}",
                frame["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed")
            );
        } else if let Some(messages) = payload["messages"].as_array() {
            for m in messages {
                println!(
                    "{:>9}: {}",
                    m["role"].as_str().unwrap_or("?"),
                    m["text"].as_str().unwrap_or("")
                );
            }
        } else if payload["queued"]["position"]
            .as_u64()
            .is_some_and(|p| p > 0)
        {
            println!("[queued: {} ahead]", payload["queued"]["position"]);
        } else if payload["aborted"] == true {
            println!("[aborted]");
        } else if payload["existed"].is_boolean() {
            println!("[session reset]");
        }
        return;
    }
    if frame["event"] != "chat" || payload["sessionKey"] != session {
        return;
    }
    match payload["state"].as_str() {
        Some("delta") => print_flush(payload["delta"].as_str().unwrap_or("")),
        Some("final") | Some("aborted") => print_flush("\n"),
        Some("error") => println!(
            "\n[error] {}",
            payload["errorMessage"].as_str().unwrap_or("the run failed")
        ),
        _ => {}
    }
}
