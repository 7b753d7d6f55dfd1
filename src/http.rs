//! HTTP and WebSocket routes on the one gateway port.

mod agents_api;
mod auth;
mod body_deadline;
mod channels;
mod config_edit;
pub mod connections;
mod cron;
pub mod edge;
pub mod files;
mod hooks;
mod host;
mod logs;
mod mcps;
pub mod metrics;
mod models;
mod openai;
pub mod openapi;
pub mod operator;
pub mod restart;
mod session_admin;
mod sessions;
mod ui;
pub mod upload;
mod usage_api;
pub mod vault;

use std::sync::Arc;

use crate::gateway::Gateway;
use crate::gateway::ws::session::WsSessionActor;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;
use serde_json::{Value, json};
use troupe_actors::messages::FaultMode;
use troupe_actors::store::{GetStoreStats, StoreActor};
use troupe_actors::supervisor::{
    ChildAction, ChildCommand, ChildId, CommandError, NodeState, SupervisorActor, TreeNode,
};

pub(crate) use auth::authorize;

/// Largest request body outside `/v1/chat/completions` (which allows 4 MiB).
pub const BODY_LIMIT: usize = 256 * 1024;

/// An HTTP error with a JSON body `{error: {code, message}}`; 429 and 503 always carry
/// `Retry-After`, 401 `WWW-Authenticate: Bearer`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
    close: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            close: false,
        }
    }

    /// Sets `Retry-After` (seconds).
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Closes the connection after the response.
    pub(crate) fn close_connection(mut self) -> Self {
        self.close = true;
        self
    }

    /// The response with this error's status and headers and the given JSON body.
    pub(crate) fn respond_with(&self, body: &Value) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        let retryable = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        if let Some(secs) = self.retry_after_secs.or(retryable.then_some(1)) {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.close {
            res.force_close();
        }
        res.json(body)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        self.respond_with(&json!({ "error": { "code": self.code, "message": self.message } }))
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

/// An endpoint at `path` whose other methods get 405 with `Allow: allow`.
fn endpoint(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut res = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("method not allowed here; allowed: {allow}"),
        )
        .error_response();
        res.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        res
    }))
}

/// 404 for a path with no endpoint.
async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no endpoint at {}", req.path()),
    )
    .error_response()
}

