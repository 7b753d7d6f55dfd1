//! `store`: the single writer of Troupe's database, on its own arbiter (its own thread).
//!
//! Callers send typed domain operations ([`ops`]: `AcceptTurn`, `StartRun`, `FinishRun`,
//! `History`, ...), never SQL. They run against a [`Store`] backend (SQLite today, in
//! [`sqlite`]; another backend implements the same trait without touching callers).
//!
//! Writes are group-committed: each write handler queues its operation; once the actor has
//! drained what is waiting in its mailbox (at most [`MAX_BATCH`] at a time) it runs them
//! all in one transaction, each in its own savepoint (one failing operation does not undo
//! the others), commits, and only then answers each. Reads run at once, beside nothing
//! else, on the same thread. Every operation is counted and timed per name for `/metrics`.

pub mod channels;
pub mod cron;
pub mod failure;
pub mod ops;
pub mod sqlite;
pub mod turns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::messages::{RunId, SessionKey, Shutdown};
use crate::supervisor::{ChildHandle, ChildLink, ChildSpec, ExitGuard};
pub use failure::{StoreFailure, StoreFailureCause};
pub use ops::*;
use turns::{
    Acceptance, HistoryPage, NewTurn, RunEnd, RunRecord, SessionSummary, StoredMessage, Transcript,
};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// File path.
        path: String,
        /// Cause.
        source: rusqlite::Error,
    },
    /// A migration failed.
    #[error("store migration failed: {0}")]
    Migrate(String),
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// The batch this write was in could not be committed.
    #[error("store commit failed: {0}")]
    Commit(String),
    /// The store is not open yet (or was closed).
    #[error("store is not open")]
    NotOpen,
}

/// A storage backend: the domain operations, and the batch (transaction) they run in.
pub trait Store: channels::ChannelStore + cron::CronStore + Send {
    /// Starts a batch of writes.
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Makes the batch durable.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Abandons the batch.
    fn rollback(&mut self);
    /// Starts one operation inside the batch.
    fn savepoint(&mut self) -> Result<(), StoreError>;
    /// Ends the operation: keeps its changes, or undoes only them.
    fn release(&mut self, keep: bool) -> Result<(), StoreError>;
    /// Stores a user's message and a queued run (or finds the duplicate of its key).
    fn accept_turn(&mut self, turn: &NewTurn) -> Result<Acceptance, StoreError>;
    /// [`Store::accept_turn`], then, for a new run, [`Store::start_run`] (no runs carried)
    /// in the same operation: the queue asks for this when the session's lane is idle, so
    /// the turn costs one store round trip less. The run is never stored as queued-only:
    /// after a crash it is recovered as a run that had started.
    fn accept_and_start(
        &mut self,
        turn: &NewTurn,
        context_limit: i64,
    ) -> Result<(Acceptance, Vec<StoredMessage>), StoreError> {
        let acceptance = self.accept_turn(turn)?;
        let history = match &acceptance {
            Acceptance::New(run) => self.start_run(&run.id, &[], context_limit)?,
            Acceptance::Duplicate(_) | Acceptance::Refused => Vec::new(),
        };
        Ok((acceptance, history))
    }
    /// Marks a run running, closes the runs coalesced into it, and reads its context.
    fn start_run(
        &mut self,
        run_id: &RunId,
        carried: &[RunId],
        context_limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Records a run's end (and its reply in the transcript).
    fn finish_run(&mut self, run_id: &RunId, end: &RunEnd) -> Result<(), StoreError> {
        self.finish_run_with_tools(run_id, end, &[])
    }
    /// Records a run's end: its tool steps as `tool` messages of its turn, then its reply.
    fn finish_run_with_tools(
        &mut self,
        run_id: &RunId,
        end: &RunEnd,
        tool_steps: &[turns::ToolStep],
    ) -> Result<(), StoreError>;
    /// Closes queued or running runs (aborted, superseded, coalesced into `into`).
    fn close_runs(
        &mut self,
        run_ids: &[RunId],
        status: &str,
        note: Option<&str>,
        into: Option<&str>,
    ) -> Result<(), StoreError>;
    /// At start: fails runs left running (with `reason`), returns them and the queued ones.
    fn recover_runs(
        &mut self,
        reason: &str,
    ) -> Result<(Vec<RunRecord>, Vec<RunRecord>), StoreError>;
    /// One run by id.
    fn get_run(&mut self, run_id: &RunId) -> Result<Option<RunRecord>, StoreError>;
    /// A transcript page in turn order.
    fn history(
        &mut self,
        session_key: &SessionKey,
        page: HistoryPage,
    ) -> Result<Transcript, StoreError>;
    /// Sessions, most recently active first.
    fn list_sessions(&mut self, limit: i64) -> Result<Vec<SessionSummary>, StoreError>;
    /// Tokens and cost since a time: total, per agent, per session, per day.
    fn usage_report(&mut self, since_ms: i64) -> Result<serde_json::Value, StoreError>;
    /// Tokens and cost since a time per day (UTC) and agent, oldest day first.
    fn usage_daily(&mut self, since_ms: i64) -> Result<Vec<turns::DailyUsage>, StoreError>;
    /// Clears a session's transcript and finished runs (`delete`: the session too).
    fn clear_session(&mut self, session_key: &SessionKey, delete: bool)
    -> Result<bool, StoreError>;
    /// Retention: deletes finished runs and messages older than a time.
    fn sweep_older_than(&mut self, cutoff_ms: i64) -> Result<(u64, u64), StoreError>;
    /// Counts for `status` and `doctor`.
    fn info(&mut self) -> Result<StoreInfo, StoreError>;
}

/// Writes committed together at most.
pub const MAX_BATCH: usize = 256;

/// How often old runs are swept when a retention is set.
pub const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How to answer a queued write once its batch's commit is known (`Some(error)` if the
/// commit failed).
type Answer = Box<dyn FnOnce(Option<&StoreError>)>;

/// A queued write: runs against the backend (inside a savepoint of its own when the flag
/// says so) and returns whether it succeeded and how to answer.
type PendingWrite = Box<dyn FnOnce(&mut dyn Store, &mut OpStats, bool) -> (bool, Answer)>;

/// Count and time of one operation kind.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpStat {
    /// Operations run.
    pub count: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Total time, microseconds.
    pub total_us: u64,
    /// Cumulative counts of operations at most [`LATENCY_BUCKETS_US`] long.
    pub buckets: Vec<u64>,
}

