//! The operator surface of the scheduler, shared by WS `cron.*`, REST `/api/cron` and the
//! CLI: [`call`] takes a method name and its JSON params and answers JSON or a
//! [`CronCallError`] saying what was wrong.

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JobState, SchedulerActor, now};
use crate::messages::CronJobId;
use crate::store::StoreFailure;
use crate::store::cron::{CronJob, DeleteCronJob, JobSource, ListCronRuns, SaveCronJob};
use crate::store::failure::ask;
use crate::supervisor::{SupervisorActor, lookup_patiently};

/// Ledger rows returned by `cron.runs` unless `limit` says otherwise (at most 1000).
const DEFAULT_RUNS: i64 = 50;

/// Why a cron call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CronCallError {
    /// Bad params, a bad schedule, a job from config changed through the API.
    #[error("{0}")]
    Invalid(String),
    /// No such job.
    #[error("no cron job has id {:?}", .0.as_str())]
    NotFound(CronJobId),
    /// The scheduler is not running (or still loading its jobs).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed the job's or the ledger's operation, or is restarting (which
    /// operation, and why).
    #[error(transparent)]
    Store(#[from] StoreFailure),
}

/// A job with what the scheduler knows of it.
fn view(state: &JobState) -> Value {
    let mut v = serde_json::to_value(&state.record.job).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("source".into(), json!(state.record.source));
        obj.insert("nextFireAt".into(), json!(state.next));
        obj.insert(
            "lastScheduledAt".into(),
            json!(state.record.last_scheduled_at),
        );
        obj.insert("active".into(), json!(state.active));
        obj.insert("sessionKey".into(), json!(state.record.job.session()));
    }
    v
}

/// A request to the scheduler actor.
#[derive(Message, Debug)]
#[rtype(result = "Result<Value, CronCallError>")]
pub enum CronCommand {
    /// Every job.
    List,
    /// Counts and the next fire.
    Status,
    /// Adds (or with `replace`, replaces) an API job.
    Save {
        /// The job.
        job: Box<CronJob>,
        /// Whether an existing job may be replaced.
        replace: bool,
    },
    /// Removes an API job.
    Remove {
        /// Job id.
        id: CronJobId,
    },
    /// Fires a job now (recorded as manual).
    Run {
        /// Job id.
        id: CronJobId,
    },
    /// A job's definition, for `cron.update`.
    Get {
        /// Job id.
        id: CronJobId,
    },
}

impl SchedulerActor {
    fn check(&self, job: &CronJob) -> Result<(), CronCallError> {
        let valid_id = !job.id.is_empty()
            && job.id.len() <= 64
            && job
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            return Err(CronCallError::Invalid(format!(
                "job id {:?} must be 1-64 letters, digits, '-' or '_'",
                job.id.as_str()
            )));
        }
        super::Schedule::parse(&job.schedule)
            .map_err(|why| CronCallError::Invalid(format!("schedule: {why}")))?;
        super::Zone::parse(job.tz.as_deref())
            .map_err(|why| CronCallError::Invalid(format!("tz: {why}")))?;
        if !self.settings.agents.contains(&job.agent_id) {
            return Err(CronCallError::Invalid(format!(
                "agentId: no agent {:?} is configured (configured: {})",
                job.agent_id.as_str(),
                self.settings.agents.join(", ")
            )));
        }
        if job.message.trim().is_empty() {
            return Err(CronCallError::Invalid("message is empty".into()));
        }
        Ok(())
    }

    fn api_owned(&self, id: &CronJobId) -> Result<(), CronCallError> {
        match self.jobs.get(id) {
            None => Err(CronCallError::NotFound(id.clone())),
            Some(s) if s.record.source == JobSource::Config => {
                Err(CronCallError::Invalid(format!(
                    "job {:?} is defined in the config file ([[cron.jobs]]); change it there",
                    id.as_str()
                )))
            }
            Some(_) => Ok(()),
        }
    }
}

impl Handler<CronCommand> for SchedulerActor {
    type Result = ResponseActFuture<Self, Result<Value, CronCallError>>;

