//! Built-in tools an agent may offer its model: `current_time`, `memory_read`,
//! `memory_write`, `memory_search` (notes in the agent's `memory/` vault, through
//! [`crate::vault`], the same code as `/api/vault`), and `sessions_send`
//! (message another session). A failing tool returns an error result to the model; it never
//! fails the run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::Recipient;
use serde_json::{Value, json};

use crate::messages::{AgentId, QueueMode, RunId};
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
    pub run_id: RunId,
    /// The agent.
    pub agent_id: AgentId,
    /// Known agents (for `sessions_send` validation), shared by every run of the agent.
    pub agents: Arc<[AgentId]>,
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
            "Read a markdown note from your memory vault (Obsidian-style: YAML front matter, [[wikilinks]]).",
            json!({ "type": "object", "properties": { "path": { "type": "string", "description": "note path ending in .md, e.g. people/alice.md" } }, "required": ["path"] }),
        ),
        "memory_write" => (
            "Write (or append to) a markdown note (.md) in your memory vault; link notes with [[note name]].",
            json!({ "type": "object", "properties": {
                "path": { "type": "string" }, "content": { "type": "string" }, "append": { "type": "boolean" } }, "required": ["path", "content"] }),
        ),
        "memory_search" => (
            "Full-text search of your notes (all words must match; best matches first).",
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
                session_key: key.clone().into(),
                agent_id: agent_id.into(),
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
        name if crate::mcp::is_mcp_tool(&ctx.agent_id, name) => {
            crate::mcp::call(&ctx.agent_id, call).await
        }
        other => Err(format!("unknown tool {other:?}")),
    }
}

/// The largest note `memory_read` returns and `memory_write` leaves behind, in bytes.
pub const MAX_NOTE_BYTES: u64 = crate::vault::MAX_NOTE_BYTES;
/// Notes `memory_search` returns, at most.
const MAX_SEARCH_HITS: u32 = 20;

/// The memory tools, through the same [`Vault`](crate::vault::Vault) code as `/api/vault`.
async fn memory(dir: &Path, tool: &str, args: &Value) -> Result<String, String> {
    use crate::vault::{Vault, WriteMode};
    let vault = Vault::for_memory_dir(dir);
    match tool {
        "memory_read" => {
            let rel = arg(args, "path")?.to_string();
            blocking(move || vault.read_text(&rel).map(|(text, _)| text)).await
        }
        "memory_write" => {
            let rel = arg(args, "path")?.to_string();
            let content = arg(args, "content")?.to_string();
            let mode = if args["append"].as_bool().unwrap_or(false) {
                WriteMode::Append
            } else {
                WriteMode::Replace
            };
            blocking(move || {
                vault.write(&rel, &content, mode).map(|w| {
                    json!({ "written": w.path, "bytes": content.len(), "size": w.size }).to_string()
                })
            })
            .await
        }
        _ => {
            let query = arg(args, "query")?.to_string();
            blocking(move || {
                vault
                    .search(&query, MAX_SEARCH_HITS)
                    .map(|hits| json!({ "matches": hits }).to_string())
            })
            .await
        }
    }
}

async fn blocking(
    op: impl FnOnce() -> Result<String, crate::vault::VaultError> + Send + 'static,
) -> Result<String, String> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| format!("the tool stopped unexpectedly: {e}"))?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096_000), "2024-02-29T12:34:56Z");
    }

    #[tokio::test]
    async fn memory_write_read_and_search_round_trip() {
        let dir = std::env::temp_dir().join(format!("troupe-mem-{}", uuid::Uuid::new_v4()));
        let ctx = ToolContext {
            memory_dir: Some(dir.clone()),
            run_id: "r".into(),
            agent_id: "main".into(),
            agents: Arc::from(Vec::new()),
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

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("troupe-tools-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tool_ctx(dir: &Path) -> ToolContext {
        ToolContext {
            memory_dir: Some(dir.to_path_buf()),
            run_id: "r".into(),
            agent_id: "main".into(),
            agents: Arc::from(Vec::new()),
            queue: None,
        }
    }

    fn call(name: &str, args: Value) -> ToolCall {
        ToolCall {
            id: "c".into(),
            name: name.into(),
            arguments: args.to_string(),
        }
    }

    #[tokio::test]
    async fn memory_tools_refuse_symlinks_that_lead_outside_the_memory_dir() {
        let base = TempDir::new();
        let memory = base.path().join("memory");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&memory).expect("memory dir");
        std::fs::create_dir_all(&outside).expect("outside dir");
        std::fs::write(outside.join("secret.md"), "the secret password\n").expect("secret");
        std::os::unix::fs::symlink(outside.join("secret.md"), memory.join("leak.md"))
            .expect("file symlink");
        std::os::unix::fs::symlink(&outside, memory.join("elsewhere")).expect("dir symlink");
        std::os::unix::fs::symlink(base.path().join("nowhere.md"), memory.join("dangling.md"))
            .expect("dangling symlink");
        std::fs::write(memory.join("ok.md"), "fine\n").expect("note");
        std::os::unix::fs::symlink(memory.join("ok.md"), memory.join("alias.md"))
            .expect("inside symlink");
        let ctx = tool_ctx(&memory);

        for path in ["leak.md", "elsewhere/secret.md"] {
            let err = execute(&ctx, &call("memory_read", json!({ "path": path })))
                .await
                .expect_err(path);
            assert!(err.contains("outside memory/"), "{path}: {err}");
        }
        for path in [
            "elsewhere/new.md",
            "elsewhere/sub/new.md",
            "dangling.md",
            "leak.md",
        ] {
            let err = execute(
                &ctx,
                &call("memory_write", json!({ "path": path, "content": "x" })),
            )
            .await
            .expect_err(path);
            assert!(err.contains("refused"), "{path}: {err}");
        }
        assert!(!outside.join("new.md").exists() && !outside.join("sub").exists());
        assert!(!base.path().join("nowhere.md").exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret.md")).expect("secret"),
            "the secret password\n"
        );
        let found = execute(&ctx, &call("memory_search", json!({ "query": "secret" })))
            .await
            .expect("search");
        assert!(!found.contains("password"), "search stays inside: {found}");
        let alias = execute(&ctx, &call("memory_read", json!({ "path": "alias.md" })))
            .await
            .expect("a symlink inside memory/ is fine");
        assert_eq!(alias, "fine\n");
    }

    #[tokio::test]
    async fn memory_tools_cap_what_they_read_and_write() {
        let base = TempDir::new();
        let memory = base.path().join("memory");
        std::fs::create_dir_all(&memory).expect("memory dir");
        let big = "x".repeat(MAX_NOTE_BYTES as usize + 1);
        std::fs::write(memory.join("big.md"), &big).expect("big note");
        let ctx = tool_ctx(&memory);
        let err = execute(&ctx, &call("memory_read", json!({ "path": "big.md" })))
            .await
            .expect_err("too big to read");
        assert!(err.contains("at most"), "{err}");
        let err = execute(
            &ctx,
            &call("memory_write", json!({ "path": "new.md", "content": big })),
        )
        .await
        .expect_err("too big to write");
        assert!(err.contains("at most"), "{err}");
        assert!(!memory.join("new.md").exists());
        let half = "y".repeat(MAX_NOTE_BYTES as usize / 2 + 1);
        for (i, expect_ok) in [(0, true), (1, false)] {
            let result = execute(
                &ctx,
                &call(
                    "memory_write",
                    json!({ "path": "grow.md", "content": half, "append": true }),
                ),
            )
            .await;
            assert_eq!(result.is_ok(), expect_ok, "append #{i}: {result:?}");
        }
    }
}
