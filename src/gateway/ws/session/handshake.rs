//! The `connect` handshake: protocol negotiation, authentication, scopes and `hello-ok`.

use actix::prelude::*;
use actix_ws::CloseCode;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Phase, WsSessionActor, methods};
use crate::gateway::AuthPolicy;
use crate::gateway::ws::protocol::{
    ConnectParams, ErrorShape, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RequestFrame, Scope,
};

/// The one role Troupe serves: an operator client (CLI, UI, automation).
const OPERATOR_ROLE: &str = "operator";

/// Refuses a `connect` that cannot be honoured: an inverted protocol range, or a role
/// other than `operator` (OpenClaw's `node` is a device node, which Troupe does not
/// implement). Each refusal is `INVALID_REQUEST` with a `details.code` and the reason.
fn check_connect(params: &ConnectParams) -> Result<(), ErrorShape> {
    if params.min_protocol > params.max_protocol {
        return Err(ErrorShape::invalid(format!(
            "minProtocol {} is greater than maxProtocol {}: no version satisfies both",
            params.min_protocol, params.max_protocol
        ))
        .with_detail("INVALID_PROTOCOL_RANGE"));
    }
    match params.role.as_deref() {
        None | Some(OPERATOR_ROLE) => Ok(()),
        Some("node") => Err(ErrorShape::invalid(
            "role \"node\" (an OpenClaw device node) is not supported by this gateway; connect with role \"operator\"",
        )
        .with_detail("UNSUPPORTED_ROLE")),
        Some(other) => Err(ErrorShape::invalid(format!(
            "unknown role {other:?}; this gateway accepts only \"operator\""
        ))
        .with_detail("UNSUPPORTED_ROLE")),
    }
}

