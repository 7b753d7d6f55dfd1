//! The store's cron records: job definitions (from the API or from config) with the
//! scheduled time of the last fire each handled, and the run ledger (every fire, skip,
//! miss and outcome). Types, the [`CronStore`] backend trait, and the typed operations the
//! scheduler sends (SQL in `sqlite/cron.rs`).

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::ops::store_op;
use crate::messages::{AgentId, CronJobId, RunId, SessionKey};

/// Where a job's reply is sent besides its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deliver {
    /// Channel (`telegram`, ...).
    pub channel: String,
    /// Account name.
    #[serde(default)]
    pub account: Option<String>,
    /// Chat id on the platform.
    pub to: String,
}

/// What a fire does while the job's previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Recorded as skipped.
    #[default]
    Skip,
    /// Queued behind it in the job's session.
    Queue,
}

/// What happens to fires missed while the gateway was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Recorded as missed.
    #[default]
    Skip,
    /// Run once at start (the others recorded as missed).
    RunOnce,
}

/// A job as the operator defines it (DESIGN §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    /// Unique id.
    pub id: CronJobId,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: String,
    /// The schedule (cron expression, shorthand, `every ...` or `at ...`).
    pub schedule: String,
    /// IANA zone of local times (default: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// The agent that runs it.
    pub agent_id: AgentId,
    /// Session of its turns (default `cron:<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
    /// The message sent to the agent.
    pub message: String,
    /// Where the reply is sent, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<Deliver>,
    /// Overlap policy.
    #[serde(default)]
    pub overlap: Overlap,
    /// Catch-up policy.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Whether it fires.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

impl CronJob {
    /// The session its turns run in.
    pub fn session(&self) -> SessionKey {
        self.session_key
            .clone()
            .unwrap_or_else(|| SessionKey(format!("cron:{}", self.id)))
    }
}

/// Where a stored job was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobSource {
    /// Made through the API (`cron.add`); changed and removed there.
    Store,
    /// A `[[cron.jobs]]` entry of the config file; changed there only.
    Config,
}

impl JobSource {
    /// Its name in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::Store => "store",
            JobSource::Config => "config",
        }
    }

    /// The source a stored name names; `None` for a name no version of Troupe writes.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "store" => Some(JobSource::Store),
            "config" => Some(JobSource::Config),
            _ => None,
        }
    }
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct CronJobRecord {
    /// The definition.
    pub job: CronJob,
    /// `store` (API) or `config`.
    pub source: JobSource,
    /// First stored (ms; anchors `every` schedules).
    pub created_at: i64,
    /// Scheduled time of the last fire handled (fired, skipped or missed).
    pub last_scheduled_at: Option<i64>,
}

/// How a ledger row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Fired, run in progress.
    Running,
    /// The run finished well.
    Ok,
    /// The run failed.
    Error,
    /// Not run (overlap, disabled agent, ...).
    Skipped,
    /// Due while the gateway was down.
    Missed,
}

impl Outcome {
    /// Its name in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
            Outcome::Missed => "missed",
        }
    }

    /// The outcome a stored name names; `None` for a name no version of Troupe writes.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "running" => Outcome::Running,
            "ok" => Outcome::Ok,
            "error" => Outcome::Error,
            "skipped" => Outcome::Skipped,
            "missed" => Outcome::Missed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ledger row to write.
#[derive(Debug, Clone)]
pub struct NewCronRun {
    /// The job.
    pub job_id: CronJobId,
    /// When it was due (ms).
    pub scheduled_at: i64,
    /// When it fired (ms), if it did.
    pub fired_at: Option<i64>,
    /// Outcome so far.
    pub outcome: Outcome,
    /// Why (skips, misses, errors).
    pub reason: Option<String>,
    /// Started by `cron.run`.
    pub manual: bool,
}

/// A ledger row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CronRunRecord {
    /// Ledger id (increasing).
    pub id: i64,
    /// The job.
    pub job_id: CronJobId,
    /// The turn's run id, once submitted.
    pub run_id: Option<RunId>,
    /// When it was due (ms).
    pub scheduled_at: i64,
    /// When it fired (ms).
    pub fired_at: Option<i64>,
    /// ok | error | skipped | missed | running.
    pub outcome: Outcome,
    /// Why.
    pub reason: Option<String>,
    /// Started by `cron.run`.
    pub manual: bool,
    /// How long the run took.
    pub duration_ms: Option<i64>,
}

/// How a fired ledger row ended (see [`FinishCronRuns`]).
#[derive(Debug, Clone)]
pub struct CronRunEnd {
    /// Ledger id.
    pub id: i64,
    /// The turn's run id, if it was submitted.
    pub run_id: Option<RunId>,
    /// Outcome.
    pub outcome: Outcome,
    /// Why.
    pub reason: Option<String>,
    /// How long the run took.
    pub duration_ms: Option<i64>,
}