/// Registers every route (GET endpoints answer HEAD too, through the edge middleware).
pub fn routes(cfg: &mut web::ServiceConfig) {
    const GET: &str = "GET, HEAD";
    const POST: &str = "POST";
    cfg.service(endpoint("/healthz", GET).route(web::get().to(healthz)))
        .service(endpoint("/readyz", GET).route(web::get().to(readyz)))
        .service(endpoint("/metrics", GET).route(web::get().to(metrics)))
        .service(endpoint("/api/status", GET).route(web::get().to(status)))
        .service(
            endpoint("/api/config", "GET, HEAD, PUT, PATCH")
                .route(web::get().to(config_get))
                .route(web::put().to(config_edit::put))
                .route(web::patch().to(config_edit::patch)),
        )
        .service(endpoint("/api/openapi.json", GET).route(web::get().to(openapi::document)))
        .service(endpoint("/api/agents", GET).route(web::get().to(agents_api::list)))
        .service(endpoint("/api/agent-info", GET).route(web::get().to(agents_api::info)))
        .service(endpoint("/api/logs", GET).route(web::get().to(logs::recent)))
        .service(endpoint("/api/restart", POST).route(web::post().to(restart::restart)))
        .service(
            endpoint("/api/models", "GET, HEAD, POST")
                .route(web::get().to(models::list))
                .route(web::post().to(models::add)),
        )
        .service(
            endpoint("/api/models/{name}", "PUT, DELETE")
                .route(web::put().to(models::update))
                .route(web::delete().to(models::remove)),
        )
        .service(endpoint("/api/models/{name}/test", POST).route(web::post().to(models::test)))
        .service(endpoint("/api/usage/daily", GET).route(web::get().to(usage_api::daily)))
        .service(endpoint("/api/usage/pricing", GET).route(web::get().to(usage_api::pricing)))
        .service(
            endpoint("/api/sessions/{key}", "DELETE")
                .route(web::delete().to(session_admin::delete)),
        )
        .service(
            endpoint("/api/sessions/{key}/reset", POST).route(web::post().to(session_admin::reset)),
        )
        .service(endpoint("/api/supervisor/crash", POST).route(web::post().to(crash)))
        .service(endpoint("/api/supervisor/restart", POST).route(web::post().to(restart)))
        .service(endpoint("/api/sessions", GET).route(web::get().to(sessions::list)))
        .service(endpoint("/api/usage", GET).route(web::get().to(sessions::usage)))
        .service(endpoint("/api/channels", GET).route(web::get().to(channels::status)))
        .service(endpoint("/api/pairing", GET).route(web::get().to(channels::list)))
        .service(endpoint("/api/pairing/approve", POST).route(web::post().to(channels::approve)))
        .service(
            endpoint("/api/cron", "GET, HEAD, POST")
                .route(web::get().to(cron::list))
                .route(web::post().to(cron::add)),
        )
        .service(
            endpoint("/api/mcps", "GET, HEAD, POST")
                .route(web::get().to(mcps::list))
                .route(web::post().to(mcps::add)),
        )
        .service(
            endpoint("/api/mcps/{name}", "PUT, DELETE")
                .route(web::put().to(mcps::replace))
                .route(web::delete().to(mcps::remove)),
        )
        .service(endpoint("/api/mcps/{name}/enable", POST).route(web::post().to(mcps::enable)))
        .service(endpoint("/api/mcps/{name}/disable", POST).route(web::post().to(mcps::disable)))
        .service(endpoint("/api/upload", POST).route(web::post().to(upload::upload)))
        .service(endpoint("/api/files/{path:.*}", GET).route(web::get().to(files::download)))
        .service(endpoint("/api/vault/notes", GET).route(web::get().to(vault::list)))
        .service(
            endpoint("/api/vault/notes/{path:.*}", "GET, HEAD, PUT, DELETE")
                .route(web::get().to(vault::get))
                .route(web::put().to(vault::put))
                .route(web::delete().to(vault::delete)),
        )
        .service(endpoint("/api/vault/graph", GET).route(web::get().to(vault::graph)))
        .service(endpoint("/api/vault/search", GET).route(web::get().to(vault::search)))
        .service(endpoint("/api/cron/status", GET).route(web::get().to(cron::status)))
        .service(
            endpoint("/api/cron/{id}", "GET, HEAD, PATCH, DELETE")
                .route(web::get().to(cron::get))
                .route(web::patch().to(cron::update))
                .route(web::delete().to(cron::remove)),
        )
        .service(endpoint("/api/cron/{id}/run", POST).route(web::post().to(cron::run)))
        .service(endpoint("/api/cron/{id}/runs", GET).route(web::get().to(cron::runs)))
        .service(endpoint("/hooks/agent", POST).route(web::post().to(hooks::agent)))
        .service(endpoint("/hooks/wake", POST).route(web::post().to(hooks::wake)))
        .service(endpoint("/hooks/{name}", POST).route(web::post().to(hooks::mapped)))
        .service(
            endpoint("/api/sessions/{key}/messages", "GET, HEAD, POST")
                .route(web::get().to(sessions::messages))
                .route(web::post().to(sessions::post)),
        )
        .service(
            endpoint("/v1/chat/completions", POST).route(web::post().to(openai::chat_completions)),
        )
        .service(endpoint("/v1/models", GET).route(web::get().to(openai::models)))
        .service(endpoint("/ws", GET).route(web::get().to(ws)))
        .service(endpoint("/", GET).route(web::get().to(root)))
        .service(endpoint("/ui/{file}", GET).route(web::get().to(ui::asset)))
        .default_service(web::to(not_found));
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "`{ok, uptimeMs}`", body = Object)))]
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

