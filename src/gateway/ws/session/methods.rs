//! The methods a connected client may call, the scope each needs, and their handlers.

use actix::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::WsSessionActor;
use crate::gateway::ws::protocol::{ErrorShape, RequestFrame, Scope};
use troupe_actors::messages::FaultMode;
use troupe_actors::supervisor::{ChildAction, ChildCommand, ChildId, CommandError, CommandOutcome};

/// Responses a connection may be owed at once (slow `agent.wait`s, runs in progress, ...).
pub const MAX_OWED: usize = 256;

/// Capabilities announced in `hello-ok` (`features.capabilities`), named as OpenClaw names
/// them: its CLI checks `published-model-catalog` before `models list`.
pub const CAPABILITIES: &[&str] = &["published-model-catalog"];

/// Events this gateway may send.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "shutdown",
    "agent",
    "chat",
    "cron",
    "heartbeat",
    "config",
    "supervisor",
    "presence",
    "health",
];

const METHODS: &[(&str, Scope)] = &[
    ("health", Scope::Read),
    ("system-presence", Scope::Read),
    ("status", Scope::Read),
    ("agents.list", Scope::Read),
    ("chat.history", Scope::Read),
    ("sessions.list", Scope::Read),
    ("agent.wait", Scope::Read),
    ("usage.status", Scope::Read),
    ("models.list", Scope::Read),
    ("logs.tail", Scope::Read),
    ("chat.send", Scope::Write),
    ("agent", Scope::Write),
    ("chat.abort", Scope::Write),
    ("sessions.reset", Scope::Write),
    ("sessions.delete", Scope::Write),
    ("supervisor.tree", Scope::Read),
    ("supervisor.ping", Scope::Read),
    ("supervisor.restart", Scope::Admin),
    ("supervisor.crash", Scope::Admin),
    ("channels.status", Scope::Read),
    ("send", Scope::Write),
    ("pairing.list", Scope::Admin),
    ("pairing.approve", Scope::Admin),
    ("cron.list", Scope::Read),
    ("cron.status", Scope::Read),
    ("cron.runs", Scope::Read),
    ("cron.add", Scope::Admin),
    ("cron.update", Scope::Admin),
    ("cron.remove", Scope::Admin),
    ("cron.run", Scope::Admin),
    ("config.get", Scope::Read),
    ("config.patch", Scope::Admin),
];

/// What `health` answers and `hello-ok.snapshot.health` holds: the health summary (see
/// [`troupe_actors::health::summary`]) with the uptime and version.
pub fn health_payload(gateway: &crate::gateway::Gateway) -> Value {
    let mut payload = troupe_actors::health::summary();
    payload["uptimeMs"] = json!(gateway.settings.uptime_ms());
    payload["version"] = json!(gateway.settings.version);
    payload
}

/// Method names announced in `hello-ok`.
pub fn names() -> Vec<&'static str> {
    METHODS.iter().map(|(name, _)| *name).collect()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TreeParams {
    #[serde(default)]
    clients: Option<String>,
}

