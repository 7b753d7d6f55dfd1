//! `scheduler`: cron jobs from the store and from config, fired on their schedules (the
//! next fire always computed from the schedule, never from "now + interval"), with the
//! overlap and catch-up policies of DESIGN §9; every fire, skip, miss and outcome is a row
//! of the run ledger and a `cron` event to clients. It also beats each agent's heartbeat.

pub mod api;
pub mod batch;
pub mod error;
pub mod fire;
pub mod heartbeat;
pub mod links;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::prelude::*;

use crate::messages::{AgentId, CronJobId, Shutdown};
use crate::session_queue::SessionQueueActor;
use crate::store::cron::{
    CatchUp, CronJob, CronJobRecord, CronRunEnd, InterruptedHookRuns, NewCronRun, Outcome,
    SyncCronJobs,
};
use crate::supervisor::{
    ChildHandle, ChildLink, ChildSpec, ExitGuard, SupervisorActor, lookup_patiently,
};
use batch::Fire;
pub use error::FireError;
use fire::{Turn, run_turn};
pub use heartbeat::WakeHeartbeat;
use heartbeat::{HeartbeatSettings, HeartbeatState};
use links::Links;
use schedule::{Schedule, Zone};

/// Fires due within this much of each other are handled in one wake-up: the timer is never
/// armed sooner than this after the last wake-up (jobs `every 1s` made one after another
/// fall due a few milliseconds apart; one wake-up each would be thousands a second).
const COALESCE: Duration = Duration::from_millis(10);

/// The longest the timer sleeps, so a wall-clock step is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Fires handled per wake-up; past it the rest wait for the next one, armed at once, so
/// the actor's mailbox and its liveness beat run in between.
const MAX_FIRES_PER_WAKE: usize = 2_000;

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
    pub agents: Vec<AgentId>,
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

/// What the scheduler counts (in `cron.status`).
#[derive(Debug, Default, Clone, Copy)]
struct SchedulerStats {
    /// Timer wake-ups.
    wakes: u64,
    /// Ledger store operations (each a batch of rows).
    batches: u64,
    /// Fires handled (run or skipped).
    fires: u64,
}

