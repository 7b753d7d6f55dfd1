//! [`StoreFailure`]: a store operation that failed, as it is carried outside the store (by
//! the session queue, the channels and the edges): which operation, and why. It is typed
//! so that each edge maps it to its wire error in one place, and so that callers that retry
//! can tell "the store is restarting" from "the store ran it and it failed".

use std::sync::Arc;

use actix::{Addr, Handler, MailboxError};

use super::{StoreActor, StoreError, StoreOp};
use crate::supervisor::{LookupError, SupervisorActor, lookup_patiently};

/// A store operation that failed: the operation's name and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store operation {op} failed: {cause}")]
pub struct StoreFailure {
    /// The operation, by its name in logs and `/metrics` (`accept_turn`, `get_run`, ...).
    pub op: &'static str,
    /// Why it failed.
    #[source]
    pub cause: StoreFailureCause,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreFailureCause {
    /// The store actor is not running: it is restarting, or it stopped before answering.
    #[error("the store is not running (restarting)")]
    NotRunning,
    /// The registry could not give the store's address for another reason than a restart
    /// (a lookup for the wrong actor type: a bug).
    #[error("{0}")]
    Lookup(LookupError),
    /// The store ran the operation and its backend failed.
    #[error("{0}")]
    Backend(Arc<StoreError>),
}

impl StoreFailure {
    /// A failure of operation `O`.
    pub fn of<O: StoreOp>(cause: StoreFailureCause) -> Self {
        Self { op: O::NAME, cause }
    }

    /// Operation `O` could not reach the store (it is not running).
    pub fn not_running<O: StoreOp>() -> Self {
        Self::of::<O>(StoreFailureCause::NotRunning)
    }

    /// Operation `O` failed in the store's backend.
    pub fn backend<O: StoreOp>(err: StoreError) -> Self {
        Self::of::<O>(StoreFailureCause::Backend(Arc::new(err)))
    }

    /// Operation `O` could not find the store in the registry.
    pub fn lookup<O: StoreOp>(err: LookupError) -> Self {
        match err {
            LookupError::WrongType { .. } => Self::of::<O>(StoreFailureCause::Lookup(err)),
            LookupError::Missing(_) | LookupError::NoAnswer { .. } => Self::not_running::<O>(),
        }
    }

    /// The answer of operation `O` sent to the store with `Addr::send`, typed.
    pub fn answer<O: StoreOp>(
        sent: Result<Result<O::Output, StoreError>, MailboxError>,
    ) -> Result<O::Output, Self> {
        match sent {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(StoreError::NotOpen)) | Err(_) => Err(Self::not_running::<O>()),
            Ok(Err(e)) => Err(Self::backend::<O>(e)),
        }
    }

    /// True when the store was not there (restarting): the same operation may succeed
    /// once it is back. False when the store ran it and failed, or for a bug.
    pub fn is_not_running(&self) -> bool {
        matches!(self.cause, StoreFailureCause::NotRunning)
    }

    /// True for a bug in the gateway (a registry lookup for the wrong actor type).
    pub fn is_internal(&self) -> bool {
        matches!(self.cause, StoreFailureCause::Lookup(_))
    }
}

/// Runs one store operation from anywhere in the tree: finds the store (waiting while it
/// restarts, see [`lookup_patiently`]), sends `op`, and types the answer.
pub async fn ask<O: StoreOp>(root: &Addr<SupervisorActor>, op: O) -> Result<O::Output, StoreFailure>
where
    StoreActor: Handler<O>,
{
    let store = lookup_patiently::<StoreActor>(root, "store")
        .await
        .map_err(StoreFailure::lookup::<O>)?;
    StoreFailure::answer::<O>(store.send(op).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GetRun;

    #[test]
    fn an_answer_names_the_operation_and_tells_a_restart_from_a_failure() {
        let gone = StoreFailure::answer::<GetRun>(Err(MailboxError::Closed)).unwrap_err();
        assert_eq!(gone.op, "get_run");
        assert!(gone.is_not_running(), "{gone}");
        assert!(gone.to_string().contains("get_run"), "{gone}");
        let closed = StoreFailure::answer::<GetRun>(Ok(Err(StoreError::NotOpen))).unwrap_err();
        assert!(closed.is_not_running());
        let failed =
            StoreFailure::answer::<GetRun>(Ok(Err(StoreError::Commit("disk full".into()))))
                .unwrap_err();
        assert!(!failed.is_not_running() && !failed.is_internal());
        assert!(failed.to_string().contains("disk full"), "{failed}");
        let bug = StoreFailure::lookup::<GetRun>(LookupError::WrongType {
            id: "store".into(),
            expected: "X",
        });
        assert!(bug.is_internal());
    }
}