/// Histogram bucket bounds of store operation latency, microseconds.
pub const LATENCY_BUCKETS_US: [u64; 8] = [50, 100, 250, 500, 1_000, 5_000, 25_000, 100_000];

/// Statistics of every operation kind, by name, plus the batches.
#[derive(Debug, Clone, Default, Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct OpStats {
    /// Per operation name.
    pub ops: BTreeMap<&'static str, OpStat>,
    /// Write batches committed.
    pub batches: u64,
    /// Writes in those batches.
    pub batched_writes: u64,
}

impl OpStats {
    fn record(&mut self, name: &'static str, took: Duration, ok: bool) {
        let us = took.as_micros() as u64;
        let stat = self.ops.entry(name).or_insert_with(|| OpStat {
            buckets: vec![0; LATENCY_BUCKETS_US.len()],
            ..OpStat::default()
        });
        stat.count += 1;
        stat.errors += u64::from(!ok);
        stat.total_us += us;
        for (bucket, bound) in stat.buckets.iter_mut().zip(LATENCY_BUCKETS_US) {
            if us <= bound {
                *bucket += 1;
            }
        }
    }
}

/// Runs one operation, timing and counting it.
fn timed<T>(
    stats: &mut OpStats,
    name: &'static str,
    run: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let result = run();
    stats.record(name, start.elapsed(), result.is_ok());
    if let Err(e) = &result {
        tracing::warn!(op = name, error = %e, "store operation failed");
    }
    result
}

/// The store actor.
pub struct StoreActor {
    path: PathBuf,
    retention: Option<Duration>,
    db: Option<Box<dyn Store>>,
    batch: Vec<PendingWrite>,
    flush_queued: bool,
    stats: OpStats,
    guard: ExitGuard,
}

/// Facts about the store for `status` and `doctor`.
#[derive(Debug, Clone, Serialize, MessageResponse)]
#[serde(rename_all = "camelCase")]
pub struct StoreInfo {
    /// Database file.
    pub path: String,
    /// Number of gateway starts recorded.
    pub boots: i64,
    /// Sessions stored.
    pub sessions: i64,
    /// Messages stored.
    pub messages: i64,
}

impl StoreActor {
    /// The child spec of `store`.
    /// `retention`: finished runs and their messages older than this are deleted, at
    /// start and every [`RETENTION_SWEEP_EVERY`].
    pub fn spec(path: PathBuf, retention: Option<Duration>) -> ChildSpec {
        ChildSpec::new("store", "store", move |link: ChildLink| {
            let arbiter = crate::supervisor::child_arbiter("store");
            let path = path.clone();
            let addr = StoreActor::start_in_arbiter(&arbiter.handle(), move |_| StoreActor {
                path,
                retention,
                db: None,
                batch: Vec::new(),
                flush_queued: false,
                stats: OpStats::default(),
                guard: link.guard(),
            });
            Ok(ChildHandle::of(addr).on_arbiter(arbiter.handle()))
        })
        .shutdown(Duration::from_secs(10))
    }