fn same_secret(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

impl WsSessionActor {
    /// Answers a `connect` whose credential is missing or wrong, then closes. Only a wrong
    /// credential counts against the address (DESIGN.md §11); past the allowance it is
    /// answered `RATE_LIMITED` (retryable, with the time left) instead of `AUTH_FAILED`.
    fn refuse_credential(&mut self, id: String, wrong: bool, ctx: &mut Context<Self>) {
        tracing::warn!(conn_id = %self.conn_id, peer = ?self.peer, wrong, "ws auth failed");
        let limited = match (wrong, self.peer) {
            (true, Some(peer)) => self
                .gateway
                .edge
                .auth_limiter
                .wrong_credential(peer.ip(), std::time::Instant::now())
                .err(),
            _ => None,
        };
        let (error, reason) = match limited {
            Some(retry) => {
                let mut error = ErrorShape::forbidden(
                    "RATE_LIMITED",
                    format!(
                        "too many wrong credentials from this address; retry in {} s",
                        retry.as_secs().max(1)
                    ),
                );
                error.retryable = Some(true);
                error.retry_after_ms = Some(retry.as_millis() as u64);
                (error, "too many wrong credentials")
            }
            None if wrong => (
                ErrorShape::forbidden(
                    "AUTH_FAILED",
                    "unauthorized: gateway token or password mismatch",
                ),
                "unauthorized",
            ),
            None => (
                ErrorShape::forbidden(
                    "AUTH_FAILED",
                    "unauthorized: connect must carry auth.token (or auth.password in password mode)",
                ),
                "unauthorized",
            ),
        };
        self.respond(id, Err(error), ctx);
        self.close_after_flush(CloseCode::Policy, reason, ctx);
    }

    pub(super) fn on_connect(&mut self, frame: RequestFrame, ctx: &mut Context<Self>) {
        if frame.method != "connect" {
            let error = ErrorShape::invalid(format!(
                "first request must be \"connect\", got {:?}",
                frame.method
            ))
            .with_detail("HANDSHAKE_REQUIRED");
            self.respond(frame.id, Err(error), ctx);
            self.close_after_flush(CloseCode::Policy, "first request must be connect", ctx);
            return;
        }
        let params: ConnectParams = match serde_json::from_value(frame.params.unwrap_or_default()) {
            Ok(p) => p,
            Err(err) => {
                let error = ErrorShape::invalid(format!("invalid connect params: {err}"));
                self.respond(frame.id, Err(error), ctx);
                self.close_after_flush(CloseCode::Policy, "invalid connect params", ctx);
                return;
            }
        };
        if let Err(error) = check_connect(&params) {
            let reason = match error.details.as_ref().and_then(|d| d["code"].as_str()) {
                Some("UNSUPPORTED_ROLE") => "unsupported role",
                _ => "invalid protocol range",
            };
            self.respond(frame.id, Err(error), ctx);
            self.close_after_flush(CloseCode::Policy, reason, ctx);
            return;
        }
        if params.max_protocol < MIN_PROTOCOL_VERSION || params.min_protocol > PROTOCOL_VERSION {
            let error = ErrorShape::invalid(format!(
                "protocol {}..{} not supported; this gateway speaks {MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}",
                params.min_protocol, params.max_protocol
            ))
            .with_detail("PROTOCOL_MISMATCH");
            self.respond(frame.id, Err(error), ctx);
            self.close_after_flush(CloseCode::Policy, "protocol mismatch", ctx);
            return;
        }
        let auth = params.auth.unwrap_or_default();
        let given = match &self.gateway.edge.auth {
            AuthPolicy::None => None,
            AuthPolicy::Token(token) => Some((auth.token.as_deref(), &token.0)),
            AuthPolicy::Password(pw) => Some((auth.password.as_deref(), &pw.0)),
        };
        if let Some((given, expected)) = given
            && !same_secret(given, expected)
        {
            self.refuse_credential(frame.id, given.is_some_and(|g| !g.is_empty()), ctx);
            return;
        }
        let requested: Vec<Scope> = match params.scopes {
            Some(list) => list.iter().filter_map(|s| Scope::parse(s)).collect(),
            None => vec![Scope::Read, Scope::Write],
        };
        let scope = requested.into_iter().max().unwrap_or(Scope::Read);
        let protocol = params.max_protocol.min(PROTOCOL_VERSION);
        self.phase = Phase::Connected { scope };
        let granted: Vec<&str> = [Scope::Read, Scope::Write, Scope::Admin]
            .into_iter()
            .filter(|s| *s <= scope)
            .map(Scope::name)
            .collect();
        let client = params.client;
        let entry = troupe_actors::presence::PresenceEntry {
            conn_id: self.conn_id.clone(),
            host: client.display_name.or_else(|| client.id.clone()),
            client_id: client.id,
            instance_id: client.instance_id,
            ip: self.peer.map(|p| p.ip().to_string()),
            version: client.version,
            platform: client.platform,
            device_family: client.device_family,
            mode: client.mode,
            reason: "connect",
            roles: vec![OPERATOR_ROLE.to_string()],
            scopes: granted.iter().map(|s| s.to_string()).collect(),
            text: String::new(),
            ts: troupe_actors::now_ms(),
        };
        troupe_actors::presence::join(entry);
        self.present = Some(super::Present(self.conn_id.clone()));
        let settings = &self.gateway.settings;
        let agents = settings.agents.list();
        let default_agent = agents.first().map(|a| a.id.as_str()).unwrap_or("main");
        let hello = json!({
            "type": "hello-ok",
            "protocol": protocol,
            "server": { "version": settings.version, "connId": self.conn_id },
            "features": { "methods": methods::names(), "events": methods::EVENTS, "capabilities": methods::CAPABILITIES },
            "snapshot": {
                "presence": troupe_actors::presence::snapshot(),
                "health": methods::health_payload(&self.gateway),
                "stateVersion": troupe_actors::event_bus::state_version(),
                "uptimeMs": settings.uptime_ms(),
                "sessionDefaults": { "agentId": default_agent, "sessionKey": format!("agent:{default_agent}:main") },
            },
            "policy": {
                "maxPayload": self.gateway.edge.max_payload,
                "maxBufferedBytes": self.gateway.edge.max_buffered_bytes,
                "tickIntervalMs": self.gateway.edge.tick_interval.as_millis() as u64,
            },
            "auth": { "role": OPERATOR_ROLE, "scopes": granted },
        });
        tracing::debug!(conn_id = %self.conn_id, "ws handshake ok");
        self.respond(frame.id, Ok(hello), ctx);
        ctx.run_interval(self.gateway.edge.tick_interval, |act, ctx| {
            if matches!(act.phase, Phase::Connected { .. }) {
                act.event("tick", &json!({ "ts": troupe_actors::now_ms() }), ctx);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(min: u32, max: u32, role: Option<&str>) -> ConnectParams {
        serde_json::from_value(json!({
            "minProtocol": min, "maxProtocol": max, "role": role,
        }))
        .expect("connect params")
    }

    fn detail(result: Result<(), ErrorShape>) -> String {
        let error = result.expect_err("refused");
        assert_eq!(error.code, "INVALID_REQUEST");
        error.details.expect("details")["code"]
            .as_str()
            .expect("details.code")
            .to_string()
    }

    #[test]
    fn inverted_protocol_range_is_refused() {
        assert_eq!(
            detail(check_connect(&params(4, 3, None))),
            "INVALID_PROTOCOL_RANGE"
        );
        assert!(check_connect(&params(3, 4, None)).is_ok());
        assert!(check_connect(&params(4, 4, Some("operator"))).is_ok());
    }

    #[test]
    fn only_the_operator_role_is_accepted() {
        assert_eq!(
            detail(check_connect(&params(3, 4, Some("node")))),
            "UNSUPPORTED_ROLE"
        );
        assert_eq!(
            detail(check_connect(&params(3, 4, Some("root")))),
            "UNSUPPORTED_ROLE"
        );
    }
}
