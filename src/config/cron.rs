//! `[[cron.jobs]]` and agents' `heartbeat = { every, message, active_hours }` (DESIGN §9):
//! parsed from the merged config and validated; every error names its key
//! (`cron.jobs[0].schedule`) and a bad schedule says why, with examples of valid ones.

use std::collections::HashSet;

use serde::Deserialize;
use troupe_actors::scheduler::heartbeat::{HeartbeatSettings, parse_active_hours};
use troupe_actors::scheduler::schedule::{Schedule, Zone, parse_duration_ms};
use troupe_actors::store::cron::{CatchUp, CronJob, Deliver, Overlap};

/// The `[cron]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCron {
    #[serde(default)]
    jobs: Vec<RawCronJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCronJob {
    id: String,
    name: Option<String>,
    schedule: String,
    tz: Option<String>,
    agent: Option<String>,
    session_key: Option<String>,
    message: String,
    deliver: Option<Deliver>,
    overlap: Option<String>,
    catch_up: Option<String>,
    enabled: Option<bool>,
}

/// An agent's `heartbeat` table.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatDef {
    /// Interval (`30m`).
    pub every: String,
    /// The message of each heartbeat turn.
    pub message: String,
    /// `HH:MM-HH:MM`, host local time (default: always).
    #[serde(default)]
    pub active_hours: Option<String>,
}

/// Validates a heartbeat; errors are `(field, why)`.
pub fn heartbeat(
    agent_id: &str,
    def: &HeartbeatDef,
) -> Result<HeartbeatSettings, (String, String)> {
    let every_ms =
        parse_duration_ms(def.every.trim()).map_err(|why| ("heartbeat.every".to_string(), why))?;
    if def.message.trim().is_empty() {
        return Err(("heartbeat.message".into(), "must not be empty".into()));
    }
    let active_hours = match def.active_hours.as_deref() {
        None => None,
        Some(text) => Some(
            parse_active_hours(text).map_err(|why| ("heartbeat.active_hours".to_string(), why))?,
        ),
    };
    Ok(HeartbeatSettings {
        agent_id: agent_id.into(),
        every_ms,
        message: def.message.clone(),
        active_hours,
    })
}

/// Validates the config's jobs (`agents` are the config's, for the default), reporting each problem through `bad(key, why)`.
pub(super) fn jobs(
    raw: RawCron,
    agents: &[String],
    bad: &mut impl FnMut(&str, String),
) -> Vec<CronJob> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let default_agent = agents.first().cloned().unwrap_or_else(|| "main".into());
    for (i, j) in raw.jobs.into_iter().enumerate() {
        let key = |field: &str| format!("cron.jobs[{i}].{field}");
        let valid_id = !j.id.is_empty()
            && j.id.len() <= 64
            && j.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            bad(
                &key("id"),
                format!("{:?} must be 1-64 letters, digits, '-' or '_'", j.id),
            );
        } else if !seen.insert(j.id.clone()) {
            bad(&key("id"), format!("{:?} is configured twice", j.id));
        }
        if let Err(why) = Schedule::parse(&j.schedule) {
            bad(&key("schedule"), why);
        }
        if let Err(why) = Zone::parse(j.tz.as_deref()) {
            bad(&key("tz"), why);
        }
        // Whether the agent exists is checked once agents on disk are known too.
        let agent = j.agent.unwrap_or_else(|| default_agent.clone());
        if j.message.trim().is_empty() {
            bad(&key("message"), "must not be empty".into());
        }
        let overlap = match j.overlap.as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("queue") => Overlap::Queue,
            Some(other) => {
                bad(&key("overlap"), format!("{other:?} is not skip or queue"));
                Overlap::Skip
            }
        };
        let catch_up = match j.catch_up.as_deref() {
            None | Some("skip") => CatchUp::Skip,
            Some("run_once") => CatchUp::RunOnce,
            Some(other) => {
                bad(
                    &key("catch_up"),
                    format!("{other:?} is not skip or run_once"),
                );
                CatchUp::Skip
            }
        };
        out.push(CronJob {
            name: j.name.unwrap_or_else(|| j.id.clone()),
            id: j.id.into(),
            schedule: j.schedule,
            tz: j.tz,
            agent_id: agent.into(),
            session_key: j.session_key.map(Into::into),
            message: j.message,
            deliver: j.deliver,
            overlap,
            catch_up,
            enabled: j.enabled.unwrap_or(true),
        });
    }
    out
}
