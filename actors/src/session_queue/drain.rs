//! Graceful stop of the session-queue ([`DrainRuns`]): refuse new work, start nothing new,
//! let running turns finish (their finals reach the clients, still connected), abort what
//! outlives the grace period with a reason that says so, and answer once every run's end is
//! stored. Waiting turns stay queued in the store and run after the next start.

use std::collections::HashMap;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{DrainReport, DrainRuns, SessionQueueActor};
use crate::messages::{RunId, SessionKey};

/// Why a run aborted by the drain ended.
const STOPPED: &str = "aborted: the gateway stopped before this run finished";

/// The drain in progress.
#[derive(Default)]
pub(super) struct Drain {
    /// Runs aborted at the end of the grace period, with the reason to record.
    pub aborted: HashMap<RunId, &'static str>,
    done: Vec<oneshot::Sender<()>>,
}

impl SessionQueueActor {
    /// Answers the drain once no run is in progress.
    pub(super) fn check_drained(&mut self) {
        if self.active_runs == 0
            && let Some(drain) = self.draining.as_mut()
        {
            for done in drain.done.drain(..) {
                let _ = done.send(());
            }
        }
    }

    fn waiting_turns(&self) -> usize {
        self.lanes.values().map(|l| l.waiting.len()).sum()
    }
}

impl Handler<DrainRuns> for SessionQueueActor {
    type Result = ResponseActFuture<Self, DrainReport>;
    fn handle(&mut self, msg: DrainRuns, ctx: &mut Self::Context) -> Self::Result {
        let running = self.active_runs;
        tracing::info!(
            running,
            queued = self.waiting_turns(),
            "draining: waiting for running turns"
        );
        let (tx, rx) = oneshot::channel();
        self.draining
            .get_or_insert_with(Drain::default)
            .done
            .push(tx);
        self.check_drained();
        ctx.run_later(msg.grace, |act, _| {
            let keys: Vec<SessionKey> = act.lanes.keys().cloned().collect();
            for key in keys {
                if let Some(run_id) = act.abort_active(&key, None)
                    && let Some(drain) = act.draining.as_mut()
                {
                    tracing::warn!(run_id = %run_id, "drain: run outlived the grace period; aborting");
                    drain.aborted.insert(run_id, STOPPED);
                }
            }
        });
        Box::pin(
            async move { rx.await.is_ok() }
                .into_actor(self)
                .map(move |_, act, _| DrainReport {
                    running,
                    aborted: act.draining.as_ref().map_or(0, |d| d.aborted.len()),
                    queued: act.waiting_turns(),
                }),
        )
    }
}
