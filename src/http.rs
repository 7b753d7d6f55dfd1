//! HTTP and WebSocket routes on the one gateway port.

mod openai;
mod sessions;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use troupe_actors::gateway::{AuthPolicy, Gateway};
use troupe_actors::messages::FaultMode;
use troupe_actors::supervisor::{
    ChildAction, ChildCommand, ChildId, CommandError, NodeState, SupervisorActor, TreeNode,
};
use troupe_actors::ws_session::WsSessionActor;

/// An HTTP error with a JSON body `{error: {code, message}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", err.to_string())
            }
            CommandError::Unavailable(..) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                err.to_string(),
            ),
        }
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/status", web::get().to(status))
        .route("/api/supervisor/crash", web::post().to(crash))
        .route("/api/supervisor/restart", web::post().to(restart))
        .route("/api/sessions", web::get().to(sessions::list))
        .route("/api/usage", web::get().to(sessions::usage))
        .route(
            "/api/sessions/{key}/messages",
            web::get().to(sessions::messages),
        )
        .route(
            "/api/sessions/{key}/messages",
            web::post().to(sessions::post),
        )
        .route(
            "/v1/chat/completions",
            web::post().to(openai::chat_completions),
        )
        .route("/v1/models", web::get().to(openai::models))
        .route("/ws", web::get().to(ws))
        .route("/", web::get().to(root));
}

pub(crate) fn authorize(req: &HttpRequest, gateway: &Gateway) -> Result<(), ApiError> {
    let expected = match &gateway.settings.auth {
        AuthPolicy::None => return Ok(()),
        AuthPolicy::Token(s) | AuthPolicy::Password(s) => &s.0,
    };
    let limiter = &gateway.settings.auth_limiter;
    let ip = req.peer_addr().map(|a| a.ip());
    if let Some(retry) = ip.and_then(|ip| limiter.blocked(ip, Instant::now())) {
        return Err(too_many_failures(retry));
    }
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        if let Some(ip) = ip {
            limiter.succeeded(ip);
        }
        Ok(())
    } else {
        if let Some(ip) = ip {
            limiter.failed(ip, Instant::now());
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        ))
    }
}

/// 429 for an address with too many failed authentication attempts.
pub(crate) fn too_many_failures(retry: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!(
            "too many failed authentication attempts from this address; retry in {} s",
            retry.as_secs().max(1)
        ),
    )
}

async fn healthz(gateway: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true, "uptimeMs": gateway.settings.uptime_ms() }))
}

fn down_nodes(node: &TreeNode, out: &mut Vec<String>) {
    for child in node.children.iter().filter(|c| c.kind != "ws") {
        if child.state != NodeState::Running {
            out.push(format!("{} is {:?}", child.id, child.state).to_lowercase());
        }
        down_nodes(child, out);
    }
}

async fn readyz(gateway: web::Data<Gateway>) -> HttpResponse {
    let status = gateway.status(false).await;
    if status.ready {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        let mut down = Vec::new();
        down_nodes(&status.tree, &mut down);
        HttpResponse::ServiceUnavailable().json(json!({ "ready": false, "notRunning": down }))
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    clients: Option<String>,
}

async fn status(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let all = q.clients.as_deref() == Some("all");
    Ok(HttpResponse::Ok().json(gateway.status(all).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CrashBody {
    id: String,
    #[serde(default)]
    mode: FaultMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartBody {
    id: String,
}

async fn route_command(
    gateway: &Gateway,
    id: String,
    action: ChildAction,
) -> Result<HttpResponse, ApiError> {
    let reply = gateway
        .root
        .send(ChildCommand {
            id: ChildId::new(id.clone()),
            action,
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("supervisor unreachable: {e}"),
            )
        })?;
    reply?;
    Ok(HttpResponse::Accepted().json(json!({ "id": id, "ok": true })))
}

/// Whether a request says its body is JSON. Browsers cannot send that cross-site without a
/// CORS preflight, so requiring it keeps other sites' pages from posting to the gateway.
pub(crate) fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: &web::Bytes,
) -> Result<T, ApiError> {
    if !is_json(req) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_REQUEST",
            "the body must be JSON with Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            format!("invalid JSON body: {e}"),
        )
    })
}

async fn crash(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    if !gateway.settings.fault_injection {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FAULT_INJECTION_DISABLED",
            "fault injection is off; set debug.fault_injection = true",
        ));
    }
    let body: CrashBody = json_body(&req, &body)?;
    route_command(&gateway, body.id, ChildAction::Crash(body.mode)).await
}

