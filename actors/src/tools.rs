//! Built-in tools an agent may offer its model: `current_time`, `memory_read`,
//! `memory_write`, `memory_search` (notes under the agent's `memory/`), and `sessions_send`
//! (message another session). A failing tool returns an error result to the model; it never
//! fails the run.

use std::path::{Component, Path, PathBuf};

use actix::Recipient;
use serde_json::{Value, json};

use crate::messages::QueueMode;
use crate::provider::{ToolCall, ToolSpec};
use crate::session_queue::SubmitTurn;

/// Every built-in tool's name.
pub const BUILTIN: &[&str] = &[
    "current_time",
    "memory_read",
    "memory_write",
    "memory_search",
    "sessions_send",
];

/// What tools may touch during one run.
#[derive(Clone)]
pub struct ToolContext {
    /// The agent's `memory/` directory, if it has one.
    pub memory_dir: Option<PathBuf>,
    /// The run, for idempotency of side effects.
    pub run_id: String,
    /// The agent.
    pub agent_id: String,
    /// Known agents (for `sessions_send` validation).
    pub agents: Vec<String>,
    /// The session-queue, for `sessions_send`.
    pub queue: Option<Recipient<SubmitTurn>>,
}

/// Specs of the named tools (unknown names are skipped; config validation reports them).
pub fn specs(names: &[String]) -> Vec<ToolSpec> {
    names.iter().filter_map(|n| spec(n)).collect()
}

fn spec(name: &str) -> Option<ToolSpec> {
    let (description, parameters) = match name {
        "current_time" => (
            "The current date and time (UTC).",
            json!({ "type": "object", "properties": {} }),
        ),
        "memory_read" => (
            "Read a note from your memory directory.",
            json!({ "type": "object", "properties": { "path": { "type": "string", "description": "note path, e.g. people/alice.md" } }, "required": ["path"] }),
        ),
        "memory_write" => (
            "Write (or append to) a note in your memory directory.",
            json!({ "type": "object", "properties": {
                "path": { "type": "string" }, "content": { "type": "string" }, "append": { "type": "boolean" } }, "required": ["path", "content"] }),
        ),
        "memory_search" => (
            "Search your notes for lines containing a phrase (case-insensitive).",
            json!({ "type": "object", "properties": { "query": { "type": "string" } }, "required": ["query"] }),
        ),
        "sessions_send" => (
            "Send a message to another session (it runs there as a new turn).",
            json!({ "type": "object", "properties": { "sessionKey": { "type": "string" }, "message": { "type": "string" } }, "required": ["sessionKey", "message"] }),
        ),
        _ => return None,
    };
    Some(ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters,
    })
}

fn arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, String> {
    args[key]
        .as_str()
        .ok_or_else(|| format!("missing string argument {key:?}"))
}

/// A note path inside the memory dir; `..`, absolute paths and empty names are refused.
fn note_path(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let rel = Path::new(rel);
    let safe =
        !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !safe {
        return Err(format!(
            "path {:?} must be relative, inside memory/, without ..",
            rel.display()
        ));
    }
    Ok(dir.join(rel))
}

/// UTC time as RFC 3339 from a Unix timestamp in milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Runs one tool call; `Err` is an error result for the model.
pub async fn execute(ctx: &ToolContext, call: &ToolCall) -> Result<String, String> {
    let args: Value = serde_json::from_str(&call.arguments)
        .map_err(|e| format!("arguments are not valid JSON: {e}"))?;
    match call.name.as_str() {
        "current_time" => {
            let ms = crate::now_ms();
            Ok(json!({ "utc": rfc3339(ms), "unixMs": ms }).to_string())
        }
        "memory_read" | "memory_write" | "memory_search" => {
            let dir = ctx
                .memory_dir
                .as_deref()
                .ok_or("this agent has no memory directory")?;
            memory(dir, &call.name, &args).await
        }
        "sessions_send" => {
            let queue = ctx
                .queue
                .as_ref()
                .ok_or("sessions_send is not available here")?;
            let crate::session_key::ResolvedKey {
                key,
                agent: agent_id,
            } = crate::session_key::resolve(arg(&args, "sessionKey")?, &ctx.agents)?;
            let submit = SubmitTurn {
                session_key: key.clone(),
                agent_id,
                text: arg(&args, "message")?.to_string(),
                idempotency_key: Some(format!("tool:{}:{}", ctx.run_id, call.id)),
                mode: QueueMode::Followup,
                subscriber: None,
                options: Default::default(),
            };
            match queue.send(submit).await {
                Ok(Ok(a)) => Ok(
                    json!({ "sessionKey": key, "runId": a.run_id, "queued": a.position })
                        .to_string(),
                ),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the session queue is restarting; try again".into()),
            }
        }
        other => Err(format!("unknown tool {other:?}")),
    }
}

async fn memory(dir: &Path, tool: &str, args: &Value) -> Result<String, String> {
    match tool {
        "memory_read" => {
            let path = note_path(dir, arg(args, "path")?)?;
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", arg(args, "path").unwrap_or("")))
        }
        "memory_write" => {
            let rel = arg(args, "path")?;
            let path = note_path(dir, rel)?;
            let content = arg(args, "content")?;
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            if args["append"].as_bool().unwrap_or(false) {
                use tokio::io::AsyncWriteExt;
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .map_err(|e| e.to_string())?;
                f.write_all(content.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            } else {
                tokio::fs::write(&path, content)
                    .await
                    .map_err(|e| format!("cannot write {rel}: {e}"))?;
            }
            Ok(json!({ "written": rel, "bytes": content.len() }).to_string())
        }
        _ => {
            let query = arg(args, "query")?.to_lowercase();
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || search(&dir, &query))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

fn search(dir: &Path, query: &str) -> String {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                for (n, line) in text.lines().enumerate() {
                    if line.to_lowercase().contains(query) && hits.len() < 50 {
                        hits.push(json!({ "path": rel, "line": n + 1, "text": line }));
                    }
                }
            }
        }
    }
    json!({ "matches": hits }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096_000), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn note_paths_cannot_escape_the_memory_dir() {
        let dir = Path::new("/m");
        assert!(note_path(dir, "a/b.md").is_ok());
        assert!(note_path(dir, "../etc/passwd").is_err());
        assert!(note_path(dir, "/etc/passwd").is_err());
        assert!(note_path(dir, "").is_err());
    }

    #[tokio::test]
    async fn memory_write_read_and_search_round_trip() {
        let dir = std::env::temp_dir().join(format!("troupe-mem-{}", uuid::Uuid::new_v4()));
        let ctx = ToolContext {
            memory_dir: Some(dir.clone()),
            run_id: "r".into(),
            agent_id: "main".into(),
            agents: vec![],
            queue: None,
        };
        let call = |name: &str, args: Value| ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args.to_string(),
        };
        execute(
            &ctx,
            &call(
                "memory_write",
                json!({ "path": "people/alice.md", "content": "Alice likes tea\n" }),
            ),
        )
        .await
        .expect("write");
        let read = execute(
            &ctx,
            &call("memory_read", json!({ "path": "people/alice.md" })),
        )
        .await
        .expect("read");
        assert_eq!(read, "Alice likes tea\n");
        let found = execute(&ctx, &call("memory_search", json!({ "query": "TEA" })))
            .await
            .expect("search");
        assert!(found.contains("people/alice.md"), "{found}");
        let bad = execute(&ctx, &call("memory_read", json!({ "path": "../x" }))).await;
        assert!(bad.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