    fn handle(&mut self, cmd: CronCommand, ctx: &mut Self::Context) -> Self::Result {
        let ready = |v| Box::pin(actix::fut::ready(v)) as Self::Result;
        if !self.loaded {
            return ready(Err(CronCallError::Unavailable(
                "the scheduler is still loading its jobs".into(),
            )));
        }
        match cmd {
            CronCommand::List => ready(Ok(
                json!({ "jobs": self.jobs.values().map(view).collect::<Vec<_>>() }),
            )),
            CronCommand::Get { id } => match self.jobs.get(&id) {
                Some(s) => ready(
                    serde_json::to_value(&s.record.job)
                        .map_err(|e| CronCallError::Invalid(e.to_string())),
                ),
                None => ready(Err(CronCallError::NotFound(id))),
            },
            CronCommand::Status => {
                let next = self.due.first().map(|(at, _)| *at);
                let heartbeats: Vec<Value> = self
                    .heartbeats
                    .iter()
                    .map(|h| json!({"agentId": h.settings.agent_id, "everyMs": h.settings.every_ms, "nextAt": h.next, "active": h.active}))
                    .collect();
                ready(Ok(json!({
                    "jobs": self.jobs.len(),
                    "enabled": self.jobs.values().filter(|s| s.record.job.enabled).count(),
                    "active": self.jobs.values().map(|s| s.active).sum::<usize>(),
                    "nextFireAt": next,
                    "heartbeats": heartbeats,
                    "wakes": self.stats.wakes,
                    "fires": self.stats.fires,
                    "storeBatches": self.stats.batches,
                })))
            }
            CronCommand::Run { id } => {
                if !self.jobs.contains_key(&id) {
                    return ready(Err(CronCallError::NotFound(id)));
                }
                let fire = super::batch::Fire {
                    job_id: id.clone(),
                    scheduled_at: now(),
                    manual: true,
                    note: Some("manual".into()),
                };
                self.fire_batch(vec![fire], Vec::new(), ctx);
                ready(Ok(json!({ "ok": true, "jobId": id })))
            }
            CronCommand::Save { job, replace } => {
                if let Err(e) = self.check(&job) {
                    return ready(Err(e));
                }
                match (self.jobs.contains_key(&job.id), replace) {
                    (true, false) => {
                        return ready(Err(CronCallError::Invalid(format!(
                            "a job with id {:?} exists already",
                            job.id.as_str()
                        ))));
                    }
                    (false, true) => return ready(Err(CronCallError::NotFound(job.id))),
                    (true, true) => {
                        if let Err(e) = self.api_owned(&job.id) {
                            return ready(Err(e));
                        }
                    }
                    (false, false) => {}
                }
                let root = self.root.clone();
                let save = async move { ask(&root, SaveCronJob { job: *job }).await };
                Box::pin(save.into_actor(self).map(|saved, act, ctx| {
                    let record = saved?;
                    let id = record.job.id.clone();
                    let active = act.jobs.get(&id).map(|s| s.active).unwrap_or(0);
                    let mut state = JobState::new(record).map_err(CronCallError::Invalid)?;
                    state.active = active;
                    let now = now();
                    let next =
                        state.next_after(now.max(state.record.last_scheduled_at.unwrap_or(0)));
                    act.plan(&id, None);
                    act.jobs.insert(id.clone(), state);
                    act.plan(&id, next);
                    act.arm(ctx);
                    let shown = act.jobs.get(&id).map(view).unwrap_or_default();
                    Ok(json!({ "job": shown }))
                }))
            }
            CronCommand::Remove { id } => {
                if let Err(e) = self.api_owned(&id) {
                    return ready(Err(e));
                }
                let root = self.root.clone();
                let key = id.clone();
                let delete = async move { ask(&root, DeleteCronJob { id: key }).await };
                Box::pin(delete.into_actor(self).map(move |deleted, act, ctx| {
                    deleted?;
                    act.plan(&id, None);
                    act.jobs.remove(&id);
                    act.arm(ctx);
                    Ok(json!({ "ok": true, "removed": id }))
                }))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddParams {
    job: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    id: CronJobId,
    patch: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    id: CronJobId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsParams {
    id: CronJobId,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn params<T: serde::de::DeserializeOwned>(method: &str, v: Value) -> Result<T, CronCallError> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v)
        .map_err(|e| CronCallError::Invalid(format!("invalid params for {method}: {e}")))
}

fn job_from(value: Value) -> Result<CronJob, CronCallError> {
    let mut job: CronJob = serde_json::from_value(value)
        .map_err(|e| CronCallError::Invalid(format!("invalid job: {e}")))?;
    if job.name.is_empty() {
        job.name = job.id.to_string();
    }
    Ok(job)
}

/// The `cron.*` methods: `list`, `status`, `add {job}`, `update {id, patch}`,
/// `remove {id}`, `run {id}`, `runs {id, limit?}`.
pub async fn call(
    root: &Addr<SupervisorActor>,
    method: &str,
    p: Value,
) -> Result<Value, CronCallError> {
    let command = match method {
        "cron.list" => {
            params::<NoParams>(method, p)?;
            CronCommand::List
        }
        "cron.status" => {
            params::<NoParams>(method, p)?;
            CronCommand::Status
        }
        "cron.add" => CronCommand::Save {
            job: Box::new(job_from(params::<AddParams>(method, p)?.job)?),
            replace: false,
        },
        "cron.update" => {
            let UpdateParams { id, patch } = params(method, p)?;
            let Value::Object(patch) = patch else {
                return Err(CronCallError::Invalid("patch must be an object".into()));
            };
            if patch.get("id").is_some_and(|v| v != &json!(id)) {
                return Err(CronCallError::Invalid(
                    "patch cannot change a job's id".into(),
                ));
            }
            let mut current = send(root, CronCommand::Get { id }).await?;
            if let Some(obj) = current.as_object_mut() {
                for (k, v) in patch {
                    obj.insert(k, v);
                }
            }
            CronCommand::Save {
                job: Box::new(job_from(current)?),
                replace: true,
            }
        }
        "cron.remove" => CronCommand::Remove {
            id: params::<IdParams>(method, p)?.id,
        },
        "cron.run" => CronCommand::Run {
            id: params::<IdParams>(method, p)?.id,
        },
        "cron.runs" => {
            let RunsParams { id, limit } = params(method, p)?;
            let limit = limit.unwrap_or(DEFAULT_RUNS).clamp(1, 1000);
            let runs = ask(
                root,
                ListCronRuns {
                    job_id: id.clone(),
                    limit,
                },
            )
            .await?;
            return Ok(json!({ "jobId": id, "runs": runs }));
        }
        other => return Err(CronCallError::Invalid(format!("unknown method {other:?}"))),
    };
    send(root, command).await
}

async fn send(root: &Addr<SupervisorActor>, cmd: CronCommand) -> Result<Value, CronCallError> {
    let scheduler = lookup_patiently::<SchedulerActor>(root, "scheduler")
        .await
        .map_err(|e| CronCallError::Unavailable(format!("the scheduler: {e}")))?;
    scheduler
        .send(cmd)
        .await
        .map_err(|e| CronCallError::Unavailable(format!("the scheduler did not answer: {e}")))?
}
