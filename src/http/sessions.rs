//! REST for sessions: `GET /api/sessions`, `GET /api/sessions/{key}/messages`,
//! `POST /api/sessions/{key}/messages` (the same operations as the WS methods).

use crate::gateway::Gateway;
use crate::gateway::turns::{self, EdgeError, transcript_json};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use troupe_actors::messages::QueueMode;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostMessage {
    message: String,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    queue_mode: QueueMode,
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

/// `POST /api/sessions/{key}/messages`: accepted (202) once stored; the reply runs async.
#[utoipa::path(post, path = "/api/sessions/{key}/messages", tag = "sessions", params(("key" = String, Path, description = "Session key"), ("Idempotency-Key" = Option<String>, Header, description = "Unless `idempotencyKey` is in the body")), request_body(content = crate::http::openapi::PostMessageBody, content_type = "application/json"), responses((status = 202, description = "Accepted: `{runId, status, ...}`", body = Object), (status = 400, description = "Invalid request", body = crate::http::openapi::ErrorBody), (status = 503, description = "Queue full (Retry-After)", body = crate::http::openapi::ErrorBody)))]
pub async fn post(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let ResolvedKey {
        key,
        agent: agent_id,
    } = turns::resolve_key(&gateway, &key)?;
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
    let submit = SubmitTurn {
        session_key: key.into(),
        agent_id: agent_id.into(),
        text: body.message,
        idempotency_key: Some(idempotency_key),
        mode: body.queue_mode,
        subscriber: None,
        options: Default::default(),
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
