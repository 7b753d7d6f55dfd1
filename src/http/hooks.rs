//! Webhooks (DESIGN §9): `POST /hooks/agent {message, agentId?, sessionKey?, wait?}`,
//! `POST /hooks/wake {agentId?}` and `POST /hooks/<name>` (a `[[hooks.mappings]]` entry).
//! Their own token (`hooks.token`: `Authorization: Bearer` or `x-troupe-token`, never a
//! query parameter); off until it is set. JSON bodies only, 256 KiB at most. The turn is
//! in the store before the 2xx (the session-queue acks a turn once stored), and a repeated
//! `Idempotency-Key` answers the same run.

use std::time::Duration;

use crate::gateway::Gateway;
use crate::gateway::turns;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use troupe_actors::messages::{AgentId, RunStatus};
use troupe_actors::scheduler::{SchedulerActor, WakeHeartbeat};
use troupe_actors::session_queue::SubmitTurn;

use super::{ApiError, json_body};
use crate::config::hooks::{HooksConfig, LiveHooks};

/// How long one `WaitRun` of a `wait: true` hook waits before asking again.
const WAIT_SLICE: Duration = Duration::from_secs(300);

fn refuse(status: StatusCode, code: &'static str, why: impl Into<String>) -> ApiError {
    ApiError::new(status, code, why)
}

/// Checks the hook token: off → 404, in the query → 400, missing/wrong → 401.
fn authorize(req: &HttpRequest, hooks: &HooksConfig, gateway: &Gateway) -> Result<(), ApiError> {
    let Some(expected) = &hooks.token else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "HOOKS_OFF",
            "webhooks are off: set hooks.token in the config to turn them on",
        ));
    };
    let in_query = req.query_string().split('&').any(|pair| {
        pair.split('=')
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("token"))
    });
    if in_query {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "TOKEN_IN_QUERY",
            "a token in the query string is refused (URLs end up in logs and proxies); send it as Authorization: Bearer <token> or x-troupe-token",
        ));
    }
    let given = super::auth::bearer(req).or_else(|| {
        req.headers()
            .get("x-troupe-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    });
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing hook token: send Authorization: Bearer <hooks.token> or x-troupe-token",
        ));
    };
    if bool::from(given.as_bytes().ct_eq(expected.0.as_bytes())) {
        return Ok(());
    }
    let limited = req.peer_addr().and_then(|peer| {
        gateway
            .edge
            .auth_limiter
            .wrong_credential(peer.ip(), std::time::Instant::now())
            .err()
    });
    if let Some(wait) = limited {
        return Err(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "too many wrong tokens; retry in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    Err(refuse(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "wrong hook token",
    ))
}

/// `POST /hooks/agent`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AgentHook {
    message: String,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    session_key: Option<String>,
    #[serde(default)]
    wait: bool,
}

