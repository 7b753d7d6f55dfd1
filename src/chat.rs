//! `troupe chat`: a terminal client through the gateway. Replies stream as they arrive;
//! `/abort`, `/reset`, `/history`, `/quit`. From a pipe or with `--message` it is a script
//! tool: it sends every line, waits for the replies to what it sent, prints them and exits
//! 0 only if every request and run succeeded.

mod render;

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::cli::ClientFlags;
use crate::client::{Connection, Target};
use crate::exit;
use crate::paths::StatePaths;
use render::Output;

const HELP: &str = "commands: /abort (stop the reply), /reset (clear the session), /history, /quit";

/// What `troupe chat` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Agent id (default `main`).
    pub agent: Option<String>,
    /// Session key (default `agent:<agent>:main`).
    pub session: Option<String>,
    /// One-shot: send this message instead of reading standard input.
    pub message: Option<String>,
    /// Print one JSON object per reply instead of streaming text.
    pub json: bool,
}

/// Runs the chat until `/quit`, or until input ends and every reply has arrived.
pub fn run(
    paths: &StatePaths,
    env: &HashMap<String, String>,
    options: ChatOptions,
    flags: &ClientFlags,
) -> i32 {
    let target = Target::resolve(flags, paths, env);
    let agent = options.agent.clone().unwrap_or_else(|| "main".into());
    let session = options
        .session
        .clone()
        .unwrap_or_else(|| format!("agent:{agent}:main"));
    let interactive = options.message.is_none() && std::io::stdin().is_terminal();
    let output = Output {
        session: session.clone(),
        json: options.json,
        interactive,
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("troupe: cannot start the async runtime");
        return exit::FAILURE;
    };
    let idle = Duration::from_secs(flags.timeout.max(1));
    let code = runtime.block_on(chat_loop(target, output, options.message, idle));
    // The stdin reader may be blocked in a read that never ends; don't wait for it.
    runtime.shutdown_background();
    code
}