    /// Runs the queued writes in one transaction, then answers each. Several writes each
    /// get a savepoint (one failing does not undo the others); a lone write needs none: if
    /// it fails, the transaction is rolled back instead of committed.
    fn flush(&mut self) {
        self.flush_queued = false;
        if self.batch.is_empty() {
            return;
        }
        let take = self.batch.len().min(MAX_BATCH);
        let writes: Vec<PendingWrite> = self.batch.drain(..take).collect();
        let Some(db) = self.db.as_deref_mut() else {
            for write in writes {
                // Not open: every write fails alike (no backend to run against).
                drop(write);
            }
            return;
        };
        let _busy = self.guard.liveness().busy();
        let count = writes.len() as u64;
        let isolate = writes.len() > 1;
        let begun = db.begin();
        let mut answers = Vec::with_capacity(writes.len());
        let mut all_ok = true;
        if begun.is_ok() {
            for write in writes {
                let (ok, answer) = write(db, &mut self.stats, isolate);
                all_ok &= ok;
                answers.push(answer);
            }
        }
        let committed = match begun {
            // A lone write that failed: undo it (its own error is its answer).
            Ok(()) if !isolate && !all_ok => {
                db.rollback();
                Ok(())
            }
            Ok(()) => db.commit(),
            Err(e) => Err(e),
        };
        if committed.is_err() {
            db.rollback();
        }
        self.stats.batches += 1;
        self.stats.batched_writes += count;
        let failure = committed.err().map(|e| StoreError::Commit(e.to_string()));
        if let Some(e) = &failure {
            tracing::error!(error = %e, writes = count, "store batch failed");
        }
        for answer in answers {
            answer(failure.as_ref());
        }
    }

    /// Deletes what is older than `keep`, as a write in line with the others.
    fn sweep(&mut self, keep: Duration, ctx: &mut Context<Self>) {
        let cutoff = crate::now_ms() as i64 - keep.as_millis() as i64;
        let sweep = ctx.address().send(SweepOlderThan { cutoff_ms: cutoff });
        ctx.spawn(sweep.into_actor(self).map(|res, _, _| match res {
            Ok(Ok((runs, messages))) if runs + messages > 0 => {
                tracing::info!(runs, messages, "retention: old runs and messages deleted")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "retention sweep failed"),
            _ => {}
        }));
    }
}

/// Answered by the store with its operation statistics (for `/metrics`).
#[derive(Message, Debug)]
#[rtype(result = "OpStats")]
pub struct GetStoreStats;

impl Handler<GetStoreStats> for StoreActor {
    type Result = OpStats;
    fn handle(&mut self, _: GetStoreStats, _: &mut Self::Context) -> OpStats {
        self.stats.clone()
    }
}

/// Runs the queued writes (sent to itself once the mailbox backlog is handled).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushBatch;

impl Handler<FlushBatch> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: FlushBatch, ctx: &mut Self::Context) {
        self.flush();
        if !self.batch.is_empty() && !self.flush_queued {
            self.flush_queued = true;
            ctx.notify(FlushBatch);
        }
    }
}

impl<O: StoreOp> Handler<O> for StoreActor {
    type Result = ResponseFuture<Result<O::Output, StoreError>>;
    fn handle(&mut self, op: O, ctx: &mut Self::Context) -> Self::Result {
        if self.db.is_none() {
            return Box::pin(async { Err(StoreError::NotOpen) });
        }
        if !O::WRITE {
            let result = match self.db.as_deref_mut() {
                Some(db) => timed(&mut self.stats, O::NAME, || op.run(db)),
                None => Err(StoreError::NotOpen),
            };
            return Box::pin(async move { result });
        }
        let (tx, rx) = oneshot::channel();
        self.batch.push(Box::new(move |db, stats, isolate| {
            let result = if isolate {
                match db.savepoint() {
                    Ok(()) => {
                        let result = timed(stats, O::NAME, || op.run(db));
                        match db.release(result.is_ok()) {
                            Ok(()) => result,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            } else {
                timed(stats, O::NAME, || op.run(db))
            };
            let ok = result.is_ok();
            let answer: Answer = Box::new(move |failed: Option<&StoreError>| {
                let answer = match failed {
                    Some(e) => Err(StoreError::Commit(e.to_string())),
                    None => result,
                };
                let _ = tx.send(answer);
            });
            (ok, answer)
        }));
        if !self.flush_queued {
            self.flush_queued = true;
            ctx.notify(FlushBatch);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::NotOpen)) })
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.guard.liveness().attach(ctx);
        // Opening and migrating may take long on a slow disk: legitimate work, not a hang.
        // It runs on this actor's own thread, where every store operation runs.
        let opened = {
            let _busy = self.guard.liveness().busy();
            sqlite::SqliteStore::open(&self.path)
        };
        match opened {
            Ok(db) => {
                tracing::info!(path = %self.path.display(), "store open");
                self.db = Some(Box::new(db));
                if let Some(keep) = self.retention {
                    self.sweep(keep, ctx);
                    ctx.run_interval(RETENTION_SWEEP_EVERY, move |act, ctx| act.sweep(keep, ctx));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "store failed to open");
                self.guard.fail(err.to_string());
                ctx.stop();
            }
        }
    }
}

crate::child_controls!(StoreActor, |this| this.batch.len());

impl Handler<Shutdown> for StoreActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        // The store stops last: what is queued is written before the database closes.
        while !self.batch.is_empty() {
            self.flush();
        }
        self.db = None;
        ctx.stop();
    }
}
