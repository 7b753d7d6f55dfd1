//! Fires handled as batches: the fires of one wake-up (and the rows of one catch-up) are
//! decided together, their ledger rows written in one store operation, their turns started
//! through the cached session-queue address; the outcomes of ended runs are gathered for a
//! few milliseconds and closed in one operation too. Clients get a `cron` event per row,
//! at most [`MAX_EVENTS_PER_BATCH`] per batch, then one summary event for the rest.

use std::time::Duration;

use actix::prelude::*;
use serde_json::json;

use super::error::FireError;
use super::fire::{Turn, deliver_reply, run_turn_on};
use super::links::Links;
use super::{SchedulerActor, now};
use crate::messages::CronJobId;
use crate::store::StoreFailure;
use crate::store::cron::{
    CronJob, CronRunEnd, CronRunRecord, FinishCronRuns, NewCronRun, Outcome, Overlap,
    RecordCronRuns,
};

/// Ledger rows per store operation (a catch-up after a long stop can have many).
const MAX_ROWS_PER_OP: usize = 5_000;

/// `cron` events sent one per row for a batch; the rest of the batch is one summary event.
pub const MAX_EVENTS_PER_BATCH: usize = 100;

/// How long ended runs are gathered before their rows are closed in one operation.
const FINISH_GATHER: Duration = Duration::from_millis(20);

/// A fire to handle.
#[derive(Debug, Clone)]
pub struct Fire {
    /// The job.
    pub job_id: CronJobId,
    /// When it was due (ms).
    pub scheduled_at: i64,
    /// Started by `cron.run`.
    pub manual: bool,
    /// A note for the ledger (catch-up, manual).
    pub note: Option<String>,
}

/// A fire whose turn is to start once its row is written.
struct Started {
    job: CronJob,
    agent_known: bool,
    key: String,
    fired_at: i64,
    note: Option<String>,
}

impl SchedulerActor {
    /// Handles `fires` (skipped while the job's previous run is active and its overlap is
    /// `skip`) and writes `closed` rows (misses, skips) with them.
    pub(super) fn fire_batch(
        &mut self,
        fires: Vec<Fire>,
        mut closed: Vec<NewCronRun>,
        ctx: &mut Context<Self>,
    ) {
        let fired_at = now();
        let mut running = Vec::new();
        let mut started = Vec::new();
        for fire in fires {
            let Some(state) = self.jobs.get_mut(&fire.job_id) else {
                continue;
            };
            if !fire.manual {
                // As the store does with the row: the last fire handled moves forward.
                let last = &mut state.record.last_scheduled_at;
                *last = Some(last.map_or(fire.scheduled_at, |t| t.max(fire.scheduled_at)));
            }
            if state.active > 0 && state.record.job.overlap == Overlap::Skip {
                closed.push(NewCronRun {
                    job_id: fire.job_id,
                    scheduled_at: fire.scheduled_at,
                    fired_at: None,
                    outcome: Outcome::Skipped,
                    reason: Some("overlap: the previous run is still active".into()),
                    manual: fire.manual,
                });
                continue;
            }
            state.active += 1;
            let job = state.record.job.clone();
            let key = if fire.manual {
                format!("cron:{}:manual:{}", job.id, uuid::Uuid::new_v4())
            } else {
                format!("cron:{}:{}", job.id, fire.scheduled_at)
            };
            running.push(NewCronRun {
                job_id: fire.job_id,
                scheduled_at: fire.scheduled_at,
                fired_at: Some(fired_at),
                outcome: Outcome::Running,
                reason: fire.note.clone(),
                manual: fire.manual,
            });
            started.push(Started {
                agent_known: self.settings.agents.contains(&job.agent_id),
                job,
                key,
                fired_at,
                note: fire.note,
            });
        }
        if !running.is_empty() {
            self.write_running(running, started, ctx);
        }
        while !closed.is_empty() {
            let rest = closed.split_off(closed.len().min(MAX_ROWS_PER_OP));
            self.write_closed(std::mem::replace(&mut closed, rest), ctx);
        }
    }

    /// Writes the rows of fired jobs, then starts their turns.
    fn write_running(
        &mut self,
        runs: Vec<NewCronRun>,
        started: Vec<Started>,
        ctx: &mut Context<Self>,
    ) {
        let links = self.links.clone();
        self.stats.batches += 1;
        let write = async move { links.store_op(RecordCronRuns { runs }).await };
        ctx.spawn(write.into_actor(self).map(move |ids, act, ctx| match ids {
            Ok(ids) => {
                for (row, fire) in ids.into_iter().zip(started) {
                    act.start_turn(row, fire, ctx);
                }
            }
            Err(why) => {
                tracing::error!(fires = started.len(), error = %why, "the ledger rows of a batch of cron fires were not written; not run");
                for fire in started {
                    if let Some(state) = act.jobs.get_mut(&fire.job.id) {
                        state.active = state.active.saturating_sub(1);
                    }
                }
            }
        }));
    }

