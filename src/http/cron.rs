//! REST for cron jobs, the same operations as WS `cron.*`: `GET /api/cron` (jobs),
//! `POST /api/cron {job}` (add), `GET|PATCH|DELETE /api/cron/{id}`, `POST
//! /api/cron/{id}/run` (now, recorded as manual), `GET /api/cron/{id}/runs?limit=N` (the
//! run ledger, newest first) and `GET /api/cron/status`.

use crate::gateway::Gateway;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use troupe_actors::scheduler::api::{CronCallError, call};

use super::{ApiError, authorize, json_body};

fn api_error(err: CronCallError) -> ApiError {
    match err {
        CronCallError::Invalid(why) => {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", why)
        }
        CronCallError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", err.to_string())
        }
        CronCallError::Unavailable(why) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", why)
        }
    }
}

async fn answer(
    req: &HttpRequest,
    gateway: &Gateway,
    method: &str,
    params: Value,
) -> Result<HttpResponse, ApiError> {
    authorize(req, gateway)?;
    let value = call(&gateway.root, method, params)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(value))
}

/// `GET /api/cron`.
pub async fn list(req: HttpRequest, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    answer(&req, &gateway, "cron.list", Value::Null).await
}

/// `GET /api/cron/status`.
pub async fn status(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    answer(&req, &gateway, "cron.status", Value::Null).await
}

/// `POST /api/cron {job}` (the job itself, or `{"job": {...}}`).
pub async fn add(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let body: Value = json_body(&req, &body)?;
    let job = match body {
        Value::Object(mut obj) if obj.len() == 1 && obj.contains_key("job") => {
            obj.remove("job").unwrap_or(Value::Null)
        }
        other => other,
    };
    answer(&req, &gateway, "cron.add", json!({ "job": job })).await
}

/// `GET /api/cron/{id}`.
pub async fn get(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let id = id.into_inner();
    let all = call(&gateway.root, "cron.list", Value::Null)
        .await
        .map_err(api_error)?;
    let found = all["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["id"] == json!(id)).cloned());
    match found {
        Some(job) => Ok(HttpResponse::Ok().json(job)),
        None => Err(api_error(CronCallError::NotFound(id))),
    }
}

/// `PATCH /api/cron/{id}` with the fields to change.
pub async fn update(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let patch: Value = json_body(&req, &body)?;
    let params = json!({ "id": id.into_inner(), "patch": patch });
    answer(&req, &gateway, "cron.update", params).await
}

/// `DELETE /api/cron/{id}`.
pub async fn remove(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    answer(
        &req,
        &gateway,
        "cron.remove",
        json!({ "id": id.into_inner() }),
    )
    .await
}

/// `POST /api/cron/{id}/run`.
pub async fn run(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    answer(&req, &gateway, "cron.run", json!({ "id": id.into_inner() })).await
}

/// `?limit=N` of `/api/cron/{id}/runs`.
#[derive(Deserialize)]
pub struct RunsQuery {
    /// Rows to return (default 50, at most 1000).
    pub limit: Option<i64>,
}

/// `GET /api/cron/{id}/runs?limit=N`.
pub async fn runs(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    id: web::Path<String>,
    q: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let params = json!({ "id": id.into_inner(), "limit": q.limit });
    answer(&req, &gateway, "cron.runs", params).await
}