/// Lines to send: the `--message` text, or standard input line by line.
fn input_lines(message: Option<String>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if let Some(text) = message {
            let _ = tx.send(text).await;
            return;
        }
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// What this client is still waiting for, and whether anything failed.
#[derive(Default)]
struct Outstanding {
    /// Request id → method, for requests without a response yet.
    requests: HashMap<String, &'static str>,
    /// Runs this client started that have not ended.
    runs: HashSet<String>,
    /// Runs whose end arrived before their `accepted` response: run id → succeeded.
    ended_early: HashMap<String, bool>,
    /// Something this client asked for failed.
    failed: bool,
}

impl Outstanding {
    fn idle(&self) -> bool {
        self.requests.is_empty() && self.runs.is_empty()
    }

    /// A response arrived; a `chat.send` acceptance starts waiting for its run.
    fn on_response(&mut self, frame: &Value) {
        let Some(method) = frame["id"].as_str().and_then(|id| self.requests.remove(id)) else {
            return;
        };
        if frame["ok"] != true {
            self.failed = true;
            return;
        }
        if method != "chat.send" {
            return;
        }
        if let Some(run_id) = frame["payload"]["runId"].as_str() {
            match self.ended_early.remove(run_id) {
                Some(ok) => self.failed |= !ok,
                None => {
                    self.runs.insert(run_id.to_string());
                }
            }
        }
    }

    /// A run ended (`final`, `error` or `aborted`).
    fn on_run_end(&mut self, run_id: &str, ok: bool) {
        if self.runs.remove(run_id) {
            self.failed |= !ok;
        } else if self.requests.values().any(|m| *m == "chat.send") {
            self.ended_early.insert(run_id.to_string(), ok);
        }
    }
}

/// The request a typed line stands for; `None` for blank lines and local commands.
fn request_for(line: &str, session: &str) -> Option<(&'static str, Value)> {
    let key = json!(session);
    match line {
        "" => None,
        "/abort" => Some(("chat.abort", json!({ "sessionKey": key }))),
        "/reset" => Some(("sessions.reset", json!({ "sessionKey": key }))),
        "/history" => Some(("chat.history", json!({ "sessionKey": key, "limit": 50 }))),
        text => Some((
            "chat.send",
            json!({ "sessionKey": key, "message": text, "idempotencyKey": uuid::Uuid::new_v4().to_string() }),
        )),
    }
}

/// Requests this client leaves unanswered at most before it reads more input.
const MAX_IN_FLIGHT: usize = 64;

async fn chat_loop(target: Target, output: Output, message: Option<String>, idle: Duration) -> i32 {
    let mut conn = match Connection::open(&target).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("troupe: {e}");
            return exit::FAILURE;
        }
    };
    if output.interactive && !output.json {
        println!("troupe chat: session {}. {HELP}", output.session);
    }
    let mut lines = input_lines(message);
    let mut input_open = true;
    let mut waiting = Outstanding::default();
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        if !input_open && waiting.idle() {
            break;
        }
        tokio::select! {
            // At most MAX_IN_FLIGHT requests unanswered: the gateway refuses more than 256
            // per connection, and a long pipe must not hit that.
            line = lines.recv(), if input_open && waiting.requests.len() < MAX_IN_FLIGHT => {
                let Some(line) = line else {
                    input_open = false;
                    deadline = tokio::time::Instant::now() + idle;
                    continue;
                };
                let line = line.trim();
                match line {
                    "/quit" | "/exit" => break,
                    "/help" => { println!("{HELP}"); continue }
                    _ => {}
                }
                let Some((method, params)) = request_for(line, &output.session) else { continue };
                match conn.send_request(method, Some(params)).await {
                    Ok(id) => { waiting.requests.insert(id, method); }
                    Err(e) => { eprintln!("troupe: {e}"); return exit::FAILURE }
                }
            }
            frame = conn.next_frame() => match frame {
                Ok(Some(frame)) => {
                    if let Some((run_id, ok)) = output.show(&frame) {
                        waiting.on_run_end(&run_id, ok);
                        deadline = tokio::time::Instant::now() + idle;
                    }
                    if frame["type"] == "res" {
                        waiting.on_response(&frame);
                        deadline = tokio::time::Instant::now() + idle;
                    }
                }
                Ok(None) => { eprintln!("troupe: the gateway closed the connection"); return exit::FAILURE }
                Err(e) => { eprintln!("troupe: {e}"); return exit::FAILURE }
            },
            _ = tokio::time::sleep_until(deadline), if !input_open => {
                eprintln!(
                    "troupe: no reply within {} s (waiting for {} request(s) and {} run(s)); raise --timeout to wait longer",
                    idle.as_secs(), waiting.requests.len(), waiting.runs.len()
                );
                return exit::FAILURE;
            }
        }
    }
    conn.close().await;
    if waiting.failed {
        exit::FAILURE
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_ends_before_its_acceptance_still_counts() {
        let mut w = Outstanding::default();
        w.requests.insert("1".into(), "chat.send");
        w.on_run_end("run-a", false);
        assert!(!w.failed);
        w.on_response(
            &json!({ "type": "res", "id": "1", "ok": true, "payload": { "runId": "run-a" } }),
        );
        assert!(w.idle());
        assert!(w.failed, "the early error is remembered");
    }

    #[test]
    fn accepted_runs_are_waited_for_and_refusals_fail() {
        let mut w = Outstanding::default();
        w.requests.insert("1".into(), "chat.send");
        w.requests.insert("2".into(), "chat.history");
        w.on_response(
            &json!({ "type": "res", "id": "1", "ok": true, "payload": { "runId": "r" } }),
        );
        assert!(!w.idle());
        w.on_run_end("r", true);
        w.on_response(
            &json!({ "type": "res", "id": "2", "ok": false, "error": { "message": "bad" } }),
        );
        assert!(w.idle());
        assert!(w.failed);
    }

    #[test]
    fn slash_commands_map_to_methods_and_blank_lines_to_nothing() {
        assert!(request_for("", "s").is_none());
        assert_eq!(
            request_for("/reset", "s").map(|r| r.0),
            Some("sessions.reset")
        );
        let (method, params) = request_for("hi", "s").expect("a send");
        assert_eq!(method, "chat.send");
        assert_eq!(params["message"], "hi");
    }
}
