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
