//! `scheduler`: cron jobs from the store and from config, fired on their schedules (the
//! next fire always computed from the schedule, never from "now + interval"), with the
//! overlap and catch-up policies of DESIGN §9; every fire, skip, miss and outcome is a row
//! of the run ledger and a `cron` event to clients. It also beats each agent's heartbeat.

pub mod api;
pub mod fire;
pub mod heartbeat;
pub mod schedule;

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use crate::messages::Shutdown;
use crate::session_queue::SessionQueueActor;
use crate::store::cron::{
    CatchUp, CronJob, CronJobRecord, CronRunRecord, FinishCronRun, InterruptedHookRuns, NewCronRun,
    Outcome, Overlap, RecordCronRun, SyncCronJobs,
};
use crate::supervisor::{
    ChildHandle, ChildLink, ChildSpec, ExitGuard, SupervisorActor, lookup_patiently,
};
use fire::{Turn, run_turn, store_op};
pub use heartbeat::WakeHeartbeat;
use heartbeat::{HeartbeatSettings, HeartbeatState};
use schedule::{Schedule, Zone};

/// How often due jobs are looked for.
const TICK: Duration = Duration::from_millis(50);

/// Missed fires listed one row each at start; past it, the last row counts the rest.
const MAX_MISSED_ROWS: usize = 100;

/// What the scheduler is given at start.
#[derive(Debug, Clone, Default)]
pub struct SchedulerSettings {
    /// Jobs from config (`[[cron.jobs]]`).
    pub jobs: Vec<CronJob>,
    /// Agents' heartbeats.
    pub heartbeats: Vec<HeartbeatSettings>,
    /// Configured agent ids (a job naming another is refused).
    pub agents: Vec<String>,
}

/// A job as the scheduler runs it.
struct JobState {
    record: CronJobRecord,
    schedule: Schedule,
    zone: Zone,
    next: Option<i64>,
    active: usize,
}

impl JobState {
    fn new(record: CronJobRecord) -> Result<Self, String> {
        let schedule = Schedule::parse(&record.job.schedule)?;
        let zone = Zone::parse(record.job.tz.as_deref())?;
        Ok(Self {
            record,
            schedule,
            zone,
            next: None,
            active: 0,
        })
    }

    fn next_after(&self, after: i64) -> Option<i64> {
        if !self.record.job.enabled {
            return None;
        }
        self.schedule
            .next_after(after, self.record.created_at, self.zone)
    }
}

/// The scheduler actor.
pub struct SchedulerActor {
    settings: SchedulerSettings,
    root: Addr<SupervisorActor>,
    jobs: BTreeMap<String, JobState>,
    heartbeats: Vec<HeartbeatState>,
    loaded: bool,
    guard: ExitGuard,
}

fn now() -> i64 {
    crate::now_ms() as i64
}

