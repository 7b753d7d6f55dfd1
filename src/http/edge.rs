//! The edge middleware every request passes before routing and body extraction
//! (DESIGN.md §10-11), in this order:
//!
//! 1. a connection over `gateway.max_connections(_per_ip)` is answered 503 + `Retry-After`;
//! 2. a `Host` that does not name this gateway is answered 421, whatever the auth mode, and
//!    a WebSocket upgrade from a page whose `Origin` does not name it is answered 403;
//! 3. `/api/*` and `/v1/*` are authenticated on their headers (401 / 429), so a body is
//!    never read for an unauthenticated request;
//! 4. a request body must arrive within `gateway.request_timeout_ms` (else 408);
//! 5. `HEAD` is served as `GET` without the body;
//! 6. every error leaves with a JSON body: `{error: {code, message}}`, or OpenAI's shape
//!    under `/v1/`.

use std::time::Duration;

use crate::gateway::Gateway;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};

use super::auth::{self, Authenticated};
use super::body_deadline::{self, DeadlinePayload};
use super::connections::AcceptedConnection;
use super::host::{names_gateway, origin_allowed, split_host};
use super::{ApiError, openai};

/// The edge settings from `[gateway]`.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    /// Extra host names that name this gateway (lower case, IPv6 without brackets).
    pub allowed_hosts: Vec<String>,
    /// Time allowed for a request body.
    pub request_timeout: Duration,
}

/// The middleware; install with `actix_web::middleware::from_fn(edge::guard)`.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let openai = req.match_info().as_str().starts_with("/v1/");
    if let Err(refusal) = admit(&mut req) {
        // An unread body must not be parsed as the next request: close after answering.
        let refusal = if has_body(&req) {
            refusal.close_connection()
        } else {
            refusal
        };
        let res = if openai {
            openai::error_response(&refusal)
        } else {
            refusal.error_response()
        };
        return Ok(req.into_response(res));
    }
    let res = next.call(req).await?;
    Ok(json_errors(res, openai))
}

/// Steps 1-5; an `Err` is the answer.
fn admit(req: &mut ServiceRequest) -> Result<(), ApiError> {
    let Some(policy) = req.app_data::<web::Data<EdgePolicy>>().cloned() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the edge policy is not installed",
        ));
    };
    let local = match req.conn_data::<AcceptedConnection>() {
        Some(conn) => {
            if let Err(why) = &conn.admission {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    why.clone(),
                )
                .retry_after(1)
                .close_connection());
            }
            conn.local
        }
        None => None,
    };
    check_host(req, local, &policy)?;
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        check_origin(req, local, &policy)?;
    }
    // The path as the router sees it (percent-decoded), so `/%61pi/...` is `/api/...`.
    let path = req.match_info().as_str().to_string();
    // The WebSocket's payload is its frame stream: no body deadline (it has its own
    // handshake timeout), and its credential comes in the `connect` request.
    if upgrade && (path == "/" || path == "/ws") {
        return Ok(());
    }
    // The OpenAPI document describes the API and holds no data: served without a credential.
    let public = path == "/api/openapi.json";
    if (path.starts_with("/api/") || path.starts_with("/v1/")) && !public {
        let Some(gateway) = req.app_data::<web::Data<Gateway>>() else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the gateway is not installed",
            ));
        };
        auth::check(req.request(), gateway)?;
        req.extensions_mut().insert(Authenticated);
    }
    if has_body(req) {
        let body = req.take_payload();
        let limited = DeadlinePayload::new(body, policy.request_timeout);
        let stream: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = Result<web::Bytes, PayloadError>>>,
        > = Box::pin(limited);
        req.set_payload(Payload::from(stream));
    }
    if req.method() == Method::HEAD {
        // actix-http omits the body of a response to HEAD (it remembers the request's
        // method), so every GET endpoint answers HEAD with GET's status and headers.
        req.head_mut().method = Method::GET;
    }
    Ok(())
}

fn check_host(
    req: &ServiceRequest,
    local: Option<std::net::SocketAddr>,
    policy: &EdgePolicy,
) -> Result<(), ApiError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "MISDIRECTED_REQUEST",
            "the request has no Host header; it must name this gateway",
        ));
    };
    let named = split_host(&host)
        .is_some_and(|(h, _)| names_gateway(&h, local.map(|l| l.ip()), &policy.allowed_hosts));
    if named {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "MISDIRECTED_REQUEST",
        format!(
            "Host {host:?} does not name this gateway (localhost, a loopback address, the bound address or gateway.allowed_hosts); refused as possible DNS rebinding"
        ),
    ))
}

fn check_origin(
    req: &ServiceRequest,
    local: Option<std::net::SocketAddr>,
    policy: &EdgePolicy,
) -> Result<(), ApiError> {
    // Browsers always send `Origin` on WebSocket upgrades; other clients rarely do.
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if origin_allowed(origin, local, &policy.allowed_hosts) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        format!(
            "cross-origin WebSocket from {origin:?} refused: a web page must be served by this gateway (or a name in gateway.allowed_hosts) to use it"
        ),
    ))
}

fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Gives an error response without a JSON body (actix's own extractor and payload errors,
/// 404, 405) one, keeping its status and headers; a body deadline becomes 408.
fn json_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
    openai: bool,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res.map_into_boxed_body();
    }
    let payload_error = res
        .response()
        .error()
        .and_then(|e| e.as_error::<PayloadError>());
    let (status, message) = match payload_error {
        Some(e) if body_deadline::is_deadline(e) => (StatusCode::REQUEST_TIMEOUT, e.to_string()),
        Some(PayloadError::Overflow) => (
            status,
            format!(
                "the request body is larger than the {} byte limit",
                super::BODY_LIMIT
            ),
        ),
        _ => (
            status,
            res.response()
                .error()
                .map(|e| e.to_string())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
        ),
    };
    let mut error = ApiError::new(status, code_for(status), message);
    if status == StatusCode::REQUEST_TIMEOUT || payload_error.is_some() {
        // The rest of the body may still be on its way: do not parse it as a request.
        error = error.close_connection();
    }
    let (req, old) = res.into_parts();
    let mut new = if openai {
        openai::error_response(&error)
    } else {
        error.error_response()
    };
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if !new.headers().contains_key(header::CONTENT_TYPE) {
        new.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    ServiceResponse::new(req, new)
}

/// The `error.code` for a status without a more specific one.
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_server_error() => "INTERNAL",
        _ => "INVALID_REQUEST",
    }
}
