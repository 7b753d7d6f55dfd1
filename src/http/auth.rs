//! Authentication of HTTP requests on their headers alone, before any body is read
//! (DESIGN.md §11): `Authorization: Bearer <token>` (the scheme is case-insensitive; in
//! password mode the password is the bearer credential), compared in constant time.
//! Only a wrong credential counts against the address's allowance in the
//! [`AuthLimiter`](crate::gateway::auth_limit::AuthLimiter); a missing one is just refused,
//! and a correct one is always accepted.

use std::time::{Duration, Instant};

use crate::gateway::{AuthPolicy, Gateway};
use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use subtle::ConstantTimeEq;

use super::ApiError;

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer credential at all.
    Missing,
    /// A credential that is not the gateway's.
    Wrong,
    /// A wrong credential from an address that has used up its allowance.
    Limited(Duration),
}

/// Marks a request the edge middleware has already authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated;

/// The credential of an `Authorization: Bearer <credential>` header, any case of `Bearer`.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// Checks the request's credential against the gateway's, counting a wrong one.
pub fn check(req: &HttpRequest, gateway: &Gateway) -> Result<(), AuthFailure> {
    let expected = match &gateway.edge.auth {
        AuthPolicy::None => return Ok(()),
        AuthPolicy::Token(s) | AuthPolicy::Password(s) => &s.0,
    };
    let Some(given) = bearer(req) else {
        return Err(AuthFailure::Missing);
    };
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Ok(());
    }
    match req.peer_addr() {
        Some(peer) => gateway
            .edge
            .auth_limiter
            .wrong_credential(peer.ip(), Instant::now())
            .map_err(AuthFailure::Limited)
            .and(Err(AuthFailure::Wrong)),
        None => Err(AuthFailure::Wrong),
    }
}

/// Authorizes a request in a handler: passes one the edge middleware already
/// authenticated (so a credential is never counted twice), else checks it.
pub(crate) fn authorize(req: &HttpRequest, gateway: &Gateway) -> Result<(), ApiError> {
    if req.extensions().get::<Authenticated>().is_some() {
        return Ok(());
    }
    check(req, gateway).map_err(ApiError::from)
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "missing credential: send Authorization: Bearer <token>",
            ),
            AuthFailure::Wrong => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "wrong bearer token (Authorization: Bearer <token>)",
            ),
            AuthFailure::Limited(retry) => too_many_failures(retry),
        }
    }
}

/// 429 + `Retry-After` for an address that sent too many wrong credentials.
pub(crate) fn too_many_failures(retry: Duration) -> ApiError {
    let secs = retry.as_secs().max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many wrong credentials from this address; retry in {secs} s"),
    )
    .retry_after(secs)
}
