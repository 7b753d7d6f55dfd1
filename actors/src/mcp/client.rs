//! `mcp:<name>`: one MCP server connection through the official Rust SDK (`rmcp`). At start
//! it spawns the server (stdio; killed when the actor goes, its stderr logged at debug) or
//! opens the streamable HTTP session, does the initialize handshake and lists the tools
//! (every page). It then answers [`CallMcpTool`] without blocking its mailbox and watches
//! the connection: a closed transport (the process died) or an unanswered ping fails the
//! actor, and its supervisor restarts it with backoff, showing the reason.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientRequest, JsonObject, PingRequest};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use super::{McpError, McpServerSettings, McpTransport, naming};
use crate::messages::Shutdown;
use crate::now_ms;
use crate::provider::ToolSpec;
use crate::supervisor::{ChildHandle, ChildLink, ChildSpec, ExitGuard};

/// Time allowed to start the server, do the handshake and list its tools.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server is pinged.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a ping may take before the server counts as hung.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the transport is checked for closure (the process died).
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Tool result text kept, at most (bytes).
const MAX_RESULT_BYTES: usize = 256 * 1024;

/// One tool of a server, as the model sees it and as the server names it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpTool {
    /// `<server>__<tool>`, valid for every provider.
    pub exposed: String,
    /// The server's own name for it.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
}

impl McpTool {
    /// The tool as offered to the model.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.exposed.clone(),
            description: self.description.clone(),
            parameters: self.input_schema.clone(),
        }
    }
}

/// What a server connection reports about itself.
#[derive(Debug, Clone, Default, Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct McpSnapshot {
    /// Its tools (empty until connected).
    pub tools: Arc<[McpTool]>,
    /// When this connection was made (ms).
    pub connected_since: Option<u64>,
    /// The most recent error, if any.
    pub last_error: Option<String>,
    /// The server process's pid (stdio).
    pub pid: Option<u32>,
}

/// Asks a server connection for its [`McpSnapshot`].
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "McpSnapshot")]
pub struct DescribeMcp;

/// Calls one tool; the answer is the text for the model, or an error text.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<String, String>")]
pub struct CallMcpTool {
    /// The tool's exposed name (`<server>__<tool>`).
    pub exposed: String,
    /// Its arguments.
    pub arguments: Option<JsonObject>,
    /// How long the call may take.
    pub timeout: Duration,
}

type Client = RunningService<RoleClient, ()>;

/// A connection to one MCP server.
pub struct McpActor {
    settings: Arc<McpServerSettings>,
    client: Option<Client>,
    peer: Option<Peer<RoleClient>>,
    snapshot: McpSnapshot,
    ping_since: Option<Instant>,
    last_ping: Instant,
    /// Tool calls in flight (shown as the node's mailbox).
    calls: Arc<AtomicUsize>,
    guard: ExitGuard,
}

impl McpActor {
    /// The child spec of `mcp:<name>` (own arbiter, restarted with backoff).
    pub fn spec(settings: McpServerSettings) -> ChildSpec {
        let id = settings.child_id();
        let settings = Arc::new(settings);
        ChildSpec::new(id, "mcp", move |link: ChildLink| {
            let settings = settings.clone();
            let arbiter = crate::supervisor::child_arbiter(&link.id.to_string());
            let addr = McpActor::start_in_arbiter(&arbiter.handle(), move |_| McpActor {
                settings,
                client: None,
                peer: None,
                snapshot: McpSnapshot::default(),
                ping_since: None,
                last_ping: Instant::now(),
                calls: Arc::new(AtomicUsize::new(0)),
                guard: link.guard(),
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
        .backoff(super::MCP_BACKOFF)
        .shutdown(Duration::from_secs(5))
    }

    /// Fails the actor: its supervisor restarts it after a backoff, showing `why`.
    fn fail(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::warn!(server = %self.settings.name, reason = %why, "mcp server failing");
        self.guard.fail(why);
        ctx.stop();
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let settings = self.settings.clone();
        let work = async move {
            tokio::time::timeout(CONNECT_TIMEOUT, open(&settings))
                .await
                .unwrap_or_else(|_| {
                    Err(McpError::Connect(format!(
                        "no handshake and tool list within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    )))
                })
        };
        ctx.spawn(work.into_actor(self).map(|opened, act, ctx| match opened {
            Ok((client, pid, tools)) => {
                tracing::info!(server = %act.settings.name, tools = tools.len(), "mcp server connected");
                act.peer = Some(client.peer().clone());
                act.client = Some(client);
                act.snapshot.tools = tools.into();
                act.snapshot.pid = pid;
                act.snapshot.connected_since = Some(now_ms());
                act.last_ping = Instant::now();
            }
            Err(e) => act.fail(e.to_string(), ctx),
        }));
    }

    /// Fails the actor when the connection closed or a ping went unanswered; pings it when due.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = &self.client else {
            return;
        };
        if client.is_closed() || client.is_transport_closed() {
            let why = match self.settings.transport {
                McpTransport::Stdio { .. } => "the server process exited (its stdio closed)",
                McpTransport::Http { .. } => "the connection to the server closed",
            };
            return self.fail(why.into(), ctx);
        }
        if let Some(since) = self.ping_since {
            if since.elapsed() > PING_TIMEOUT {
                let why = format!(
                    "the server did not answer a ping within {} s",
                    PING_TIMEOUT.as_secs()
                );
                self.fail(why, ctx);
            }
            return;
        }
        if self.last_ping.elapsed() < PING_EVERY {
            return;
        }
        let Some(peer) = self.peer.clone() else {
            return;
        };
        self.ping_since = Some(Instant::now());
        let ping = async move {
            peer.send_request(ClientRequest::PingRequest(PingRequest {
                method: Default::default(),
                extensions: Default::default(),
            }))
            .await
        };
        ctx.spawn(ping.into_actor(self).map(|answer, act, ctx| match answer {
            Ok(_) => {
                act.ping_since = None;
                act.last_ping = Instant::now();
            }
            Err(e) => act.fail(format!("ping failed: {e}"), ctx),
        }));
    }
}

/// Starts or opens the connection, does the handshake and lists every tool.
async fn open(
    settings: &McpServerSettings,
) -> Result<(Client, Option<u32>, Vec<McpTool>), McpError> {
    let (client, pid) = match &settings.transport {
        McpTransport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).kill_on_drop(true);
            for (key, value) in env {
                cmd.env(key, &value.0);
            }
            if let Some(dir) = cwd {
                cmd.current_dir(dir);
            }
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| McpError::Connect(format!("cannot start {command:?}: {e}")))?;
            let pid = transport.id();
            if let Some(stderr) = stderr {
                let name = settings.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(server = %name, stderr = %line, "mcp server stderr");
                    }
                });
            }
            let client = ().serve(transport).await.map_err(|e| {
                McpError::Connect(format!("the MCP handshake with {command:?} failed: {e}"))
            })?;
            (client, pid)
        }
        McpTransport::Http {
            url,
            headers,
            bearer_token,
        } => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = bearer_token {
                config = config.auth_header(token.0.clone());
            }
            let mut custom = std::collections::HashMap::new();
            for (key, value) in headers {
                let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                    .map_err(|e| McpError::Connect(format!("header name {key:?}: {e}")))?;
                let value = reqwest::header::HeaderValue::from_str(&value.0).map_err(|_| {
                    McpError::Connect(format!("header {key:?} has an invalid value"))
                })?;
                custom.insert(name, value);
            }
            config = config.custom_headers(custom);
            let transport = StreamableHttpClientTransport::from_config(config);
            let client = ().serve(transport).await.map_err(|e| {
                McpError::Connect(format!("the MCP handshake with {url} failed: {e}"))
            })?;
            (client, None)
        }
    };
    let listed = client
        .list_all_tools()
        .await
        .map_err(|e| McpError::Protocol(format!("tools/list failed: {e}")))?;
    let tools = listed
        .into_iter()
        .map(|t| McpTool {
            exposed: naming::exposed_name(&settings.name, &t.name),
            name: t.name.to_string(),
            description: t.description.map(|d| d.to_string()).unwrap_or_default(),
            input_schema: Value::Object((*t.input_schema).clone()),
        })
        .collect();
    Ok((client, pid, tools))
}

