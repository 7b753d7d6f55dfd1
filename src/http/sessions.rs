//! REST for sessions: `GET /api/sessions`, `GET /api/sessions/{key}/messages`,
//! `POST /api/sessions/{key}/messages` (the same operations as the WS methods; a posted
//! message takes `attachments` as `chat.send` does).

use crate::gateway::Gateway;
use crate::gateway::turns::{self, EdgeError, transcript_json};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use troupe_actors::attachments::{AttachmentParam, AttachmentRef};
use troupe_actors::messages::{QueueMode, TurnOptions};
use troupe_actors::session_key::ResolvedKey;
use troupe_actors::session_queue::{QueueError, SubmitTurn};
use troupe_actors::store::turns::HistoryPage;
use troupe_actors::store::{History, ListSessions, UsageReport};

use super::{ApiError, authorize, json_body};

#[derive(Deserialize)]
/// Paging query parameters.
pub struct Page {
    /// Most entries to return.
    pub limit: Option<u32>,
    /// Only messages with a smaller id.
    pub before: Option<i64>,
}

/// Largest `POST /api/sessions/{key}/messages` body: room for inline (base64) attachments,
/// one at the 5 MiB cap included.
pub const MAX_POST_BYTES: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostMessage {
    message: String,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    queue_mode: QueueMode,
    #[serde(default)]
    attachments: Vec<AttachmentParam>,
}

/// The REST rendering of the edges' shared error.
impl From<EdgeError> for ApiError {
    fn from(err: EdgeError) -> Self {
        let status = match &err {
            EdgeError::BadSessionKey(_) | EdgeError::Queue(QueueError::Invalid(_)) => {
                return ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", err.to_string());
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, "UNAVAILABLE", err.to_string())
    }
}

/// `GET /api/sessions`.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(("limit" = Option<u32>, Query, description = "Most sessions (1 to 1000, default 100)")), responses((status = 200, description = "`{sessions}`", body = Object), (status = 401, description = "No or a wrong bearer token", body = crate::http::openapi::ErrorBody)))]
pub async fn list(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
    let sessions = turns::read(&gateway, ListSessions { limit }).await?;
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions })))
}

/// `GET /api/sessions/{key}/messages`.
#[utoipa::path(get, path = "/api/sessions/{key}/messages", tag = "sessions", params(("key" = String, Path, description = "Session key"), ("limit" = Option<u32>, Query, description = "Most messages (1 to 1000)"), ("before" = Option<i64>, Query, description = "Only messages with a smaller id")), responses((status = 200, description = "`{sessionKey, messages, hasMore, nextBefore}`", body = Object), (status = 400, description = "Invalid session key", body = crate::http::openapi::ErrorBody)))]
pub async fn messages(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
    q: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let key = turns::resolve_key(&gateway, &key)?.key;
    let page = HistoryPage::new(i64::from(q.limit.unwrap_or(100).clamp(1, 1000)), q.before);
    let history = History {
        session_key: key.as_str().into(),
        page,
    };
    let transcript = turns::read(&gateway, history).await?;
    Ok(HttpResponse::Ok().json(transcript_json(&key, transcript)))
}

/// Usage window query.
#[derive(Deserialize)]
pub struct UsageQuery {
    /// Days back from now (default 30).
    pub days: Option<u32>,
}

/// `GET /api/usage?days=N`: tokens and cost in all, per agent, per session, per day.
#[utoipa::path(get, path = "/api/usage", tag = "usage", params(("days" = Option<u32>, Query, description = "Days back (default 30)")), responses((status = 200, description = "`{sinceMs, usage: {total, byAgent, bySession, byDay}}`", body = Object)))]
pub async fn usage(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let since = turns::usage_since(q.days);
    let report = turns::read(&gateway, UsageReport { since_ms: since }).await?;
    Ok(HttpResponse::Ok().json(json!({ "sinceMs": since, "usage": report })))
}

/// The body, read after authentication, up to [`MAX_POST_BYTES`].
async fn read_body(payload: web::Payload) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(MAX_POST_BYTES).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "the request body is larger than {MAX_POST_BYTES} bytes; upload large files with POST /api/upload and attach them by `path`"
            ),
        )
        .close_connection()),
    }
}

/// The message's `attachments` checked and stored under `<state dir>/uploads` (as WS
/// `chat.send` does; file work on the blocking pool).
pub(super) async fn prepare_attachments(
    gateway: &Gateway,
    list: Vec<AttachmentParam>,
) -> Result<Vec<AttachmentRef>, String> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let state_dir = gateway.edge.state_dir.clone();
    web::block(move || troupe_actors::attachments::prepare(&list, &state_dir))
        .await
        .map_err(|e| format!("cannot store the attachments: {e}"))?
}

/// `POST /api/sessions/{key}/messages`: accepted (202) once stored; the reply runs async.
#[utoipa::path(post, path = "/api/sessions/{key}/messages", tag = "sessions", params(("key" = String, Path, description = "Session key"), ("Idempotency-Key" = Option<String>, Header, description = "Unless `idempotencyKey` is in the body")), request_body(content = crate::http::openapi::PostMessageBody, content_type = "application/json"), responses((status = 202, description = "Accepted: `{runId, status, ...}`", body = Object), (status = 400, description = "Invalid request", body = crate::http::openapi::ErrorBody), (status = 503, description = "Queue full (Retry-After)", body = crate::http::openapi::ErrorBody)))]
pub async fn post(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let ResolvedKey {
        key,
        agent: agent_id,
    } = turns::resolve_key(&gateway, &key)?;
    let body = read_body(payload).await?;
    let body: PostMessage = json_body(&req, &body)?;
    let header = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(idempotency_key) = body.idempotency_key.or(header) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "idempotencyKey (body) or Idempotency-Key (header) is required",
        ));
    };
    let attachments = prepare_attachments(&gateway, body.attachments)
        .await
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", why))?;
    let submit = SubmitTurn {
        session_key: key.into(),
        agent_id: agent_id.into(),
        text: body.message,
        idempotency_key: Some(idempotency_key),
        mode: body.queue_mode,
        subscriber: None,
        options: TurnOptions {
            attachments,
            ..TurnOptions::default()
        },
    };
    match turns::submit(&gateway, submit).await {
        Ok(a) => Ok(HttpResponse::Accepted().json(turns::accepted_payload(&a))),
        Err(EdgeError::Queue(
            e @ (QueueError::LaneFull { retry_after_ms, .. }
            | QueueError::QueueFull { retry_after_ms, .. }),
        )) => Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", retry_after_ms.div_ceil(1000).to_string()))
            .json(json!({ "error": { "code": "UNAVAILABLE", "message": e.to_string(), "retryAfterMs": retry_after_ms } }))),
        Err(e) => Err(e.into()),
    }
}