    /// Writes rows that are final already (skipped, missed) and tells clients.
    fn write_closed(&mut self, runs: Vec<NewCronRun>, ctx: &mut Context<Self>) {
        let links = self.links.clone();
        self.stats.batches += 1;
        let write = async move {
            let ids = links
                .store_op(RecordCronRuns { runs: runs.clone() })
                .await?;
            Ok::<_, StoreFailure>(
                ids.into_iter()
                    .zip(runs)
                    .map(|(id, row)| CronRunRecord {
                        id,
                        job_id: row.job_id,
                        run_id: None,
                        scheduled_at: row.scheduled_at,
                        fired_at: row.fired_at,
                        outcome: row.outcome,
                        reason: row.reason,
                        manual: row.manual,
                        duration_ms: None,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        ctx.spawn(write.into_actor(self).map(|written, _, _| match written {
            Ok(rows) => publish_rows(&rows),
            Err(why) => tracing::error!(error = %why, "cron ledger rows were not written"),
        }));
    }

    /// Runs a fired job's turn (and its delivery) as a task of its own on the scheduler's
    /// thread (not a future of the actor's context, which polls all of its futures each
    /// time one wakes: thousands of turns in flight would cost thousands of polls each);
    /// its end comes back as [`RunEnded`] to be gathered for closing.
    fn start_turn(&mut self, row: i64, fire: Started, ctx: &mut Context<Self>) {
        let links = self.links.clone();
        let root = self.root.clone();
        let me = ctx.address();
        let job_id = fire.job.id.clone();
        actix::spawn(async move {
            let end = run_fire(&links, &root, row, fire).await;
            me.do_send(RunEnded { job_id, end });
        });
    }

    /// Closes the rows of the runs that ended since the last call, in one operation.
    pub(super) fn close_ended(&mut self, ctx: &mut Context<Self>) {
        self.flush_timer = None;
        if self.ended.is_empty() {
            return;
        }
        let ends = std::mem::take(&mut self.ended);
        let links = self.links.clone();
        self.stats.batches += 1;
        let write = async move { links.store_op(FinishCronRuns { ends }).await };
        ctx.spawn(write.into_actor(self).map(|closed, _, _| match closed {
            Ok(rows) => publish_rows(&rows),
            Err(why) => {
                tracing::error!(error = %why, "the outcomes of cron runs were not recorded")
            }
        }));
    }
}

/// A fired job's turn ended: how its ledger row closes.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RunEnded {
    /// The job.
    pub job_id: CronJobId,
    /// How its row closes.
    pub end: CronRunEnd,
}

impl Handler<RunEnded> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: RunEnded, ctx: &mut Self::Context) {
        if let Some(state) = self.jobs.get_mut(&msg.job_id) {
            state.active = state.active.saturating_sub(1);
        }
        self.ended.push(msg.end);
        if self.flush_timer.is_none() {
            self.flush_timer = Some(ctx.run_later(FINISH_GATHER, |act, ctx| act.close_ended(ctx)));
        }
    }
}

/// The turn of one fire, to its end: how its row closes.
async fn run_fire(
    links: &Links,
    root: &Addr<crate::supervisor::SupervisorActor>,
    row: i64,
    fire: Started,
) -> CronRunEnd {
    let Started {
        job,
        agent_known,
        key,
        fired_at,
        note,
    } = fire;
    let result = if agent_known {
        let turn = Turn {
            session_key: job.session(),
            agent_id: job.agent_id.clone(),
            text: job.message.clone(),
            idempotency_key: key.clone(),
        };
        run_turn_on(&links.queue, turn, |_| {}).await
    } else {
        Err(FireError::UnknownAgent(job.agent_id.clone()))
    };
    let (run_id, outcome, reason) = match result {
        Ok(summary) if summary.status == crate::messages::RunStatus::Ok => {
            let delivered = match &job.deliver {
                Some(target) => Some(deliver_reply(root, target, &summary.summary, key).await),
                None => None,
            };
            let reason = match (note, delivered) {
                (Some(n), Some(d)) => Some(format!("{n}; {d}")),
                (n, d) => n.or(d),
            };
            (Some(summary.run_id), Outcome::Ok, reason)
        }
        Ok(summary) => {
            let why = summary
                .error
                .unwrap_or_else(|| format!("the run ended {}", summary.status));
            (Some(summary.run_id), Outcome::Error, Some(why))
        }
        // The one place a failed fire's error becomes text: the ledger's reason.
        Err(why) => (None, Outcome::Error, Some(why.to_string())),
    };
    CronRunEnd {
        id: row,
        run_id,
        outcome,
        reason,
        duration_ms: Some(now() - fired_at),
    }
}

/// Tells clients about ledger rows: one event each up to [`MAX_EVENTS_PER_BATCH`], then
/// one `{"batch": {...}}` event counting the rows not sent one by one.
pub fn publish_rows(rows: &[CronRunRecord]) {
    for row in rows.iter().take(MAX_EVENTS_PER_BATCH) {
        if let Ok(payload) = serde_json::to_value(row) {
            crate::event_bus::publish("cron", payload);
        }
    }
    if rows.len() > MAX_EVENTS_PER_BATCH {
        let rest = &rows[MAX_EVENTS_PER_BATCH..];
        let count = |o: Outcome| rest.iter().filter(|r| r.outcome == o).count();
        crate::event_bus::publish(
            "cron",
            json!({"batch": {
                "rows": rows.len(),
                "notSent": rest.len(),
                "ok": count(Outcome::Ok),
                "error": count(Outcome::Error),
                "skipped": count(Outcome::Skipped),
                "missed": count(Outcome::Missed),
                "running": count(Outcome::Running),
            }}),
        );
    }
}
