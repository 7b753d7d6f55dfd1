//! `GET /api/usage/daily?days=` (tokens and cost per day and agent) and
//! `GET /api/usage/pricing` (the price table cost is computed with, and the config key
//! that sets it).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use troupe_actors::store::UsageDaily;
use troupe_actors::store::turns::DailyUsage;
use utoipa::{IntoParams, ToSchema};

use super::operator::OperatorContext;
use super::{ApiError, authorize};
use crate::gateway::Gateway;
use crate::gateway::turns;

/// `GET /api/usage/daily` query.
#[derive(Deserialize, IntoParams)]
pub struct DailyQuery {
    /// Days back from now (default 30, 1 to 3650).
    pub days: Option<u32>,
}

/// One agent's usage on one day.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyRow {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Agent id.
    pub agent_id: String,
    /// Finished runs.
    pub runs: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost in USD (0 for unpriced models).
    pub cost_usd: f64,
}

impl From<DailyUsage> for DailyRow {
    fn from(d: DailyUsage) -> Self {
        Self {
            day: d.day,
            agent_id: d.agent_id,
            runs: d.runs,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
            cost_usd: d.cost_usd,
        }
    }
}

/// What `GET /api/usage/daily` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyUsageReport {
    /// Start of the window, ms since the epoch.
    pub since_ms: i64,
    /// One row per day and agent with runs, oldest day first.
    pub days: Vec<DailyRow>,
}

/// One model's price.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Model name, as agents name it.
    pub model: String,
    /// USD per million prompt tokens.
    pub input_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_per_mtok: f64,
}

/// What `GET /api/usage/pricing` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricingTable {
    /// The prices in force (models not listed cost 0).
    pub prices: Vec<Price>,
    /// The config key that sets them: `[[pricing]]` tables of `model`, `input_per_mtok`,
    /// `output_per_mtok`.
    pub config_key: String,
    /// Whether a price change applies to new runs only (costs are stored per run).
    pub applies_to_new_runs_only: bool,
}

/// `GET /api/usage/daily?days=N`: tokens and cost per day and agent.
#[utoipa::path(get, path = "/api/usage/daily", tag = "usage", params(DailyQuery),
    responses((status = 200, description = "Per day and agent", body = DailyUsageReport)))]
pub async fn daily(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    q: web::Query<DailyQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let since_ms = turns::usage_since(q.days);
    let rows = turns::read(&gateway, UsageDaily { since_ms }).await?;
    Ok(HttpResponse::Ok().json(DailyUsageReport {
        since_ms,
        days: rows.into_iter().map(DailyRow::from).collect(),
    }))
}

/// `GET /api/usage/pricing`: the price table.
#[utoipa::path(get, path = "/api/usage/pricing", tag = "usage",
    responses((status = 200, description = "The prices in force", body = PricingTable)))]
pub async fn pricing(
    req: HttpRequest,
    gateway: web::Data<Gateway>,
    ops: web::Data<OperatorContext>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &gateway)?;
    let (config, _) = ops.load().await?;
    let prices = config
        .pricing
        .into_iter()
        .map(|(model, input_per_mtok, output_per_mtok)| Price {
            model,
            input_per_mtok,
            output_per_mtok,
        })
        .collect();
    Ok(HttpResponse::Ok().json(PricingTable {
        prices,
        config_key: "pricing".into(),
        applies_to_new_runs_only: true,
    }))
}