impl SchedulerActor {
    /// The child spec of `scheduler` (own arbiter).
    pub fn spec(settings: SchedulerSettings) -> ChildSpec {
        ChildSpec::new("scheduler", "scheduler", move |link: ChildLink| {
            let arbiter = crate::supervisor::child_arbiter("scheduler");
            let settings = settings.clone();
            let addr =
                SchedulerActor::start_in_arbiter(&arbiter.handle(), move |_| SchedulerActor {
                    settings,
                    root: link.supervisor.clone(),
                    jobs: BTreeMap::new(),
                    heartbeats: Vec::new(),
                    loaded: false,
                    guard: link.guard(),
                });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
    }

    /// Loads the jobs (config ones stored first), records or runs the fires missed while
    /// the gateway was down, and plans the next fire of each.
    fn load(&mut self, ctx: &mut Context<Self>) {
        let root = self.root.clone();
        let config = self.settings.jobs.clone();
        let busy = self.guard.liveness().busy();
        let sync = async move { store_op(&root, SyncCronJobs { config }).await };
        ctx.wait(sync.into_actor(self).map(move |loaded, act, ctx| {
            drop(busy);
            match loaded {
                Ok(records) => {
                    for record in records {
                        let id = record.job.id.clone();
                        match JobState::new(record) {
                            Ok(state) => {
                                act.jobs.insert(id.clone(), state);
                                act.catch_up(&id, ctx);
                            }
                            Err(why) => {
                                tracing::error!(job_id = %id, error = %why, "a stored cron job has a bad schedule; not scheduled")
                            }
                        }
                    }
                    act.loaded = true;
                    act.rerun_hooks(ctx);
                    tracing::info!(jobs = act.jobs.len(), "scheduler loaded its jobs");
                }
                Err(why) => {
                    tracing::error!(error = %why, "scheduler cannot load its jobs; restarting");
                    ctx.stop();
                }
            }
        }));
    }

    /// Runs again, once, the webhook turns the last stop cut (a hook acknowledged with a 2xx
    /// must run). Waits for the session-queue to have recovered its runs first.
    fn rerun_hooks(&mut self, ctx: &mut Context<Self>) {
        let root = self.root.clone();
        let work = async move {
            let queue = lookup_patiently::<SessionQueueActor>(&root, "session-queue")
                .await
                .ok_or_else(|| "the session queue is not running".to_string())?;
            // Its recovery holds its mailbox: once this answers, cut runs are marked.
            queue
                .send(crate::messages::Ping)
                .await
                .map_err(|e| format!("the session queue did not answer: {e}"))?;
            let cut = store_op(&root, InterruptedHookRuns {}).await?;
            for run in cut {
                tracing::info!(session_key = %run.session_key, "webhook turn cut by a stop; running it again once");
                let turn = Turn {
                    session_key: run.session_key,
                    agent_id: run.agent_id,
                    text: run.input,
                    idempotency_key: format!("{}:rerun", run.idempotency_key),
                };
                let root = root.clone();
                actix::spawn(async move {
                    if let Err(why) = run_turn(&root, turn, |_| {}).await {
                        tracing::error!(error = %why, "a webhook turn could not run again");
                    }
                });
            }
            Ok::<_, String>(())
        };
        ctx.spawn(work.into_actor(self).map(|done, _, _| {
            if let Err(why) = done {
                tracing::error!(error = %why, "cut webhook turns were not looked for");
            }
        }));
    }

    /// The fires of a job that fell due while the gateway was down.
    fn catch_up(&mut self, id: &str, ctx: &mut Context<Self>) {
        let Some(state) = self.jobs.get_mut(id) else {
            return;
        };
        let now = now();
        if !state.record.job.enabled {
            return;
        }
        let mut missed = Vec::new();
        let mut extra = 0usize;
        let mut t = state
            .record
            .last_scheduled_at
            .unwrap_or(state.record.created_at);
        while let Some(due) = state.next_after(t) {
            if due > now {
                break;
            }
            if missed.len() < MAX_MISSED_ROWS {
                missed.push(due);
            } else {
                extra += 1;
            }
            t = due;
        }
        state.next = state.next_after(now);
        let run_last = state.record.job.catch_up == CatchUp::RunOnce;
        let count = missed.len() + extra;
        let last = missed.pop();
        for due in missed {
            self.record_missed(id, due, "due while the gateway was down".into(), ctx);
        }
        if let Some(due) = last {
            if run_last {
                let reason = format!(
                    "catch-up: run once for {count} fire(s) missed while the gateway was down"
                );
                self.fire(id, due, false, Some(reason), ctx);
            } else {
                let reason = if extra > 0 {
                    format!("due while the gateway was down ({extra} more missed fires not listed)")
                } else {
                    "due while the gateway was down".into()
                };
                self.record_missed(id, due, reason, ctx);
            }
        }
    }

    fn record_missed(&mut self, id: &str, due: i64, reason: String, ctx: &mut Context<Self>) {
        let run = NewCronRun {
            job_id: id.to_string(),
            scheduled_at: due,
            fired_at: None,
            outcome: Outcome::Missed,
            reason: Some(reason),
            manual: false,
        };
        self.record_closed(run, ctx);
    }

    /// Writes a row that is final already (skipped, missed) and tells clients.
    fn record_closed(&mut self, run: NewCronRun, ctx: &mut Context<Self>) {
        let root = self.root.clone();
        let write = async move {
            let row = run.clone();
            let id = store_op(&root, RecordCronRun { run }).await?;
            Ok::<_, String>(CronRunRecord {
                id,
                job_id: row.job_id,
                run_id: None,
                scheduled_at: row.scheduled_at,
                fired_at: row.fired_at,
                outcome: row.outcome.as_str().into(),
                reason: row.reason,
                manual: row.manual,
                duration_ms: None,
            })
        };
        ctx.spawn(write.into_actor(self).map(|written, _, _| match written {
            Ok(row) => publish(&row),
            Err(why) => tracing::error!(error = %why, "a cron ledger row was not written"),
        }));
    }

    /// Fires a job: skipped while its previous run is active (overlap = skip), otherwise a
    /// ledger row and a turn, its outcome recorded when it ends.
    fn fire(
        &mut self,
        id: &str,
        scheduled_at: i64,
        manual: bool,
        note: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(state) = self.jobs.get_mut(id) else {
            return;
        };
        let job = state.record.job.clone();
        if state.active > 0 && job.overlap == Overlap::Skip {
            let run = NewCronRun {
                job_id: job.id.clone(),
                scheduled_at,
                fired_at: None,
                outcome: Outcome::Skipped,
                reason: Some("overlap: the previous run is still active".into()),
                manual,
            };
            self.record_closed(run, ctx);
            return;
        }
        let agent_known = self.settings.agents.contains(&job.agent_id);
        state.active += 1;
        let root = self.root.clone();
        let fired_at = now();
        let key = if manual {
            format!("cron:{}:manual:{}", job.id, uuid::Uuid::new_v4())
        } else {
            format!("cron:{}:{scheduled_at}", job.id)
        };
        let work = async move {
            let run = NewCronRun {
                job_id: job.id.clone(),
                scheduled_at,
                fired_at: Some(fired_at),
                outcome: Outcome::Running,
                reason: note.clone(),
                manual,
            };
            let row = store_op(&root, RecordCronRun { run }).await?;
            let result = if agent_known {
                let turn = Turn {
                    session_key: job.session(),
                    agent_id: job.agent_id.clone(),
                    text: job.message.clone(),
                    idempotency_key: key.clone(),
                };
                run_turn(&root, turn, |_| {}).await
            } else {
                Err(format!("agent {:?} is not configured", job.agent_id))
            };
            let (run_id, outcome, reason) = match result {
                Ok(summary) if summary.status == crate::messages::RunStatus::Ok => {
                    let delivered = match &job.deliver {
                        Some(target) => {
                            Some(fire::deliver_reply(&root, target, &summary.summary, key).await)
                        }
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
                Err(why) => (None, Outcome::Error, Some(why)),
            };
            let finish = FinishCronRun {
                id: row,
                run_id: run_id.map(String::from),
                outcome,
                reason,
                duration_ms: Some(now() - fired_at),
            };
            store_op(&root, finish).await
        };
        let id = id.to_string();
        ctx.spawn(work.into_actor(self).map(move |done, act, _| {
            if let Some(state) = act.jobs.get_mut(&id) {
                state.active = state.active.saturating_sub(1);
            }
            match done {
                Ok(Some(row)) => publish(&row),
                Ok(None) => {}
                Err(why) => {
                    tracing::error!(job_id = %id, error = %why, "a cron run was not recorded")
                }
            }
        }));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.loaded {
            return;
        }
        let now = now();
        let due: Vec<(String, i64)> = self
            .jobs
            .iter()
            .filter_map(|(id, s)| s.next.filter(|n| *n <= now).map(|n| (id.clone(), n)))
            .collect();
        for (id, scheduled) in due {
            if let Some(state) = self.jobs.get_mut(&id) {
                state.next = state.next_after(now.max(scheduled));
            }
            self.fire(&id, scheduled, false, None, ctx);
        }
        for i in 0..self.heartbeats.len() {
            if self.heartbeats[i].next <= now {
                self.beat(i, now, ctx);
            }
        }
    }
}

/// Tells clients about a ledger row.
fn publish(row: &CronRunRecord) {
    if let Ok(payload) = serde_json::to_value(row) {
        crate::event_bus::publish("cron", payload);
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.guard.liveness().attach(ctx);
        let start = now();
        self.heartbeats = self
            .settings
            .heartbeats
            .iter()
            .map(|s| HeartbeatState {
                next: start + s.every_ms,
                settings: s.clone(),
                active: false,
            })
            .collect();
        self.load(ctx);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

crate::child_controls!(SchedulerActor, |this| this
    .jobs
    .values()
    .map(|s| s.active)
    .sum());

impl Handler<Shutdown> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
