//! A small WebSocket client for the CLI (`gateway call`, `gateway status`): handshake,
//! one request, its response(s).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::ClientFlags;
use crate::config::AuthSetting;
use crate::paths::StatePaths;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to {url}: {why} (is the gateway running? try `troupe gateway status`)")]
    Connect {
        /// URL tried.
        url: String,
        /// Cause.
        why: String,
    },
    /// The gateway refused the request or handshake.
    #[error("{0}")]
    Refused(Value),
    /// The connection broke or sent garbage.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No reply in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// Where to connect and with which token.
pub struct Target {
    /// `ws://...` URL.
    pub url: String,
    /// Token, if any.
    pub token: Option<String>,
    /// Password (password mode), if any.
    pub password: Option<String>,
}

impl Target {
    /// From flags, env (`TROUPE_GATEWAY_TOKEN`, `TROUPE_GATEWAY_PASSWORD`), the config
    /// file's `gateway.auth.token` / `gateway.auth.password` / `gateway.port` (the file of
    /// `TROUPE_CONFIG`, else the state dir's `config.toml`), the state dir's port and token
    /// files, and the default port, in that order of precedence.
    pub fn resolve(flags: &ClientFlags, paths: &StatePaths, env: &HashMap<String, String>) -> Self {
        let config_file = env
            .get("TROUPE_CONFIG")
            .filter(|c| !c.is_empty())
            .map(std::path::PathBuf::from);
        // An invalid config does not stop a client command: it falls back to the files.
        let config = crate::server::load_config(
            paths,
            config_file.as_deref(),
            env,
            &crate::config::Overrides::default(),
        )
        .ok();
        let url = flags.url.clone().unwrap_or_else(|| {
            let port = paths
                .read_port()
                .or_else(|| env.get("TROUPE_GATEWAY_PORT").and_then(|p| p.parse().ok()))
                .or_else(|| config.as_ref().map(|c| c.port))
                .unwrap_or(18789);
            format!("ws://{}:{port}/ws", paths.read_host())
        });
        let (config_token, config_password) = match config.as_ref().map(|c| &c.auth) {
            Some(AuthSetting::Token(Some(t))) => (Some(t.0.clone()), None),
            Some(AuthSetting::Password(p)) => (None, Some(p.0.clone())),
            _ => (None, None),
        };
        let token = flags
            .token
            .clone()
            .or_else(|| env.get("TROUPE_GATEWAY_TOKEN").cloned())
            .or(config_token)
            .or_else(|| paths.read_token());
        let password = flags
            .password
            .clone()
            .or_else(|| env.get("TROUPE_GATEWAY_PASSWORD").cloned())
            .or(config_password);
        Self {
            url,
            token,
            password,
        }
    }
}

/// Connects, handshakes, sends `method` and returns the response payload (the final one
/// when `expect_final`).
pub async fn call(
    target: &Target,
    method: &str,
    params: Option<Value>,
    expect_final: bool,
    timeout: Duration,
) -> Result<Value, ClientError> {
    tokio::time::timeout(timeout, call_inner(target, method, params, expect_final))
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn call_inner(
    target: &Target,
    method: &str,
    params: Option<Value>,
    expect_final: bool,
) -> Result<Value, ClientError> {
    let mut conn = Connection::open(target).await?;
    let id = conn.send_request(method, params).await?;
    loop {
        let payload = conn.response(&id).await?;
        let accepted = payload.get("status").and_then(Value::as_str) == Some("accepted");
        if !(expect_final && accepted) {
            conn.close().await;
            return Ok(payload);
        }
    }
}

/// An open, authenticated connection.
pub struct Connection {
    ws: Socket,
    next_id: u64,
}

impl Connection {
    /// Connects and completes the `connect` handshake.
    pub async fn open(target: &Target) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(target.url.as_str())
            .await
            .map_err(|e| ClientError::Connect {
                url: target.url.clone(),
                why: e.to_string(),
            })?;
        let mut conn = Self { ws, next_id: 0 };
        let connect = json!({
            "minProtocol": 3, "maxProtocol": 4,
            "client": { "id": "cli", "version": env!("CARGO_PKG_VERSION"), "platform": std::env::consts::OS, "mode": "cli" },
            "role": "operator",
            "scopes": ["operator.read", "operator.write", "operator.admin"],
            "auth": { "token": target.token, "password": target.password },
        });
        let id = conn.send_request("connect", Some(connect)).await?;
        conn.response(&id).await?;
        Ok(conn)
    }

    /// Sends a request; returns its id.
    pub async fn send_request(
        &mut self,
        method: &str,
        params: Option<Value>,
    ) -> Result<String, ClientError> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let mut frame = json!({ "type": "req", "id": id, "method": method });
        if let Some(p) = params {
            frame["params"] = p;
        }
        send(&mut self.ws, &frame).await?;
        Ok(id)
    }

    /// Waits for the response with this id, skipping events.
    pub async fn response(&mut self, id: &str) -> Result<Value, ClientError> {
        wait_response(&mut self.ws, id).await
    }

    /// The next frame (response or event); `None` when the connection closed.
    pub async fn next_frame(&mut self) -> Result<Option<Value>, ClientError> {
        while let Some(msg) = self.ws.next().await {
            match msg.map_err(|e| ClientError::Protocol(e.to_string()))? {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .map(Some)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
                Message::Close(_) => return Ok(None),
                _ => continue,
            }
        }
        Ok(None)
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Socket, frame: &Value) -> Result<(), ClientError> {
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

async fn wait_response(ws: &mut Socket, id: &str) -> Result<Value, ClientError> {
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let Message::Text(text) = msg else {
            if let Message::Close(frame) = msg {
                return Err(ClientError::Protocol(format!(
                    "gateway closed the connection: {frame:?}"
                )));
            }
            continue;
        };
        let frame: Value =
            serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if frame["type"] == "res" && frame["id"] == id {
            if frame["ok"] == true {
                return Ok(frame.get("payload").cloned().unwrap_or(Value::Null));
            }
            return Err(ClientError::Refused(
                frame.get("error").cloned().unwrap_or(Value::Null),
            ));
        }
    }
    Err(ClientError::Protocol(
        "connection closed before the reply".into(),
    ))
}

/// The single-threaded runtime a CLI command runs its requests on; `None` (after saying
/// why on stderr) if it cannot be built.
pub fn command_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("troupe: {e}");
            None
        }
    }
}
