//! `POST /api/restart`: answers 202, then the gateway stops as on SIGTERM (running turns
//! finish or are recovered at the next start) and comes back: re-executed in place with
//! the same arguments and its listening socket handed over (same pid, same port), or, under
//! a service manager (`TROUPE_SUPERVISED` or systemd's `INVOCATION_ID` set), exits 0 for
//! the manager to start it again.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::operator::OperatorContext;
use super::{ApiError, authorize};
use crate::gateway::Gateway;

/// What `POST /api/restart` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartAccepted {
    /// Always true.
    pub ok: bool,
    /// `reexec` (this process replaces itself) or `service-manager` (it exits 0).
    pub how: String,
    /// False when a restart was already under way.
    pub first: bool,
}

/// Whether a service manager restarts the gateway (then it only exits).
pub fn supervised(env: &std::collections::HashMap<String, String>) -> bool {
    env.get("TROUPE_SUPERVISED")
        .is_some_and(|v| !v.is_empty() && v != "0")
        || env.contains_key("INVOCATION_ID")
}

/// `POST /api/restart`: graceful stop, then re-exec (or exit for the service manager).
#[utoipa::path(post, path = "/api/restart", tag = "operator",
    responses((status = 202, description = "The restart begins after this answer", body = RestartAccepted),
        (status = 401, description = "No or a wrong bearer token", body = crate::http::openapi::ErrorBody)))]
pub async fn restart(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let first = ops.restart.ask();
    tracing::warn!(first, "restart requested over REST");
    let how = if supervised(&ops.env) {
        "service-manager"
    } else {
        "reexec"
    };
    Ok(HttpResponse::Accepted().json(RestartAccepted {
        ok: true,
        how: how.into(),
        first,
    }))
}
