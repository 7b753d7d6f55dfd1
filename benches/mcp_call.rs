//! # `mcp_call`: MCP tool call overhead through the gateway
//!
//! Runs the test MCP server (`examples/mcp_test_server.rs`, stdio) three ways and prints
//! p50/p99 latencies:
//!
//! 1. direct: an `rmcp` client in this process spawns the server and calls `add`
//!    (`tools/call` round trip over stdio);
//! 2. gateway, MCP tool: a turn (WS `chat.send` + `agent.wait`) in which the fake LLM
//!    (`tests/support/fake_llm.rs`) asks for `calc__add` and then answers;
//! 3. gateway, built-in tool: the same turn shape with `current_time`, which does no I/O.
//!
//! (2) − (3) is what an MCP call adds to a turn (lookup in the `mcp` registry, the message
//! to `mcp:calc`, the stdio round trip); compare it with (1), the round trip alone.
//!
//! ```text
//! cargo build --release --example mcp_test_server && cargo bench --bench mcp_call
//! ```
//!
//! The example is built (with `$CARGO`, release) if it is missing. `TROUPE_BENCH_QUICK=1`
//! measures 50 calls per phase instead of 400. Built and run by `cargo test --benches`
//! (no `--bench` flag), it skips itself unless `TROUPE_BENCH_QUICK` is set.

#[allow(dead_code, reason = "shared with the other benches")]
mod support;

#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Script};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use support::client::Client;
use support::process::{ServerKind, ServerProcess, Setup};
use support::report::{Table, p50_p99, us};
use support::{BenchResult, bench_main};

/// Phase sizes.
struct Scale {
    calls: usize,
}

fn main() -> Result<(), support::BoxError> {
    bench_main(
        "mcp_call",
        |quick| {
            Ok(Scale {
                calls: if quick { 50 } else { 400 },
            })
        },
        measure,
    )
}

async fn measure(scale: Scale) -> Table {
    let mut table = Table::new(format!("mcp_call: {} calls per phase", scale.calls));
    let server = match server_bin() {
        Ok(bin) => bin,
        Err(e) => {
            table.error("test server", "", &e);
            return table;
        }
    };
    match direct(&server, scale.calls).await {
        Ok(samples) => {
            let (p50, p99) = p50_p99(&samples);
            table.info(
                "direct rmcp tools/call p50 / p99",
                format!("{} / {}", us(p50), us(p99)),
            );
        }
        Err(e) => table.error("direct rmcp tools/call", "", &e),
    }
    match through_gateway(&server, scale.calls).await {
        Ok((mcp, builtin)) => {
            let (m50, m99) = p50_p99(&mcp);
            let (b50, b99) = p50_p99(&builtin);
            table.info(
                "turn with an MCP call p50 / p99",
                format!("{} / {}", us(m50), us(m99)),
            );
            table.info(
                "turn with a built-in call p50 / p99",
                format!("{} / {}", us(b50), us(b99)),
            );
            table.info(
                "MCP call added to a turn p50 / p99",
                format!(
                    "{} / {}",
                    us(m50.saturating_sub(b50)),
                    us(m99.saturating_sub(b99))
                ),
            );
        }
        Err(e) => table.error("through the gateway", "", &e),
    }
    table
}

/// The test server binary next to this bench's profile dir, built if missing.
fn server_bin() -> BenchResult<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("no target dir")?;
    let bin = profile_dir.join("examples").join("mcp_test_server");
    if bin.exists() {
        return Ok(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--example", "mcp_test_server"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status()?;
    if !status.success() || !bin.exists() {
        return Err(format!("cannot build {}", bin.display()).into());
    }
    Ok(bin)
}

/// `add` called `calls` times by an rmcp client in this process; microseconds each.
async fn direct(server: &Path, calls: usize) -> BenchResult<Vec<u32>> {
    let transport = TokioChildProcess::new(tokio::process::Command::new(server))?;
    let client = ().serve(transport).await?;
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + 10 {
        let args = json!({ "a": i, "b": 1 });
        let params = CallToolRequestParams::new("add")
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        let started = Instant::now();
        client.call_tool(params).await?;
        if i >= 10 {
            samples.push(started.elapsed().as_micros() as u32);
        }
    }
    let _ = client.cancel().await;
    Ok(samples)
}

/// Turns with one MCP call and turns with one built-in call; microseconds each.
async fn through_gateway(server: &Path, calls: usize) -> BenchResult<(Vec<u32>, Vec<u32>)> {
    let fake = FakeLlm::start();
    let setup = Setup {
        env: vec![
            (
                "TROUPE__PROVIDERS__OPENAI__BASE_URL".into(),
                format!("{}/v1", fake.base_url()),
            ),
            ("OPENAI_API_KEY".into(), "sk-bench".into()),
            ("TROUPE__LOGGING__LEVEL".into(), "warn".into()),
        ],
        files: vec![
            (
                "agents/oa/agent.toml".into(),
                "provider = \"openai\"\nmodel = \"m\"\ntools = [\"current_time\"]\n".into(),
            ),
            (
                "config.toml".into(),
                format!(
                    "[[mcp]]\nname = \"calc\"\ncommand = \"{}\"\n",
                    server.display()
                ),
            ),
        ],
    };
    let (gateway, _) = ServerProcess::start_with(ServerKind::Gateway, &setup).await?;
    let mut client = Client::connect(gateway.port(), &gateway.token()?).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = client.call("agents.list", None).await?;
        if list["agents"][0]["mcpTools"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("the MCP server's tools never showed in agents.list".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut mcp = Vec::with_capacity(calls);
    let mut builtin = Vec::with_capacity(calls);
    for i in 0..calls + 10 {
        for (tool, args, out) in [
            ("calc__add", r#"{"a":1,"b":2}"#, &mut mcp),
            ("current_time", "{}", &mut builtin),
        ] {
            fake.push(Script::tool_call("c", tool, args, 1));
            fake.push(Script::reply("done", 1));
            let started = Instant::now();
            let accepted = client
                .call(
                    "chat.send",
                    Some(json!({
                        "sessionKey": format!("agent:oa:bench:{tool}"),
                        "message": "go",
                        "idempotencyKey": format!("{tool}-{i}"),
                    })),
                )
                .await?;
            let run_id = accepted["runId"].as_str().ok_or("no runId")?.to_string();
            let done = client
                .call(
                    "agent.wait",
                    Some(json!({ "runId": run_id, "timeoutMs": 30_000 })),
                )
                .await?;
            if done["status"] != "ok" {
                return Err(format!("a turn failed: {done}").into());
            }
            if i >= 10 {
                out.push(started.elapsed().as_micros() as u32);
            }
        }
    }
    Ok((mcp, builtin))
}
