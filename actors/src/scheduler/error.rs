//! [`FireError`]: why a fire's turn (a cron job's, a heartbeat's, a webhook turn run again)
//! failed, typed as the store and the session queue report it. It stays typed until the
//! place it is written to the run ledger, sent in a `heartbeat` event or logged, where it
//! becomes text once (reading as these reasons always have), so the scheduler can tell a
//! failure worth retrying from a final one.

use std::time::Duration;

use actix::MailboxError;

use crate::messages::AgentId;
use crate::session_queue::QueueError;
use crate::store::StoreFailure;
use crate::supervisor::LookupError;

/// The shortest wait before a submission refused for a full lane or queue is tried again.
const MIN_RETRY: Duration = Duration::from_millis(100);

/// Why a fire's turn failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FireError {
    /// A store operation of the scheduler failed, or the store is restarting (which
    /// operation, and why).
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// The session queue refused the turn or the wait for it (a full lane or queue once the
    /// retries are spent, a stopping gateway, a store failure behind it, ...).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The session queue could not be found in the registry (restarting, or a bug).
    #[error("the session queue: {0}")]
    QueueLookup(LookupError),
    /// The session queue stopped before it answered.
    #[error("the session queue did not answer: {0}")]
    QueueGone(MailboxError),
    /// The job names an agent that is not configured (any more).
    #[error("agent {:?} is not configured", .0.as_str())]
    UnknownAgent(AgentId),
}

impl FireError {
    /// How long to wait before the same submission may be accepted: a full lane or queue
    /// (the queue's suggested wait, at least 100 ms). `None` for a final failure: the
    /// queue refused the turn for good, the store failed it, or a child is gone.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Queue(
                QueueError::LaneFull { retry_after_ms, .. }
                | QueueError::QueueFull { retry_after_ms, .. },
            ) => Some(Duration::from_millis(*retry_after_ms).max(MIN_RETRY)),
            _ => None,
        }
    }

    /// The store failure behind this one, if any (reported by the scheduler's own store
    /// operation or by the session queue's).
    pub fn store_failure(&self) -> Option<&StoreFailure> {
        match self {
            Self::Store(failure) | Self::Queue(QueueError::Store(failure)) => Some(failure),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::SessionKey;
    use crate::store::AcceptTurn;
    use crate::store::StoreError;
    use crate::store::cron::RecordCronRuns;

    /// The ledger's reasons read as the text errors the scheduler carried before, and a
    /// full queue (worth retrying, with its wait) is told from a final refusal.
    #[test]
    fn ledger_reasons_read_as_before_and_a_full_queue_is_retryable() {
        let lane = FireError::from(QueueError::LaneFull {
            session_key: SessionKey::from("cron:daily"),
            waiting: 8,
            retry_after_ms: 250,
        });
        assert_eq!(
            lane.to_string(),
            "session cron:daily has 8 turns waiting (the limit); retry later"
        );
        assert_eq!(lane.retry_after(), Some(Duration::from_millis(250)));
        let full = FireError::from(QueueError::QueueFull {
            waiting: 10_000,
            retry_after_ms: 0,
        });
        assert_eq!(
            full.to_string(),
            "10000 turns are waiting across all sessions (the limit); retry later"
        );
        assert_eq!(full.retry_after(), Some(MIN_RETRY), "never a busy loop");

        let stopping = FireError::from(QueueError::Stopping);
        assert_eq!(stopping.retry_after(), None);
        let unknown = FireError::UnknownAgent(AgentId::from("ghost"));
        assert_eq!(unknown.to_string(), "agent \"ghost\" is not configured");
        assert_eq!(unknown.retry_after(), None);
        let gone = FireError::QueueGone(MailboxError::Closed);
        assert!(
            gone.to_string()
                .starts_with("the session queue did not answer: "),
            "{gone}"
        );
    }

    /// A store failure keeps which operation failed and whether the store was only
    /// restarting, which the text alone lost; it is final for a fire either way.
    #[test]
    fn a_store_failure_keeps_its_operation_and_cause() {
        let restarting = FireError::from(StoreFailure::not_running::<RecordCronRuns>());
        let failure = restarting.store_failure().expect("a store failure");
        assert_eq!(failure.op, "cron_record_batch");
        assert!(failure.is_not_running());
        assert_eq!(
            restarting.to_string(),
            "store operation cron_record_batch failed: the store is not running (restarting)"
        );
        assert_eq!(restarting.retry_after(), None);

        let behind_queue = FireError::from(QueueError::Store(StoreFailure::backend::<AcceptTurn>(
            StoreError::Commit("disk full".into()),
        )));
        let failure = behind_queue
            .store_failure()
            .expect("the queue's store failure");
        assert_eq!(failure.op, "accept_turn");
        assert!(!failure.is_not_running() && !failure.is_internal());
        assert!(
            behind_queue.to_string().contains("disk full"),
            "{behind_queue}"
        );
        assert!(
            FireError::QueueGone(MailboxError::Timeout)
                .store_failure()
                .is_none()
        );
    }
}