/// `logs.tail` (OpenClaw's `LogsTailParamsSchema`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LogsTailParams {
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildParams {
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChannelsStatusParams {
    /// Check each account's token live.
    #[serde(default)]
    probe: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveParams {
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CrashParams {
    id: String,
    #[serde(default)]
    mode: FaultMode,
}

/// Decodes a method's params (absent or `null` is `{}`) into its typed form, or says
/// why not (`INVALID_PARAMS`).
pub fn parse<T: DeserializeOwned>(method: &str, params: Option<Value>) -> Result<T, ErrorShape> {
    let value = match params {
        None | Some(Value::Null) => json!({}),
        Some(v) => v,
    };
    serde_json::from_value(value).map_err(|err| {
        ErrorShape::invalid(format!("invalid params for {method}: {err}"))
            .with_detail("INVALID_PARAMS")
    })
}

/// Maps a routed command's failure to the protocol's error.
pub fn command_error(err: CommandError) -> ErrorShape {
    match err {
        CommandError::NotFound(_) => ErrorShape::invalid(err.to_string()).with_detail("NOT_FOUND"),
        CommandError::Unavailable(..) => ErrorShape::unavailable(err.to_string(), 100),
    }
}

impl WsSessionActor {
    pub(super) fn on_request(
        &mut self,
        frame: RequestFrame,
        scope: Scope,
        ctx: &mut Context<Self>,
    ) {
        let RequestFrame {
            id, method, params, ..
        } = frame;
        if !id.is_empty() {
            // One final answer per request (`agent`'s `accepted` is an interim one).
            self.owed += 1;
            if self.owed > MAX_OWED {
                let error = ErrorShape::unavailable(
                    format!(
                        "more than {MAX_OWED} requests are waiting for an answer on this connection"
                    ),
                    1000,
                )
                .with_detail("TOO_MANY_IN_FLIGHT");
                self.respond(id, Err(error), ctx);
                return;
            }
        }
        let Some(&(_, needed)) = METHODS.iter().find(|(name, _)| *name == method) else {
            let error = ErrorShape::invalid(format!("unknown method {method:?}"))
                .with_detail("UNKNOWN_METHOD");
            self.respond(id, Err(error), ctx);
            return;
        };
        if scope < needed {
            let error = ErrorShape::forbidden(
                "MISSING_SCOPE",
                format!("{method} needs scope {}", needed.name()),
            );
            self.respond(id, Err(error), ctx);
            return;
        }
        match method.as_str() {
            "health" => {
                let payload = health_payload(&self.gateway);
                self.respond(id, Ok(payload), ctx);
            }
            // OpenClaw's name: the presence list (the newest 200 and the total), also when
            // there are too many clients for `presence` events.
            "system-presence" => {
                let (presence, count) = troupe_actors::presence::listed();
                let payload = json!({ "presence": presence, "count": count });
                self.respond(id, Ok(payload), ctx);
            }
            "agents.list" => {
                let mut payload = crate::gateway::turns::agents_list_json(&self.gateway);
                // Each agent's MCP tools (`<server>__<tool>`), as its model is offered them.
                let ids: Vec<String> = self
                    .gateway
                    .settings
                    .agents
                    .list()
                    .iter()
                    .map(|a| a.id.clone())
                    .collect();
                let fut = async move { troupe_actors::mcp::tools_by_agent(&ids).await };
                ctx.spawn(fut.into_actor(self).map(move |tools, act, ctx| {
                    if let Some(list) = payload["agents"].as_array_mut() {
                        for (agent, (_, names)) in list.iter_mut().zip(tools) {
                            agent["mcpTools"] = json!(names);
                        }
                    }
                    act.respond(id, Ok(payload), ctx);
                }));
            }
            "logs.tail" => match parse::<LogsTailParams>(&method, params) {
                Ok(p) => self.logs_tail(id, p, ctx),
                Err(error) => self.respond(id, Err(error), ctx),
            },
            "status" | "supervisor.tree" => match parse::<TreeParams>(&method, params) {
                Ok(p) => {
                    let all = p.clients.as_deref() == Some("all");
                    let gateway = self.gateway.clone();
                    let fut = async move { gateway.status(all).await };
                    ctx.spawn(fut.into_actor(self).map(move |status, act, ctx| {
                        let payload = serde_json::to_value(status)
                            .map_err(|e| ErrorShape::invalid(e.to_string()));
                        act.respond(id, payload, ctx);
                    }));
                }
                Err(error) => self.respond(id, Err(error), ctx),
            },
            "supervisor.ping" => match parse::<ChildParams>(&method, params) {
                Ok(p) => self.route(id, p.id, ChildAction::Ping, ctx),
                Err(error) => self.respond(id, Err(error), ctx),
            },
            "supervisor.restart" => match parse::<ChildParams>(&method, params) {
                Ok(p) => self.route(id, p.id, ChildAction::Restart, ctx),
                Err(error) => self.respond(id, Err(error), ctx),
            },
            "supervisor.crash" => match parse::<CrashParams>(&method, params) {
                Ok(_) if !self.gateway.settings.fault_injection => {
                    let error = ErrorShape::forbidden(
                        "FAULT_INJECTION_DISABLED",
                        "fault injection is off; set debug.fault_injection = true",
                    );
                    self.respond(id, Err(error), ctx);
                }
                Ok(p) => self.route(id, p.id, ChildAction::Crash(p.mode), ctx),
                Err(error) => self.respond(id, Err(error), ctx),
            },
            "channels.status" | "pairing.list" | "pairing.approve" | "send" => {
                self.on_channel_method(id, &method, params, ctx)
            }
            m if m.starts_with("cron.") => self.on_cron_method(id, method, params, ctx),
            "config.get" | "config.patch" => {
                let work = crate::gateway::ws::config_methods::call(
                    &self.gateway.settings.reload,
                    &method,
                    params,
                );
                ctx.spawn(
                    work.into_actor(self)
                        .map(move |res, act, ctx| act.respond(id, res, ctx)),
                );
            }
            _ => self.on_chat_method(id, &method, params, ctx),
        }
    }

    fn logs_tail(&mut self, id: String, p: LogsTailParams, ctx: &mut Context<Self>) {
        let Some(file) = self.gateway.edge.log_file.clone() else {
            let error = ErrorShape::unavailable("this gateway does not log to a file", 0)
                .with_detail("NO_LOG_FILE");
            self.respond(id, Err(error), ctx);
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            troupe_actors::log_tail::tail(&file, p.cursor, p.limit, p.max_bytes)
                .map_err(|e| format!("cannot read the log {}: {e}", file.display()))
        });
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
            let result = match res {
                Ok(Ok(tail)) => {
                    serde_json::to_value(tail).map_err(|e| ErrorShape::invalid(e.to_string()))
                }
                Ok(Err(why)) => Err(ErrorShape::unavailable(why, 1000)),
                Err(e) => Err(ErrorShape::unavailable(
                    format!("the log reader failed: {e}"),
                    1000,
                )),
            };
            act.respond(id, result, ctx);
        }));
    }

    fn on_channel_method(
        &mut self,
        id: String,
        method: &str,
        params: Option<Value>,
        ctx: &mut Context<Self>,
    ) {
        use troupe_actors::channels::{self, pairing};
        let root = self.gateway.root.clone();
        let gateway = self.gateway.clone();
        let work: std::pin::Pin<Box<dyn Future<Output = Result<Value, ErrorShape>>>> = match method
        {
            "channels.status" => match parse::<ChannelsStatusParams>(method, params) {
                Ok(p) => {
                    Box::pin(async move { Ok(channels::status_with(&gateway, p.probe).await) })
                }
                Err(error) => Box::pin(async move { Err(error) }),
            },
            "send" => match parse::<channels::operator_send::SendParams>(method, params) {
                Ok(p) => Box::pin(async move {
                    use channels::operator_send::{SendError, send};
                    send(&gateway, p).await.map_err(|e| match e {
                        SendError::Invalid(why) => ErrorShape::invalid(why),
                        SendError::Unavailable(why) => ErrorShape::unavailable(why, 1000),
                        SendError::Store(failure) => {
                            ErrorShape::from(crate::gateway::turns::EdgeError::from(failure))
                        }
                    })
                }),
                Err(error) => Box::pin(async move { Err(error) }),
            },
            "pairing.list" => Box::pin(async move {
                let pending = pairing::list(&root)
                    .await
                    .map_err(|e| ErrorShape::unavailable(e.to_string(), 1000))?;
                Ok(json!({ "pending": pending }))
            }),
            _ => match parse::<ApproveParams>(method, params) {
                Ok(p) => Box::pin(async move {
                    match pairing::approve(&root, &p.code).await {
                        Ok(Some(approved)) => Ok(json!({ "approved": approved })),
                        Ok(None) => Err(ErrorShape::invalid(format!(
                            "no pending pairing request has code {:?} (unknown or expired)",
                            p.code
                        ))
                        .with_detail("UNKNOWN_CODE")),
                        Err(e) => Err(ErrorShape::unavailable(e.to_string(), 1000)),
                    }
                }),
                Err(error) => Box::pin(async move { Err(error) }),
            },
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            act.respond(id, result, ctx);
        }));
    }

    fn on_cron_method(
        &mut self,
        id: String,
        method: String,
        params: Option<Value>,
        ctx: &mut Context<Self>,
    ) {
        use troupe_actors::scheduler::api::{CronCallError, call};
        let root = self.gateway.root.clone();
        let work = async move { call(&root, &method, params.unwrap_or(Value::Null)).await };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            let result = result.map_err(|e| match e {
                CronCallError::Invalid(why) => ErrorShape::invalid(why).with_detail("INVALID_CRON"),
                CronCallError::NotFound(_) => {
                    ErrorShape::invalid(e.to_string()).with_detail("NOT_FOUND")
                }
                CronCallError::Unavailable(why) => ErrorShape::unavailable(why, 1000),
                CronCallError::Store(failure) => ErrorShape::unavailable(failure.to_string(), 1000),
            });
            act.respond(id, result, ctx);
        }));
    }

    fn route(
        &mut self,
        req_id: String,
        child: String,
        action: ChildAction,
        ctx: &mut Context<Self>,
    ) {
        let command = ChildCommand {
            id: ChildId::new(child.clone()),
            action,
        };
        let sent = self.gateway.root.send(command);
        ctx.spawn(sent.into_actor(self).map(move |reply, act, ctx| {
            let result = match reply {
                Ok(Ok(CommandOutcome::Pinged { rtt_us })) => {
                    Ok(json!({ "id": child, "rttUs": rtt_us }))
                }
                Ok(Ok(_)) => Ok(json!({ "id": child, "ok": true })),
                Ok(Err(err)) => Err(command_error(err)),
                Err(err) => Err(ErrorShape::unavailable(
                    format!("supervisor unreachable: {err}"),
                    100,
                )),
            };
            act.respond(req_id, result, ctx);
        }));
    }
}
