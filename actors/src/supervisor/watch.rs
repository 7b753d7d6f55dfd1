//! The periodic check of children: a child whose progress counter has not moved for the
//! hang timeout is killed (with its subtree) and restarted; killed children are watched
//! until they are gone, and those that never go (a handler blocking its thread cannot be
//! stopped from outside in Rust) are counted in the status tree as `unstoppable`.

use std::time::Instant;

use actix::prelude::*;

use super::{ExitReason, NodeState, SupervisorActor};
use crate::messages::{Ping, Pong};

impl SupervisorActor {
    /// One round: hang verdicts, mailbox depth asks, zombie accounting.
    pub(super) fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let hang_timeout = self.config.hang_timeout;
        let mut hung = Vec::new();
        let mut pings = Vec::new();
        for (id, child) in self.children.iter_mut() {
            if child.state != NodeState::Running || child.stopping {
                continue;
            }
            let Some(handle) = child.handle.as_ref() else {
                continue;
            };
            if child.spec.liveness
                && let Some(watch) = child.watch.as_mut()
                && let Some(stalled) = watch.stalled(now, hang_timeout)
            {
                hung.push((id.clone(), stalled));
                continue;
            }
            if !child.adopted && child.ping_sent.is_none() {
                child.ping_sent = Some(now);
                pings.push((id.clone(), child.generation, handle.ping.send(Ping)));
            }
        }
        for (id, generation, pong) in pings {
            ctx.spawn(pong.into_actor(self).map(move |res, act, _| {
                if let Some(child) = act.children.get_mut(&id)
                    && child.generation == generation
                {
                    child.ping_sent = None;
                    if let Ok(Pong { mailbox }) = res {
                        child.mailbox = mailbox;
                    }
                }
            }));
        }
        for (id, stalled) in hung {
            let message = format!(
                "hung: no progress for {} ms (hang timeout {} ms); killed",
                stalled.as_millis(),
                hang_timeout.as_millis()
            );
            tracing::error!(supervisor = %self.config.id, child = %id, %message, "child hung");
            self.kill(&id);
            self.child_exited(id, ExitReason::Error, Some(message), ctx);
        }
        self.account_zombies(now);
    }

    fn account_zombies(&mut self, now: Instant) {
        let me = self.config.id.clone();
        self.zombies.retain_mut(|z| {
            if z.handle.gone() {
                if z.counted {
                    tracing::warn!(supervisor = %me, child = %z.id, "an unstoppable child finally stopped");
                }
                return false;
            }
            if !z.counted && now >= z.deadline {
                z.counted = true;
                tracing::error!(
                    supervisor = %me, child = %z.id,
                    "a killed child is still running: a handler is blocking its thread, which cannot be stopped from outside; it leaks until the process exits"
                );
            }
            true
        });
    }
}