/// The text of a tool result for the model: its text parts joined (other parts described),
/// an error when the server flagged one.
fn result_text(result: rmcp::model::CallToolResult) -> Result<String, String> {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|c| match c.as_text() {
            Some(t) => t.text.clone(),
            None => "[non-text content omitted]".to_string(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let mut text = parts.join("\n");
    if text.len() > MAX_RESULT_BYTES {
        let mut cut = MAX_RESULT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[truncated]");
    }
    if result.is_error == Some(true) {
        Err(if text.is_empty() {
            "the tool reported an error".into()
        } else {
            text
        })
    } else {
        Ok(text)
    }
}

impl Actor for McpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.guard.liveness().attach(ctx);
        tracing::info!(server = %self.settings.name, transport = self.settings.transport.kind(), "mcp server starting");
        self.connect(ctx);
        ctx.run_interval(WATCH_EVERY, |act, ctx| act.watch(ctx));
    }
}

crate::child_controls!(McpActor, |this| this.calls.load(Ordering::Relaxed));

impl Handler<Shutdown> for McpActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<DescribeMcp> for McpActor {
    type Result = McpSnapshot;
    fn handle(&mut self, _: DescribeMcp, _: &mut Self::Context) -> McpSnapshot {
        self.snapshot.clone()
    }
}

impl Handler<CallMcpTool> for McpActor {
    type Result = ResponseFuture<Result<String, String>>;
    fn handle(&mut self, msg: CallMcpTool, _: &mut Self::Context) -> Self::Result {
        let server = self.settings.name.clone();
        let unavailable = |why: &str| {
            McpError::Unavailable {
                server: server.clone(),
                why: why.into(),
            }
            .to_string()
        };
        let Some(peer) = self.peer.clone() else {
            let why = unavailable("it is still connecting");
            return Box::pin(async move { Err(why) });
        };
        let Some(tool) = self
            .snapshot
            .tools
            .iter()
            .find(|t| t.exposed == msg.exposed)
        else {
            let why = format!("mcp server '{server}' has no tool {:?}", msg.exposed);
            return Box::pin(async move { Err(why) });
        };
        let mut params = CallToolRequestParams::new(tool.name.clone());
        if let Some(arguments) = msg.arguments {
            params = params.with_arguments(arguments);
        }
        let timeout = msg.timeout;
        let calls = self.calls.clone();
        calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let _done = InFlight(calls);
            match tokio::time::timeout(timeout, peer.call_tool(params)).await {
                Ok(Ok(result)) => result_text(result),
                Ok(Err(e)) => Err(format!("mcp server '{server}' failed the call: {e}")),
                Err(_) => Err(format!(
                    "mcp server '{server}' did not answer within {} s (call_timeout_secs)",
                    timeout.as_secs()
                )),
            }
        })
    }
}

/// Counts a call in flight until dropped (finished, timed out or abandoned).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