/// Submits the turn (stored before this returns) and answers `{ok, runId}`, or with
/// `wait` the run's end.
async fn submit(
    req: &HttpRequest,
    gateway: &Gateway,
    agent_id: Option<String>,
    session_key: String,
    message: String,
    wait: bool,
) -> Result<HttpResponse, ApiError> {
    let agents = turns::agent_ids(gateway);
    let resolved = turns::resolve_key(gateway, &session_key)?;
    let agent = agent_id.unwrap_or(resolved.agent);
    if !agents.contains(&agent) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            format!("no agent {agent:?} is configured"),
        ));
    }
    if message.trim().is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "message is empty",
        ));
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("hook:{k}"))
        .unwrap_or_else(|| format!("hook:{}", uuid::Uuid::new_v4()));
    let submit = SubmitTurn {
        session_key: resolved.key.into(),
        agent_id: agent.into(),
        text: message,
        idempotency_key: Some(key),
        mode: Default::default(),
        subscriber: None,
        options: Default::default(),
    };
    let accepted = turns::submit(gateway, submit).await?;
    if !wait {
        return Ok(HttpResponse::Accepted().json(json!({
            "ok": true, "runId": accepted.run_id, "duplicate": accepted.duplicate,
        })));
    }
    loop {
        let waited = turns::wait_run(gateway, accepted.run_id.0.clone(), WAIT_SLICE).await;
        match waited {
            Ok(s) if s.status == RunStatus::Timeout => continue,
            Ok(s) => {
                return Ok(HttpResponse::Ok().json(json!({
                    "ok": s.status == RunStatus::Ok, "runId": s.run_id, "status": s.status,
                    "summary": s.summary, "error": s.error,
                })));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `POST /hooks/agent {message, agentId?, sessionKey?, wait?}`.
#[utoipa::path(post, path = "/hooks/agent", tag = "hooks", security(("hooks" = [])), request_body(content = crate::http::openapi::AgentHookBody, content_type = "application/json"), responses((status = 202, description = "`{ok, runId}` (200 with the run's end when `wait`)", body = Object), (status = 404, description = "Hooks are off", body = crate::http::openapi::ErrorBody)))]
pub async fn agent(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    hooks: web::Data<LiveHooks>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let hooks = hooks.current();
    authorize(&req, &hooks, &gateway)?;
    let hook: AgentHook = json_body(&req, &body)?;
    let agent = hook
        .agent_id
        .clone()
        .or_else(|| turns::agent_ids(&gateway).first().cloned())
        .unwrap_or_else(|| "main".into());
    let session = hook.session_key.unwrap_or_else(|| format!("hook:{agent}"));
    submit(
        &req,
        &gateway,
        hook.agent_id,
        session,
        hook.message,
        hook.wait,
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WakeHook {
    #[serde(default)]
    agent_id: Option<String>,
}

/// `POST /hooks/wake {agentId?}`: runs the agent's heartbeat now.
#[utoipa::path(post, path = "/hooks/wake", tag = "hooks", security(("hooks" = [])), request_body(content = crate::http::openapi::WakeHookBody, content_type = "application/json"), responses((status = 202, description = "The heartbeat started", body = Object), (status = 404, description = "Hooks are off", body = crate::http::openapi::ErrorBody)))]
pub async fn wake(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    hooks: web::Data<LiveHooks>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let hooks = hooks.current();
    authorize(&req, &hooks, &gateway)?;
    let hook: WakeHook = if body.is_empty() {
        WakeHook::default()
    } else {
        json_body(&req, &body)?
    };
    let scheduler = gateway
        .lookup::<SchedulerActor>("scheduler")
        .await
        .map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("the scheduler is not running: {e}"),
            )
        })?;
    let woken = scheduler
        .send(WakeHeartbeat {
            agent_id: hook.agent_id.map(AgentId::from),
        })
        .await
        .map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            )
        })?;
    Ok(HttpResponse::Accepted().json(json!({ "ok": true, "woken": woken })))
}

/// Fills `{{field}}` and `{{a.b}}` from a JSON body (strings as they are, other values as
/// JSON; a missing field becomes empty).
pub fn fill(template: &str, body: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let path = after[..end].trim();
        let value = path.split('.').try_fold(body, |v, k| v.get(k));
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `POST /hooks/<name>`: a mapped hook.
#[utoipa::path(post, path = "/hooks/{name}", tag = "hooks", security(("hooks" = [])), params(("name" = String, Path, description = "A `[[hooks.mappings]]` name")), request_body(content = Object, content_type = "application/json"), responses((status = 202, description = "The mapped turn was submitted", body = Object), (status = 404, description = "No such mapping", body = crate::http::openapi::ErrorBody)))]
pub async fn mapped(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    hooks: web::Data<LiveHooks>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let hooks = hooks.current();
    authorize(&req, &hooks, &gateway)?;
    let name = name.into_inner();
    let Some(mapping) = hooks.mappings.iter().find(|m| m.name == name) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no hook mapping is named {name:?} ([[hooks.mappings]])"),
        ));
    };
    let payload: Value = json_body(&req, &body)?;
    let message = fill(&mapping.message_template, &payload);
    let session = mapping
        .session_key
        .clone()
        .unwrap_or_else(|| format!("hook:{name}"));
    let wait = payload
        .get("wait")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    submit(
        &req,
        &gateway,
        mapping.agent.clone(),
        session,
        message,
        wait,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::fill;
    use serde_json::json;

    #[test]
    fn templates_are_filled_from_the_body() {
        let body = json!({"repo": {"name": "troupe"}, "n": 3, "who": "ana"});
        assert_eq!(
            fill(
                "{{who}} pushed {{n}} commits to {{ repo.name }}{{missing}}",
                &body
            ),
            "ana pushed 3 commits to troupe"
        );
        assert_eq!(fill("no {{end", &body), "no {{end");
    }
}
