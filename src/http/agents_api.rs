//! REST for agents: `GET /api/agents` (as `agents.list`) and `GET /api/agent-info?agent=`
//! (persona summary, provider and model, tools, workspace dir, sessions count).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use troupe_actors::store::ListSessions;
use utoipa::{IntoParams, ToSchema};

use super::operator::{OperatorContext, invalid, not_found};
use super::{ApiError, authorize};
use crate::gateway::Gateway;
use crate::gateway::turns;

/// Characters of the persona shown in `personaSummary`.
const PERSONA_SUMMARY_CHARS: usize = 280;

/// `GET /api/agent-info` query.
#[derive(Deserialize, IntoParams)]
pub struct AgentInfoQuery {
    /// Agent id (default: the first configured agent).
    pub agent: Option<String>,
}

/// What `GET /api/agent-info` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// Agent id.
    pub id: String,
    /// `echo`, `openai` or `anthropic`.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// False for the built-in echo provider.
    pub real_model: bool,
    /// The start of the system prompt (`persona.md`, else the config's `persona`).
    pub persona_summary: Option<String>,
    /// Characters in the whole persona.
    pub persona_chars: usize,
    /// Enabled tools.
    pub tools: Vec<String>,
    /// Model calls per turn before giving up.
    pub max_iterations: u32,
    /// `agents/<id>/` in the state dir.
    pub workspace_dir: String,
    /// `agents/<id>/memory/` (the agent's vault).
    pub memory_dir: Option<String>,
    /// USD per million input and output tokens, when the model is priced.
    pub price_per_mtok: Option<[f64; 2]>,
    /// Sessions of this agent in the store.
    pub sessions: usize,
}

/// `GET /api/agents`: the configured agents, as `agents.list` answers.
#[utoipa::path(get, path = "/api/agents", tag = "agents",
    responses((status = 200, description = "The agents, `defaultId`, `mainKey`, `scope`", body = Object),
        (status = 401, description = "No or a wrong bearer token", body = crate::http::openapi::ErrorBody)))]
pub async fn list(req: HttpRequest, gateway: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    Ok(HttpResponse::Ok().json(turns::agents_list_json(&gateway)))
}

/// `GET /api/agent-info?agent=<id>`: one agent in detail.
#[utoipa::path(get, path = "/api/agent-info", tag = "agents", params(AgentInfoQuery),
    responses((status = 200, description = "The agent", body = AgentInfo),
        (status = 404, description = "No such agent", body = crate::http::openapi::ErrorBody)))]
pub async fn info(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
    q: web::Query<AgentInfoQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let ids = turns::agent_ids(&gateway);
    let id = match &q.agent {
        Some(id) if id.is_empty() => return Err(invalid("agent must not be empty")),
        Some(id) => id.clone(),
        None => ids.first().cloned().unwrap_or_else(|| "main".into()),
    };
    if !ids.contains(&id) {
        return Err(not_found(format!(
            "no agent {id:?}; configured: {}",
            ids.join(", ")
        )));
    }
    let (_, agents) = ops.load().await?;
    let Some(agent) = agents.into_iter().find(|a| a.summary.id == id) else {
        return Err(not_found(format!(
            "agent {id:?} is no longer in the config file"
        )));
    };
    let sessions = turns::read(&gateway, ListSessions { limit: 100_000 })
        .await?
        .iter()
        .filter(|s| s.agent_id == id)
        .count();
    let persona = agent.persona.unwrap_or_default();
    let summary: String = persona.trim().chars().take(PERSONA_SUMMARY_CHARS).collect();
    let info = AgentInfo {
        workspace_dir: ops
            .paths
            .home
            .join("agents")
            .join(&id)
            .display()
            .to_string(),
        memory_dir: agent.memory_dir.map(|d| d.display().to_string()),
        id,
        provider: agent.summary.provider,
        model: agent.summary.model,
        real_model: agent.summary.real_model,
        persona_summary: (!summary.is_empty()).then_some(summary),
        persona_chars: persona.chars().count(),
        tools: agent.tools,
        max_iterations: agent.max_iterations,
        price_per_mtok: agent.price.map(|(i, o)| [i, o]),
        sessions,
    };
    Ok(HttpResponse::Ok().json(info))
}