/// The scheduler actor.
pub struct SchedulerActor {
    settings: SchedulerSettings,
    root: Addr<SupervisorActor>,
    links: Links,
    jobs: BTreeMap<CronJobId, JobState>,
    /// Enabled jobs by next fire time (each job's `next`).
    due: BTreeSet<(i64, CronJobId)>,
    /// The one armed timer and the time (ms) it is for.
    timer: Option<(SpawnHandle, i64)>,
    /// When the timer last woke the scheduler (ms).
    last_wake: i64,
    /// Runs ended whose rows are not closed yet.
    ended: Vec<CronRunEnd>,
    /// The timer that closes them.
    flush_timer: Option<SpawnHandle>,
    stats: SchedulerStats,
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
                    links: Links::new(&link.supervisor),
                    root: link.supervisor.clone(),
                    jobs: BTreeMap::new(),
                    due: BTreeSet::new(),
                    timer: None,
                    last_wake: 0,
                    ended: Vec::new(),
                    flush_timer: None,
                    stats: SchedulerStats::default(),
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
        let links = self.links.clone();
        let config = self.settings.jobs.clone();
        let busy = self.guard.liveness().busy();
        let sync = async move { links.store_op(SyncCronJobs { config }).await };
        ctx.wait(sync.into_actor(self).map(move |loaded, act, ctx| {
            // Planning thousands of jobs (and their missed fires) is long legitimate work.
            let _busy = busy;
            match loaded {
                Ok(records) => {
                    let mut fires = Vec::new();
                    let mut closed = Vec::new();
                    for record in records {
                        let id = record.job.id.clone();
                        match JobState::new(record) {
                            Ok(state) => {
                                act.jobs.insert(id.clone(), state);
                                act.catch_up(&id, &mut fires, &mut closed);
                            }
                            Err(why) => {
                                tracing::error!(job_id = %id, error = %why, "a stored cron job has a bad schedule; not scheduled")
                            }
                        }
                    }
                    act.loaded = true;
                    act.fire_batch(fires, closed, ctx);
                    act.arm(ctx);
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
        let links = self.links.clone();
        let work = async move {
            let queue = lookup_patiently::<SessionQueueActor>(&root, "session-queue")
                .await
                .map_err(FireError::QueueLookup)?;
            // Its recovery holds its mailbox: once this answers, cut runs are marked.
            queue
                .send(crate::messages::Ping)
                .await
                .map_err(FireError::QueueGone)?;
            let cut = links.store_op(InterruptedHookRuns {}).await?;
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
            Ok::<_, FireError>(())
        };
        ctx.spawn(work.into_actor(self).map(|done, _, _| {
            if let Err(why) = done {
                tracing::error!(error = %why, "cut webhook turns were not looked for");
            }
        }));
    }

    /// The fires of a job that fell due while the gateway was down: rows to write to
    /// `closed`, the one catch-up run to `fires`; and the job's next fire planned.
    fn catch_up(&mut self, id: &CronJobId, fires: &mut Vec<Fire>, closed: &mut Vec<NewCronRun>) {
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
        let next = state.next_after(now);
        let run_last = state.record.job.catch_up == CatchUp::RunOnce;
        self.plan(id, next);
        let count = missed.len() + extra;
        let last = missed.pop();
        let missed_row = |due: i64, reason: String| NewCronRun {
            job_id: id.clone(),
            scheduled_at: due,
            fired_at: None,
            outcome: Outcome::Missed,
            reason: Some(reason),
            manual: false,
        };
        for due in missed {
            closed.push(missed_row(due, "due while the gateway was down".into()));
        }
        if let Some(due) = last {
            if run_last {
                fires.push(Fire {
                    job_id: id.clone(),
                    scheduled_at: due,
                    manual: false,
                    note: Some(format!(
                        "catch-up: run once for {count} fire(s) missed while the gateway was down"
                    )),
                });
            } else {
                let reason = if extra > 0 {
                    format!("due while the gateway was down ({extra} more missed fires not listed)")
                } else {
                    "due while the gateway was down".into()
                };
                closed.push(missed_row(due, reason));
            }
        }
    }

    /// Sets a job's next fire (keeping the by-time index in step); `None` unplans it.
    fn plan(&mut self, id: &CronJobId, next: Option<i64>) {
        let Some(state) = self.jobs.get_mut(id) else {
            return;
        };
        if let Some(old) = state.next.take() {
            self.due.remove(&(old, id.clone()));
        }
        state.next = next;
        if let Some(at) = next {
            self.due.insert((at, id.clone()));
        }
    }

    /// The earliest time (ms) something is due: a job's fire or a heartbeat.
    fn earliest(&self) -> Option<i64> {
        let job = self.due.first().map(|(at, _)| *at);
        let beat = self.heartbeats.iter().map(|h| h.next).min();
        match (job, beat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms the one timer for the earliest due time (not sooner than [`COALESCE`] after
    /// the last wake-up, not later than [`MAX_SLEEP`] from now); keeps it if it is armed
    /// for that time already.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if !self.loaded {
            return;
        }
        let now = now();
        let Some(earliest) = self.earliest() else {
            if let Some((handle, _)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        let at = earliest
            .max(self.last_wake + COALESCE.as_millis() as i64)
            .min(now + MAX_SLEEP.as_millis() as i64);
        if let Some((handle, armed)) = self.timer {
            if armed == at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
        let handle = ctx.run_later(delay, |act, ctx| act.wake(ctx));
        self.timer = Some((handle, at));
    }

    /// The timer went off: fires what is due (at most [`MAX_FIRES_PER_WAKE`], as one
    /// batch), beats due heartbeats, and arms the timer again.
    fn wake(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        let now = now();
        self.last_wake = now;
        self.stats.wakes += 1;
        let mut fires = Vec::new();
        while fires.len() < MAX_FIRES_PER_WAKE {
            match self.due.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let Some((scheduled, id)) = self.due.pop_first() else {
                break;
            };
            let next = self.jobs.get_mut(&id).and_then(|state| {
                state.next = None;
                state.next_after(now.max(scheduled))
            });
            self.plan(&id, next);
            fires.push(Fire {
                job_id: id,
                scheduled_at: scheduled,
                manual: false,
                note: None,
            });
        }
        self.stats.fires += fires.len() as u64;
        if !fires.is_empty() {
            self.fire_batch(fires, Vec::new(), ctx);
        }
        for i in 0..self.heartbeats.len() {
            if self.heartbeats[i].next <= now {
                self.beat(i, now, ctx);
            }
        }
        if self.due.first().is_some_and(|(at, _)| *at <= now) {
            // More is due: yield to the mailbox, then go on at once.
            self.last_wake = now - COALESCE.as_millis() as i64;
        }
        self.arm(ctx);
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
        // Runs that ended but whose rows are not closed yet: closed now (best effort).
        let ends = std::mem::take(&mut self.ended);
        if !ends.is_empty() {
            let links = self.links.clone();
            actix::spawn(async move {
                if let Err(why) = links
                    .store_op(crate::store::cron::FinishCronRuns { ends })
                    .await
                {
                    tracing::warn!(error = %why, "cron run outcomes not recorded at stop");
                }
            });
        }
        ctx.stop();
    }
}
