//! A small MCP tool server over stdio, written with `rmcp`'s server side, for the gateway's
//! MCP tests and benchmark (`cargo test` builds it). Tools: `add` (two numbers), `sleep`
//! (waits `ms`), `fail` (an error result), `exit` (the process exits at once, as a crash
//! would). `--pid-file PATH` writes its pid there at start; the environment variable
//! `MCP_TEST_GREETING`, when set, is echoed by the `greeting` tool (to check `env`).
//! `--http-port-file PATH` serves streamable HTTP on 127.0.0.1 instead (port written there).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddRequest {
    /// The first number.
    a: i64,
    /// The second number.
    b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SleepRequest {
    /// How long to wait, in milliseconds.
    ms: u64,
}

#[derive(Debug, Clone)]
struct TestServer {
    #[allow(dead_code)]
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestServer {
    #[tool(description = "Add two integers and return the sum")]
    fn add(&self, Parameters(AddRequest { a, b }): Parameters<AddRequest>) -> String {
        format!("sum={}", a + b)
    }

    #[tool(description = "Wait for ms milliseconds, then answer")]
    async fn sleep(&self, Parameters(SleepRequest { ms }): Parameters<SleepRequest>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    #[tool(description = "Always fails")]
    fn fail(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("it failed on purpose")])
    }

    #[tool(description = "The MCP_TEST_GREETING environment variable")]
    fn greeting(&self) -> String {
        std::env::var("MCP_TEST_GREETING").unwrap_or_else(|_| "<unset>".into())
    }

    #[tool(description = "Exit the server process at once")]
    fn exit(&self) -> String {
        std::process::exit(3)
    }
}

#[tool_handler]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--pid-file") {
        let path = args.get(i + 1).ok_or("--pid-file needs a path")?;
        std::fs::write(path, std::process::id().to_string())?;
    }
    eprintln!("mcp test server starting");
    if let Some(i) = args.iter().position(|a| a == "--http-port-file") {
        let path = args.get(i + 1).ok_or("--http-port-file needs a path")?;
        return serve_http(path).await;
    }
    let server = TestServer {
        tool_router: TestServer::tool_router(),
    }
    .serve(rmcp::transport::stdio())
    .await?;
    server.waiting().await?;
    Ok(())
}

/// Streamable HTTP on 127.0.0.1 (an ephemeral port, written to `port_file`), path `/mcp`
/// (any path is served).
async fn serve_http(port_file: &str) -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        || {
            Ok(TestServer {
                tool_router: TestServer::tool_router(),
            })
        },
        std::sync::Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(port_file, listener.local_addr()?.port().to_string())?;
    loop {
        let (stream, _) = listener.accept().await?;
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
