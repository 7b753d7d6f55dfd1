//! The store's typed operations: one message per thing callers need, named for what it
//! means. Each knows whether it writes (group-committed) or reads, and runs against any
//! [`Store`] backend.

use actix::Message;

use super::turns::{
    Acceptance, HistoryPage, NewTurn, RunEnd, RunRecord, SessionSummary, StoredMessage, ToolStep,
    Transcript,
};
use super::{Store, StoreError, StoreInfo};
use crate::messages::{RunId, SessionKey};

/// An operation the store actor runs against its backend.
pub trait StoreOp: Message<Result = Result<Self::Output, StoreError>> + Send + 'static {
    /// What it answers.
    type Output: Send + 'static;
    /// Its name in logs and `/metrics`.
    const NAME: &'static str;
    /// Whether it changes the database (then it is group-committed).
    const WRITE: bool;
    /// Runs it.
    fn run(self, store: &mut dyn Store) -> Result<Self::Output, StoreError>;
}

/// Declares an operation: its message type, answer, name, kind and how it runs. Used for
/// every store operation (turns here, channel and cron records in their modules).
macro_rules! store_op {
    ($(#[$doc:meta])* $op:ident { $($field:ident : $ty:ty),* $(,)? } -> $out:ty, $name:literal, $write:literal,
     |$this:ident, $store:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $op {
            $(
                #[allow(missing_docs)]
                pub $field: $ty,
            )*
        }

        impl ::actix::Message for $op {
            type Result = Result<$out, $crate::store::StoreError>;
        }

        impl $crate::store::ops::StoreOp for $op {
            type Output = $out;
            const NAME: &'static str = $name;
            const WRITE: bool = $write;
            fn run(
                self,
                $store: &mut dyn $crate::store::Store,
            ) -> Result<$out, $crate::store::StoreError> {
                let $this = self;
                $body
            }
        }
    };
}
pub(crate) use store_op;

store_op!(
    /// Stores a user's message and its queued run, or finds the run its key already made.
    AcceptTurn { turn: NewTurn } -> Acceptance, "accept_turn", true,
    |op, store| store.accept_turn(&op.turn)
);

store_op!(
    /// [`AcceptTurn`] and, for a new run, [`StartRun`] (nothing carried) in one operation:
    /// for a turn that arrives at an idle lane. Answers the acceptance and the run's context.
    AcceptAndStart { turn: NewTurn, context_limit: i64 } -> (Acceptance, Vec<StoredMessage>),
    "accept_and_start", true,
    |op, store| store.accept_and_start(&op.turn, op.context_limit)
);

store_op!(
    /// Marks a run running, closes the runs coalesced into it, and reads its context (the
    /// last `context_limit` messages of the turns before it; 0 reads nothing).
    StartRun { run_id: RunId, carried: Vec<RunId>, context_limit: i64 } -> Vec<StoredMessage>,
    "start_run", true,
    |op, store| store.start_run(&op.run_id, &op.carried, op.context_limit)
);

store_op!(
    /// Records how a run ended: its tool steps, then its reply, in the transcript.
    FinishRun { run_id: RunId, end: RunEnd, tool_steps: Vec<ToolStep> } -> (), "finish_run", true,
    |op, store| store.finish_run_with_tools(&op.run_id, &op.end, &op.tool_steps)
);

store_op!(
    /// Closes runs that will not run (aborted, superseded) with a status and a note.
    CloseRuns { run_ids: Vec<RunId>, status: &'static str, note: Option<String> } -> (),
    "close_runs", true,
    |op, store| store.close_runs(&op.run_ids, op.status, op.note.as_deref(), None)
);

store_op!(
    /// At start: fails the runs left running (saying why) and returns them with the queued.
    RecoverRuns { reason: &'static str } -> (Vec<RunRecord>, Vec<RunRecord>), "recover_runs", true,
    |op, store| store.recover_runs(op.reason)
);

store_op!(
    /// Clears a session's transcript and finished runs; `delete` removes the session too.
    ClearSession { session_key: SessionKey, delete: bool } -> bool, "clear_session", true,
    |op, store| store.clear_session(&op.session_key, op.delete)
);

store_op!(
    /// Deletes finished runs and messages older than a time (retention).
    SweepOlderThan { cutoff_ms: i64 } -> (u64, u64), "sweep", true,
    |op, store| store.sweep_older_than(op.cutoff_ms)
);

store_op!(
    /// One run by id.
    GetRun { run_id: RunId } -> Option<RunRecord>, "get_run", false,
    |op, store| store.get_run(&op.run_id)
);

store_op!(
    /// A page of a session's transcript, in turn order, bounded by count and bytes.
    History { session_key: SessionKey, page: HistoryPage } -> Transcript, "history", false,
    |op, store| store.history(&op.session_key, op.page)
);

store_op!(
    /// Sessions, most recently active first.
    ListSessions { limit: i64 } -> Vec<SessionSummary>, "list_sessions", false,
    |op, store| store.list_sessions(op.limit)
);

store_op!(
    /// Tokens and cost since a time.
    UsageReport { since_ms: i64 } -> serde_json::Value, "usage_report", false,
    |op, store| store.usage_report(op.since_ms)
);

store_op!(
    /// Tokens and cost since a time per day and agent.
    UsageDaily { since_ms: i64 } -> Vec<super::turns::DailyUsage>, "usage_daily", false,
    |op, store| store.usage_daily(op.since_ms)
);

store_op!(
    /// Counts for `status` and `doctor`.
    GetStoreInfo {} -> StoreInfo, "info", false,
    |_op, store| store.info()
);