#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, description = "Every permanent child runs", body = Object), (status = 503, description = "`{ready: false, notRunning}`", body = Object)))]
async fn readyz(gateway: web::Data<Gateway>) -> HttpResponse {
    let status = gateway.status(false).await;
    if status.ready {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        let mut down = Vec::new();
        down_nodes(&status.tree, &mut down);
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .json(json!({ "ready": false, "notRunning": down }))
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    clients: Option<String>,
}

#[utoipa::path(get, path = "/api/status", tag = "status", params(("clients" = Option<String>, Query, description = "`all`: list every client")), responses((status = 200, description = "Version, pid, uptime, agents, reload, tree", body = Object), (status = 401, description = "No or a wrong bearer token", body = crate::http::openapi::ErrorBody)))]
async fn status(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let all = q.clients.as_deref() == Some("all");
    Ok(HttpResponse::Ok().json(gateway.status(all).await))
}

/// `GET /api/config`: the config file with secrets redacted, and its hash (as `config.get`).
#[utoipa::path(get, path = "/api/config", tag = "config", responses((status = 200, description = "`{file, hash, config, redacted, raw?, rawRedacted?}` (secrets redacted; `rawRedacted` is the text with secrets hidden when the file holds any)", body = Object), (status = 503, description = "Config service not running", body = crate::http::openapi::ErrorBody)))]
async fn config_get(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let Some(service) = gateway.settings.reload.service() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the config service is not running",
        ));
    };
    match service.get().await {
        Ok(payload) => Ok(HttpResponse::Ok().json(payload)),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        )),
    }
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

#[utoipa::path(post, path = "/api/supervisor/crash", tag = "supervisor", request_body(content = crate::http::openapi::CrashBody, content_type = "application/json"), responses((status = 202, description = "`{id, ok}`", body = Object), (status = 403, description = "Fault injection is off", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such child", body = crate::http::openapi::ErrorBody)))]
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

#[utoipa::path(post, path = "/api/supervisor/restart", tag = "supervisor", request_body(content = crate::http::openapi::ChildBody, content_type = "application/json"), responses((status = 202, description = "`{id, ok}`", body = Object), (status = 404, description = "No such child", body = crate::http::openapi::ErrorBody)))]
async fn restart(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: RestartBody = json_body(&req, &body)?;
    route_command(&gateway, body.id, ChildAction::Restart).await
}

#[utoipa::path(get, path = "/metrics", tag = "health", security(()), responses((status = 200, description = "OpenMetrics text format (Prometheus reads it)", body = String, content_type = "application/openmetrics-text")))]
async fn metrics(gateway: web::Data<Gateway>) -> HttpResponse {
    let status = gateway.status(false).await;
    let store = match gateway.lookup::<StoreActor>("store").await {
        Ok(store) => store.send(GetStoreStats).await.ok(),
        Err(_) => None,
    };
    let figures = metrics::Figures {
        uptime_ms: status.uptime_ms,
        ready: status.ready,
        unstoppable: status.unstoppable,
        tree: status.tree,
        store,
        channels: troupe_actors::health::channels::connected(),
    };
    HttpResponse::Ok()
        .content_type(metrics::CONTENT_TYPE)
        .body(metrics::render(figures))
}

#[utoipa::path(get, path = "/ws", tag = "websocket", security(()), responses((status = 101, description = "WebSocket upgrade (OpenClaw protocol; credential in `connect`)"), (status = 400, description = "Not a WebSocket upgrade", body = Object), (status = 503, description = "The `clients` supervisor did not run again within a few seconds of a restart (Retry-After)", body = crate::http::openapi::ErrorBody)))]
async fn ws(
    req: HttpRequest,
    body: web::Payload,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, actix_web::Error> {
    // Host, Origin and the connection bounds were checked by the edge middleware; the
    // credential comes in the `connect` request.
    let gateway: Arc<Gateway> = gateway.into_inner();
    // While `clients` restarts, the connection waits (a few seconds, before the `101`) for
    // its new instance: the stopping one is never handed out.
    let clients = match gateway.lookup_patiently::<SupervisorActor>("clients").await {
        Ok(clients) => clients,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("the clients supervisor is restarting; retry ({e})"),
            )
            .retry_after(1)
            .into());
        }
    };
    // The session reads the socket itself once the upgrade service hands it over (see
    // `gateway::ws::upgrade`); actix-ws only encodes what the session sends.
    let (pending, inbound) = crate::gateway::ws::transport::inbound(gateway.edge.max_payload);
    let (mut response, session, _unused) = actix_ws::handle(&req, body)?;
    response.extensions_mut().insert(pending);
    WsSessionActor::start(
        (*gateway).clone(),
        clients,
        session,
        inbound,
        req.peer_addr(),
    );
    Ok(response)
}

#[utoipa::path(get, path = "/", tag = "ui", security(()), responses((status = 200, description = "The control UI (or a WebSocket upgrade, as /ws)", body = String, content_type = "text/html")))]
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
    Ok(ui::index(&req))
}
