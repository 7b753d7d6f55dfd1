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
        CronCallError::Store(failure) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            failure.to_string(),
        ),
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
#[utoipa::path(get, path = "/api/cron", tag = "cron", responses((status = 200, description = "`{jobs}`", body = Object)))]
pub async fn list(req: HttpRequest, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    answer(&req, &gateway, "cron.list", Value::Null).await
}

/// `GET /api/cron/status`.
#[utoipa::path(get, path = "/api/cron/status", tag = "cron", responses((status = 200, description = "Scheduler status", body = Object)))]
pub async fn status(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    answer(&req, &gateway, "cron.status", Value::Null).await
}

/// `POST /api/cron {job}` (the job itself, or `{"job": {...}}`).
#[utoipa::path(post, path = "/api/cron", tag = "cron", request_body(content = Object, content_type = "application/json", description = "The job (docs/scheduler.md), or `{job}`"), responses((status = 200, description = "The job added", body = Object), (status = 400, description = "INVALID_CRON", body = crate::http::openapi::ErrorBody)))]
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
#[utoipa::path(get, path = "/api/cron/{id}", tag = "cron", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "The job", body = Object), (status = 404, description = "No such job", body = crate::http::openapi::ErrorBody)))]
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
        None => Err(api_error(CronCallError::NotFound(id.into()))),
    }
}

/// `PATCH /api/cron/{id}` with the fields to change.
#[utoipa::path(patch, path = "/api/cron/{id}", tag = "cron", params(("id" = String, Path, description = "Job id")), request_body(content = Object, content_type = "application/json", description = "The fields to change"), responses((status = 200, description = "The job", body = Object), (status = 404, description = "No such job", body = crate::http::openapi::ErrorBody)))]
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
#[utoipa::path(delete, path = "/api/cron/{id}", tag = "cron", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "Removed", body = Object), (status = 404, description = "No such job", body = crate::http::openapi::ErrorBody)))]
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
#[utoipa::path(post, path = "/api/cron/{id}/run", tag = "cron", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "Started", body = Object), (status = 404, description = "No such job", body = crate::http::openapi::ErrorBody)))]
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
#[utoipa::path(get, path = "/api/cron/{id}/runs", tag = "cron", params(("id" = String, Path, description = "Job id"), ("limit" = Option<i64>, Query, description = "Rows (default 50, at most 1000)")), responses((status = 200, description = "`{runs}`", body = Object), (status = 404, description = "No such job", body = crate::http::openapi::ErrorBody)))]
pub async fn runs(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    id: web::Path<String>,
    q: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let params = json!({ "id": id.into_inner(), "limit": q.limit });
    answer(&req, &gateway, "cron.runs", params).await
}
