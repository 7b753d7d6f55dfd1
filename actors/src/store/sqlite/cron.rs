//! The SQL of cron jobs and the run ledger (see [`crate::store::cron`]).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::messages::{CronJobId, RunId};
use crate::now_ms;
use crate::store::StoreError;
use crate::store::cron::{
    CronJob, CronJobRecord, CronRunRecord, CronStore, HookRerun, JobSource, NewCronRun, Outcome,
};

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// Reads a column holding the name of a `what`; a name no version of Troupe writes is an
/// error naming it (the row is not guessed at).
fn named<T>(value: ValueRef<'_>, what: &str, from_name: fn(&str) -> Option<T>) -> FromSqlResult<T> {
    let name = String::column_result(value)?;
    from_name(&name).ok_or_else(|| FromSqlError::Other(format!("unknown {what} {name:?}").into()))
}

impl FromSql for Outcome {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        named(value, "cron run outcome", Outcome::from_name)
    }
}

impl ToSql for JobSource {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JobSource {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        named(value, "cron job source", JobSource::from_name)
    }
}

/// Ledger rows kept per job (older ones are deleted as new ones are written).
pub const KEEP_RUNS_PER_JOB: i64 = 1000;

/// A job's ledger is trimmed back to [`KEEP_RUNS_PER_JOB`] once every this many rows
/// written (and at its first row after the store opens): trimming walks a thousand index
/// entries, too dear for every row at ten thousand fires a second. A job keeps at most
/// `KEEP_RUNS_PER_JOB + TRIM_EVERY - 1` rows.
pub const TRIM_EVERY: u32 = 64;

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(String, JobSource, i64, Option<i64>)> {
    Ok((
        row.get("spec")?,
        row.get("source")?,
        row.get("created_at")?,
        row.get("last_scheduled_at")?,
    ))
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<CronRunRecord> {
    Ok(CronRunRecord {
        id: row.get("id")?,
        job_id: row.get("job_id")?,
        run_id: row.get("run_id")?,
        scheduled_at: row.get("scheduled_at")?,
        fired_at: row.get("fired_at")?,
        outcome: row.get("outcome")?,
        reason: row.get("reason")?,
        manual: row.get::<_, i64>("manual")? != 0,
        duration_ms: row.get("duration_ms")?,
    })
}

fn spec_json(job: &CronJob) -> Result<String, StoreError> {
    serde_json::to_string(job).map_err(|e| StoreError::Migrate(format!("cron job {}: {e}", job.id)))
}

impl SqliteStore {
    fn upsert_job(
        &mut self,
        job: &CronJob,
        source: JobSource,
    ) -> Result<CronJobRecord, StoreError> {
        let spec = spec_json(job)?;
        self.conn.execute(
            "INSERT INTO cron_jobs (id, spec, source, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, source = excluded.source",
            params![job.id, spec, source, now_ms() as i64],
        )?;
        let (_, source, created_at, last) = self.conn.query_row(
            "SELECT spec, source, created_at, last_scheduled_at FROM cron_jobs WHERE id = ?1",
            [&job.id],
            job_from_row,
        )?;
        Ok(CronJobRecord {
            job: job.clone(),
            source,
            created_at,
            last_scheduled_at: last,
        })
    }
}

impl CronStore for SqliteStore {
    fn interrupted_hook_runs(&mut self) -> Result<Vec<HookRerun>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT session_key, agent_id, input, idempotency_key FROM runs r
             WHERE status = 'error' AND error LIKE 'interrupted:%'
               AND idempotency_key LIKE 'hook:%' AND idempotency_key NOT LIKE '%:rerun'
               AND NOT EXISTS (SELECT 1 FROM runs r2 WHERE r2.session_key = r.session_key
                               AND r2.idempotency_key = r.idempotency_key || ':rerun')
             ORDER BY seq LIMIT 1000",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HookRerun {
                    session_key: r.get(0)?,
                    agent_id: r.get(1)?,
                    input: r.get(2)?,
                    idempotency_key: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn sync_cron_jobs(&mut self, config: &[CronJob]) -> Result<Vec<CronJobRecord>, StoreError> {
        let ids: Vec<&str> = config.iter().map(|j| j.id.as_str()).collect();
        let listed = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "DELETE FROM cron_jobs WHERE source = 'config' AND id NOT IN (SELECT value FROM json_each(?1))",
            [listed],
        )?;
        for job in config {
            self.upsert_job(job, JobSource::Config)?;
        }
        self.conn.execute(
            "UPDATE cron_runs SET outcome = 'error', reason = 'interrupted: the gateway or the scheduler stopped during the run; its outcome was not recorded'
             WHERE outcome = 'running'",
            [],
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT spec, source, created_at, last_scheduled_at FROM cron_jobs ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], job_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for (spec, source, created_at, last) in rows {
            match serde_json::from_str::<CronJob>(&spec) {
                Ok(job) => out.push(CronJobRecord {
                    job,
                    source,
                    created_at,
                    last_scheduled_at: last,
                }),
                Err(e) => tracing::error!(error = %e, "a stored cron job cannot be read; ignored"),
            }
        }
        Ok(out)
    }

    fn save_cron_job(&mut self, job: &CronJob) -> Result<CronJobRecord, StoreError> {
        self.upsert_job(job, JobSource::Store)
    }

    fn delete_cron_job(&mut self, id: &CronJobId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM cron_jobs WHERE id = ?1", [id])?
            > 0)
    }

    fn record_cron_run(&mut self, run: &NewCronRun) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO cron_runs (job_id, scheduled_at, fired_at, outcome, reason, manual)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                run.job_id,
                run.scheduled_at,
                run.fired_at,
                run.outcome,
                run.reason,
                i64::from(run.manual)
            ])?;
        let id = self.conn.last_insert_rowid();
        // The ledger keeps the newest rows of each job.
        let untrimmed = self.cron_untrimmed.entry(run.job_id.clone()).or_insert(0);
        let trim = *untrimmed == 0;
        *untrimmed = (*untrimmed + 1) % TRIM_EVERY;
        if trim {
            self.conn
                .prepare_cached(
                    "DELETE FROM cron_runs WHERE job_id = ?1 AND id < (
                    SELECT id FROM cron_runs WHERE job_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )?
                .execute(params![run.job_id, KEEP_RUNS_PER_JOB - 1])?;
        }
        if !run.manual {
            self.conn.prepare_cached(
                "UPDATE cron_jobs SET last_scheduled_at = MAX(COALESCE(last_scheduled_at, 0), ?2)
                 WHERE id = ?1",
            )?
            .execute(params![run.job_id, run.scheduled_at])?;
        }
        Ok(id)
    }

    fn finish_cron_run(
        &mut self,
        id: i64,
        run_id: Option<&RunId>,
        outcome: Outcome,
        reason: Option<&str>,
        duration_ms: Option<i64>,
    ) -> Result<Option<CronRunRecord>, StoreError> {
        self.conn.prepare_cached(
            "UPDATE cron_runs SET run_id = COALESCE(?2, run_id), outcome = ?3, reason = ?4, duration_ms = ?5
             WHERE id = ?1",
        )?
        .execute(params![id, run_id, outcome, reason, duration_ms])?;
        Ok(self
            .conn
            .prepare_cached("SELECT * FROM cron_runs WHERE id = ?1")?
            .query_row([id], run_from_row)
            .optional()?)
    }

    fn list_cron_runs(
        &mut self,
        job_id: &CronJobId,
        limit: i64,
    ) -> Result<Vec<CronRunRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM cron_runs WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2")?;
        let rows = stmt
            .query_map(params![job_id, limit], run_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{AgentId, SessionKey};
    use crate::store::cron::{CatchUp, Overlap};

    fn store() -> (SqliteStore, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("troupe-cron-{}.db", uuid::Uuid::new_v4()));
        (SqliteStore::open(&path).expect("open store"), path)
    }

    fn cleanup(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// The typed records are written and read as the same text as the string ones were:
    /// the job's spec JSON, the ledger's outcome and run id, the row as clients get it.
    #[test]
    fn typed_records_keep_the_stored_and_wire_text() {
        let (mut db, path) = store();
        let job = CronJob {
            id: CronJobId::from("daily"),
            name: "daily".into(),
            schedule: "every 1s".into(),
            tz: None,
            agent_id: AgentId::from("main"),
            session_key: Some(SessionKey::from("agent:main:work")),
            message: "hi".into(),
            deliver: None,
            overlap: Overlap::Skip,
            catch_up: CatchUp::Skip,
            enabled: true,
        };
        let saved = db.save_cron_job(&job).expect("save");
        assert_eq!(saved.source, JobSource::Store);
        assert_eq!(serde_json::to_value(saved.source).expect("json"), "store");
        let (spec, source): (String, String) = db
            .conn
            .query_row(
                "SELECT spec, source FROM cron_jobs WHERE id = 'daily'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("spec");
        assert_eq!(source, "store");
        assert_eq!(
            spec,
            r#"{"id":"daily","name":"daily","schedule":"every 1s","agentId":"main","sessionKey":"agent:main:work","message":"hi","overlap":"skip","catchUp":"skip","enabled":true}"#
        );
        let synced = db.sync_cron_jobs(&[]).expect("sync");
        assert_eq!(synced[0].job, job);
        assert_eq!(job.session(), "agent:main:work");

        let row = db
            .record_cron_run(&NewCronRun {
                job_id: job.id.clone(),
                scheduled_at: 1_000,
                fired_at: Some(1_001),
                outcome: Outcome::Running,
                reason: None,
                manual: false,
            })
            .expect("record");
        let closed = db
            .finish_cron_run(
                row,
                Some(&RunId::from("r-1")),
                Outcome::Ok,
                Some("fine"),
                Some(5),
            )
            .expect("finish")
            .expect("the row");
        assert_eq!(closed.run_id.as_ref().map(RunId::as_str), Some("r-1"));
        assert_eq!(closed.outcome, Outcome::Ok);
        let (outcome, run_id): (String, String) = db
            .conn
            .query_row(
                "SELECT outcome, run_id FROM cron_runs WHERE id = ?1",
                [row],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("raw row");
        assert_eq!((outcome.as_str(), run_id.as_str()), ("ok", "r-1"));
        assert_eq!(
            serde_json::to_value(&closed).expect("json"),
            serde_json::json!({
                "id": row, "jobId": "daily", "runId": "r-1", "scheduledAt": 1_000,
                "firedAt": 1_001, "outcome": "ok", "reason": "fine", "manual": false,
                "durationMs": 5
            })
        );
        let listed = db.list_cron_runs(&job.id, 10).expect("list");
        assert_eq!(listed, [closed]);
        assert!(db.delete_cron_job(&job.id).expect("delete"));
        drop(db);
        cleanup(&path);
    }

    /// An outcome no version of Troupe writes is an error naming it, not a guess.
    #[test]
    fn an_unknown_outcome_is_refused_by_name() {
        for outcome in [
            Outcome::Running,
            Outcome::Ok,
            Outcome::Error,
            Outcome::Skipped,
            Outcome::Missed,
        ] {
            let text = outcome.as_str();
            let read = Outcome::column_result(ValueRef::Text(text.as_bytes()));
            assert_eq!(read.ok(), Some(outcome));
            assert_eq!(serde_json::to_value(outcome).expect("json"), text);
        }
        let err = Outcome::column_result(ValueRef::Text(b"done")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown cron run outcome \"done\""),
            "{err}"
        );
    }
}