/// A webhook turn a stop cut while it ran, to run again once.
#[derive(Debug, Clone)]
pub struct HookRerun {
    /// Session key.
    pub session_key: SessionKey,
    /// Agent.
    pub agent_id: AgentId,
    /// The message.
    pub input: String,
    /// The turn's idempotency key (`hook:...`).
    pub idempotency_key: String,
}

/// What a backend stores for the scheduler.
pub trait CronStore {
    /// Webhook turns (idempotency key `hook:...`) a stop interrupted while they ran and
    /// that have not been run again (`<key>:rerun`), oldest first.
    fn interrupted_hook_runs(&mut self) -> Result<Vec<HookRerun>, StoreError>;
    /// At start: stores the config's jobs (keeping each one's history), drops config jobs
    /// no longer configured, closes ledger rows a crash left running, and returns every job.
    fn sync_cron_jobs(&mut self, config: &[CronJob]) -> Result<Vec<CronJobRecord>, StoreError>;
    /// Adds or replaces a job made through the API.
    fn save_cron_job(&mut self, job: &CronJob) -> Result<CronJobRecord, StoreError>;
    /// Deletes a job (its ledger is kept); false if there was none.
    fn delete_cron_job(&mut self, id: &CronJobId) -> Result<bool, StoreError>;
    /// Writes a ledger row and moves the job's last handled fire forward to its
    /// `scheduled_at` (unless manual), together. Returns the row's id.
    fn record_cron_run(&mut self, run: &NewCronRun) -> Result<i64, StoreError>;
    /// Writes the ledger rows of a batch of fires (each as [`CronStore::record_cron_run`])
    /// in one operation. Returns their ids, in order.
    fn record_cron_runs(&mut self, runs: &[NewCronRun]) -> Result<Vec<i64>, StoreError> {
        runs.iter().map(|run| self.record_cron_run(run)).collect()
    }
    /// Closes ledger rows with their outcomes in one operation; returns the rows closed.
    fn finish_cron_runs(&mut self, ends: &[CronRunEnd]) -> Result<Vec<CronRunRecord>, StoreError> {
        let mut out = Vec::with_capacity(ends.len());
        for end in ends {
            let row = self.finish_cron_run(
                end.id,
                end.run_id.as_ref(),
                end.outcome,
                end.reason.as_deref(),
                end.duration_ms,
            )?;
            out.extend(row);
        }
        Ok(out)
    }
    /// Closes a ledger row with its outcome.
    fn finish_cron_run(
        &mut self,
        id: i64,
        run_id: Option<&RunId>,
        outcome: Outcome,
        reason: Option<&str>,
        duration_ms: Option<i64>,
    ) -> Result<Option<CronRunRecord>, StoreError>;
    /// The newest ledger rows of a job, newest first.
    fn list_cron_runs(
        &mut self,
        job_id: &CronJobId,
        limit: i64,
    ) -> Result<Vec<CronRunRecord>, StoreError>;
}

store_op!(
    /// Stores the config's jobs and returns every job.
    SyncCronJobs { config: Vec<CronJob> } -> Vec<CronJobRecord>, "cron_sync", true,
    |op, store| store.sync_cron_jobs(&op.config)
);

store_op!(
    /// Adds or replaces an API job.
    SaveCronJob { job: CronJob } -> CronJobRecord, "cron_save", true,
    |op, store| store.save_cron_job(&op.job)
);

store_op!(
    /// Deletes a job.
    DeleteCronJob { id: CronJobId } -> bool, "cron_delete", true,
    |op, store| store.delete_cron_job(&op.id)
);

store_op!(
    /// Writes a ledger row (and advances the job's last handled fire).
    RecordCronRun { run: NewCronRun } -> i64, "cron_record", true,
    |op, store| store.record_cron_run(&op.run)
);

store_op!(
    /// Writes the ledger rows of a batch of fires at once (ids in order).
    RecordCronRuns { runs: Vec<NewCronRun> } -> Vec<i64>, "cron_record_batch", true,
    |op, store| store.record_cron_runs(&op.runs)
);

store_op!(
    /// Closes ledger rows at once; answers the rows closed.
    FinishCronRuns { ends: Vec<CronRunEnd> } -> Vec<CronRunRecord>, "cron_finish_batch", true,
    |op, store| store.finish_cron_runs(&op.ends)
);

store_op!(
    /// Closes a ledger row.
    FinishCronRun { id: i64, run_id: Option<RunId>, outcome: Outcome, reason: Option<String>, duration_ms: Option<i64> }
        -> Option<CronRunRecord>, "cron_finish", true,
    |op, store| store.finish_cron_run(op.id, op.run_id.as_ref(), op.outcome, op.reason.as_deref(), op.duration_ms)
);

store_op!(
    /// A job's newest ledger rows.
    ListCronRuns { job_id: CronJobId, limit: i64 } -> Vec<CronRunRecord>, "cron_runs", false,
    |op, store| store.list_cron_runs(&op.job_id, op.limit)
);

store_op!(
    /// Webhook turns cut by a stop, not yet run again.
    InterruptedHookRuns {} -> Vec<HookRerun>, "hook_interrupted", false,
    |_op, store| store.interrupted_hook_runs()
);
