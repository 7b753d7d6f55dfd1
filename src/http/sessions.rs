//! REST for sessions: `GET /api/sessions`, `GET /api/sessions/{key}/messages`,
//! `POST /api/sessions/{key}/messages` (the same operations as the WS methods).

use crate::gateway::Gateway;
use crate::gateway::ws::session::transcript_json;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use troupe_actors::messages::QueueMode;
use troupe_actors::session_key::{ResolvedKey, resolve};
use troupe_actors::session_queue::{QueueError, SessionQueueActor, SubmitTurn};
use troupe_actors::store::{History, ListSessions, StoreActor, StoreOp, UsageReport, turns};

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

fn unavailable(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        format!("{what} is restarting; retry"),
    )
}

async fn store(gateway: &Gateway) -> Result<actix::Addr<StoreActor>, ApiError> {
    gateway
        .lookup::<StoreActor>("store")
        .await
        .ok_or_else(|| unavailable("the store"))
}

async fn read<O: StoreOp>(gateway: &Gateway, op: O) -> Result<O::Output, ApiError>
where
    StoreActor: actix::Handler<O>,
{
    store(gateway)
        .await?
        .send(op)
        .await
        .map_err(|_| unavailable("the store"))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            )
        })
}

fn agent_ids(gateway: &Gateway) -> Vec<String> {
    gateway
        .settings
        .agents
        .iter()
        .map(|a| a.id.clone())
        .collect()
}

/// `GET /api/sessions`.
pub async fn list(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
    let sessions = read(&gateway, ListSessions { limit }).await?;
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions })))
}

/// `GET /api/sessions/{key}/messages`.
pub async fn messages(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
    q: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let key = resolve(&key, &agent_ids(&gateway))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e))?
        .key;
    let page = turns::HistoryPage::new(i64::from(q.limit.unwrap_or(100).clamp(1, 1000)), q.before);
    let k = key.clone();
    let transcript = read(
        &gateway,
        History {
            session_key: k,
            page,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(transcript_json(&key, transcript)))
}

/// Usage window query.
#[derive(Deserialize)]
pub struct UsageQuery {
    /// Days back from now (default 30).
    pub days: Option<u32>,
}

/// `GET /api/usage?days=N`: tokens and cost in all, per agent, per session, per day.
pub async fn usage(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let since = crate::gateway::ws::session::usage_since(q.days);
    let report = read(&gateway, UsageReport { since_ms: since }).await?;
    Ok(HttpResponse::Ok().json(json!({ "sinceMs": since, "usage": report })))
}

/// `POST /api/sessions/{key}/messages`: accepted (202) once stored; the reply runs async.
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
    } = resolve(&key, &agent_ids(&gateway))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e))?;
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
    let queue = gateway
        .lookup::<SessionQueueActor>("session-queue")
        .await
        .ok_or_else(|| unavailable("the session queue"))?;
    let submit = SubmitTurn {
        session_key: key,
        agent_id,
        text: body.message,
        idempotency_key: Some(idempotency_key),
        mode: body.queue_mode,
        subscriber: None,
        options: Default::default(),
    };
    match queue.send(submit).await.map_err(|_| unavailable("the session queue"))? {
        Ok(a) => Ok(HttpResponse::Accepted().json(json!({
            "runId": a.run_id, "status": "accepted", "runStatus": a.status, "acceptedAt": a.accepted_at,
            "queued": { "position": a.position }, "duplicate": a.duplicate,
        }))),
        Err(e @ (QueueError::LaneFull { retry_after_ms, .. } | QueueError::QueueFull { retry_after_ms, .. })) => Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", retry_after_ms.div_ceil(1000).to_string()))
            .json(json!({ "error": { "code": "UNAVAILABLE", "message": e.to_string(), "retryAfterMs": retry_after_ms } }))),
        Err(QueueError::Invalid(why)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", why)),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", e.to_string())),
    }
}