async fn restart(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: RestartBody = json_body(&req, &body)?;
    route_command(&gateway, body.id, ChildAction::Restart).await
}

async fn metrics(gateway: web::Data<Gateway>) -> HttpResponse {
    let status = gateway.status(false).await;
    let mut out = String::new();
    out.push_str("# HELP troupe_uptime_seconds Seconds since the gateway started.\n# TYPE troupe_uptime_seconds gauge\n");
    out.push_str(&format!(
        "troupe_uptime_seconds {:.3}\n",
        status.uptime_ms as f64 / 1000.0
    ));
    let clients = status.tree.children.iter().find(|c| c.id == "clients");
    let connections = clients
        .map(|c| c.child_count.unwrap_or(c.children.len()))
        .unwrap_or(0);
    out.push_str("# HELP troupe_ws_connections Open WebSocket connections.\n# TYPE troupe_ws_connections gauge\n");
    out.push_str(&format!("troupe_ws_connections {connections}\n"));
    out.push_str(
        "# HELP troupe_ready 1 when every permanent child is running.\n# TYPE troupe_ready gauge\n",
    );
    out.push_str(&format!("troupe_ready {}\n", u8::from(status.ready)));
    out.push_str("# HELP troupe_unstoppable_nodes Killed nodes still running (a handler blocking its thread cannot be stopped); they leak until the process exits.\n# TYPE troupe_unstoppable_nodes gauge\n");
    out.push_str(&format!(
        "troupe_unstoppable_nodes {}\n",
        status.unstoppable
    ));
    let mut nodes = Vec::new();
    collect(&status.tree, &mut nodes);
    out.push_str("# HELP troupe_child_restarts_total Restarts of each supervised child.\n# TYPE troupe_child_restarts_total counter\n");
    for n in &nodes {
        out.push_str(&format!(
            "troupe_child_restarts_total{{id=\"{}\",kind=\"{}\"}} {}\n",
            n.id, n.kind, n.restarts
        ));
    }
    out.push_str("# HELP troupe_child_mailbox Work queued in each child as last reported.\n# TYPE troupe_child_mailbox gauge\n");
    for n in &nodes {
        out.push_str(&format!(
            "troupe_child_mailbox{{id=\"{}\",kind=\"{}\"}} {}\n",
            n.id, n.kind, n.mailbox
        ));
    }
    out.push_str(
        "# HELP troupe_child_up 1 when the child is running.\n# TYPE troupe_child_up gauge\n",
    );
    for n in &nodes {
        out.push_str(&format!(
            "troupe_child_up{{id=\"{}\",kind=\"{}\"}} {}\n",
            n.id,
            n.kind,
            u8::from(n.state == NodeState::Running)
        ));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

fn collect<'a>(node: &'a TreeNode, out: &mut Vec<&'a TreeNode>) {
    for child in node.children.iter().filter(|c| c.kind != "ws") {
        out.push(child);
        collect(child, out);
    }
}

async fn ws(
    req: HttpRequest,
    body: web::Payload,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, actix_web::Error> {
    let gateway: Arc<Gateway> = gateway.into_inner();
    if let Some(origin) = foreign_origin(&req) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("cross-origin WebSocket from {origin} refused: a web page must be served by this gateway to use it"),
        )
        .into());
    }
    let ip = req.peer_addr().map(|a| a.ip());
    if let Some(retry) = ip.and_then(|ip| gateway.settings.auth_limiter.blocked(ip, Instant::now()))
    {
        return Err(too_many_failures(retry).into());
    }
    let Some(clients) = gateway.lookup::<SupervisorActor>("clients").await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the clients supervisor is restarting; retry",
        )
        .into());
    };
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    WsSessionActor::start(
        (*gateway).clone(),
        clients,
        session,
        stream,
        req.peer_addr(),
    );
    Ok(response)
}

/// The `Origin` of a browser page on another site (DNS rebinding or a malicious page),
/// if any: browsers always send `Origin` on WebSocket upgrades, other clients rarely do.
fn foreign_origin(req: &HttpRequest) -> Option<String> {
    let origin = req.headers().get("origin")?.to_str().ok()?;
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin)
        .trim_end_matches('/');
    (origin_host != host).then(|| origin.to_string())
}

async fn root(
    req: HttpRequest,
    body: web::Payload,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, actix_web::Error> {
    let upgrade = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return ws(req, body, gateway).await;
    }
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(concat!(
        "<!doctype html><title>Troupe</title><h1>Troupe gateway</h1>",
        "<p>WebSocket control plane on this URL (and <code>/ws</code>). ",
        "<a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a> · <a href=\"/metrics\">/metrics</a></p>"
    )))
}
