//! How `troupe chat` prints what the gateway sends: streamed text for people, one JSON
//! object per reply with `--json`; errors always go to standard error.

use std::io::Write;

use serde_json::{Value, json};

/// Where and how replies are printed.
pub struct Output {
    /// The session this chat talks to (events of other sessions are ignored).
    pub session: String,
    /// One JSON object per line instead of streamed text.
    pub json: bool,
    /// A person at a terminal (banner, queue positions).
    pub interactive: bool,
}

fn print_flush(text: &str) {
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

impl Output {
    /// Prints a frame; returns `(runId, succeeded)` when it is the end of a run.
    pub fn show(&self, frame: &Value) -> Option<(String, bool)> {
        if frame["type"] == "res" {
            self.show_response(frame);
            return None;
        }
        let payload = &frame["payload"];
        if frame["event"] != "chat" || payload["sessionKey"] != self.session.as_str() {
            return None;
        }
        let run_id = payload["runId"].as_str().unwrap_or_default().to_string();
        let state = payload["state"].as_str().unwrap_or_default();
        let ok = match state {
            "delta" => {
                if !self.json {
                    print_flush(payload["delta"].as_str().unwrap_or(""));
                }
                return None;
            }
            "final" => true,
            "aborted" | "error" => false,
            _ => return None,
        };
        let error = payload["errorMessage"].as_str();
        if self.json {
            let mut line = json!({
                "runId": run_id,
                "sessionKey": self.session,
                "status": if state == "final" { "ok" } else { state },
                "reply": payload["message"]["text"].as_str().unwrap_or(""),
            });
            if let Some(e) = error {
                line["error"] = json!(e);
            }
            println!("{line}");
        } else {
            print_flush("\n");
        }
        if state == "error" {
            eprintln!(
                "troupe: run {run_id} failed: {}",
                error.unwrap_or("the run failed")
            );
        }
        Some((run_id, ok))
    }

    fn show_response(&self, frame: &Value) {
        let payload = &frame["payload"];
        if frame["ok"] != true {
            let error = &frame["error"];
            eprintln!(
                "troupe: {}{}",
                error["message"].as_str().unwrap_or("request failed"),
                error["details"]["code"]
                    .as_str()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            );
            return;
        }
        if self.json {
            // Acceptances are implied by the reply lines; other answers are printed whole.
            if payload["status"] != "accepted" {
                println!("{payload}");
            }
            return;
        }
        if let Some(messages) = payload["messages"].as_array() {
            for m in messages {
                println!(
                    "{:>9}: {}",
                    m["role"].as_str().unwrap_or("?"),
                    m["text"].as_str().unwrap_or("")
                );
            }
        } else if self.interactive
            && payload["queued"]["position"]
                .as_u64()
                .is_some_and(|p| p > 0)
        {
            println!("[queued: {} ahead]", payload["queued"]["position"]);
        } else if payload["aborted"] == true {
            println!("[aborted]");
        } else if payload["existed"].is_boolean() {
            println!("[session reset]");
        }
    }
}
