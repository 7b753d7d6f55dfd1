//! REST for chat channels: `GET /api/channels` (the same report as WS `channels.status`),
//! `GET /api/pairing` and `POST /api/pairing/approve {"code": ...}`.

use crate::gateway::Gateway;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use troupe_actors::channels::{self, pairing};

use super::{ApiError, authorize, json_body};

/// `GET /api/channels`.
#[utoipa::path(get, path = "/api/channels", tag = "channels", responses((status = 200, description = "Each account and its state", body = Object)))]
pub async fn status(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    Ok(HttpResponse::Ok().json(channels::status(&gateway).await))
}

fn unavailable(err: channels::ChannelError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        err.to_string(),
    )
}

/// `GET /api/pairing`: pending pairing requests.
#[utoipa::path(get, path = "/api/pairing", tag = "channels", responses((status = 200, description = "`{pending}`", body = Object)))]
pub async fn list(req: HttpRequest, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let pending = pairing::list(&gateway.root).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "pending": pending })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    code: String,
}

/// `POST /api/pairing/approve {"code": "..."}`.
#[utoipa::path(post, path = "/api/pairing/approve", tag = "channels", request_body(content = crate::http::openapi::ApproveBody, content_type = "application/json"), responses((status = 200, description = "`{approved}`", body = Object), (status = 404, description = "UNKNOWN_CODE", body = crate::http::openapi::ErrorBody)))]
pub async fn approve(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: ApproveBody = json_body(&req, &body)?;
    match pairing::approve(&gateway.root, &body.code)
        .await
        .map_err(unavailable)?
    {
        Some(approved) => Ok(HttpResponse::Ok().json(json!({ "approved": approved }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_CODE",
            format!(
                "no pending pairing request has code {:?} (unknown or expired)",
                body.code
            ),
        )),
    }
}
