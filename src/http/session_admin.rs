//! `POST /api/sessions/{key}/reset` and `DELETE /api/sessions/{key}`: the same operation as
//! `sessions.reset` / `sessions.delete` over WebSocket (through the session queue).

use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, authorize};
use crate::gateway::Gateway;
use crate::gateway::turns;

/// `POST /api/sessions/{key}/reset`: clears the transcript, keeps the session.
#[utoipa::path(post, path = "/api/sessions/{key}/reset", tag = "sessions",
    params(("key" = String, Path, description = "Session key (`main`, `agent:<id>:<rest>`)")),
    responses((status = 200, description = "`{sessionKey, ok, existed}`", body = crate::http::openapi::SessionResetBody),
        (status = 400, description = "Invalid session key", body = crate::http::openapi::ErrorBody)))]
pub async fn reset(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    clear(req, gateway, key, false).await
}

/// `DELETE /api/sessions/{key}`: deletes the session and its transcript.
#[utoipa::path(delete, path = "/api/sessions/{key}", tag = "sessions",
    params(("key" = String, Path, description = "Session key")),
    responses((status = 200, description = "`{sessionKey, ok, existed}`", body = crate::http::openapi::SessionResetBody),
        (status = 400, description = "Invalid session key", body = crate::http::openapi::ErrorBody)))]
pub async fn delete(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    clear(req, gateway, key, true).await
}

async fn clear(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    key: web::Path<String>,
    delete: bool,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let key = turns::resolve_key(&gateway, &key)?.key;
    let payload = turns::reset_session(&gateway, key, delete).await?;
    Ok(HttpResponse::Ok().json(payload))
}
