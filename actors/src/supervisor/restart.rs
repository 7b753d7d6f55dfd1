//! Restarts that never overlap instances (OTP's rule): the children to restart are stopped
//! one at a time in reverse start order, each awaited until it exits or its shutdown timeout
//! passes (then killed), and only then started again in start order. Temporary children
//! are stopped but never restarted.

use actix::prelude::*;

use super::{ChildId, Happened, NodeState, Restart, SupervisorActor, announce};
use crate::messages::Shutdown;

impl SupervisorActor {
    /// Restarts `group` (in start order); a member already down is only started again.
    pub(super) fn restart_group(&mut self, group: Vec<ChildId>, ctx: &mut Context<Self>) {
        for id in &group {
            let Some(child) = self.children.get_mut(id) else {
                continue;
            };
            if child.handle.is_some() {
                child.stopping = true;
                if !self.stop_queue.contains(id) && self.current_stop.as_ref() != Some(id) {
                    self.stop_queue.push_back(id.clone());
                }
            }
            if child.spec.restart == Restart::Temporary {
                continue;
            }
            child.restarts += 1;
            child.state = NodeState::Restarting;
            if !self.start_queue.contains(id) {
                self.start_queue.push(id.clone());
            }
        }
        // Newest first: reverse start order.
        let order = &self.order;
        self.stop_queue.make_contiguous().sort_by_key(|id| {
            std::cmp::Reverse(order.iter().position(|c| c == id).unwrap_or(usize::MAX))
        });
        self.stop_next(ctx);
    }

    /// Asks the next child in the stop queue to stop, or starts the queued children when
    /// nothing is left to stop.
    pub(super) fn stop_next(&mut self, ctx: &mut Context<Self>) {
        if self.current_stop.is_some() {
            return;
        }
        while let Some(id) = self.stop_queue.pop_front() {
            let Some(child) = self.children.get_mut(&id) else {
                continue;
            };
            let Some(handle) = child.handle.as_ref().filter(|_| child.stopping) else {
                child.stopping = false;
                continue;
            };
            handle.shutdown.do_send(Shutdown);
            child.watch = None;
            child.ping_sent = None;
            let generation = child.generation;
            let timeout = child.spec.shutdown;
            tracing::debug!(supervisor = %self.config.id, child = %id, "stopping before restart");
            self.current_stop = Some(id.clone());
            ctx.run_later(timeout, move |act, ctx| {
                act.stop_timed_out(id, generation, ctx)
            });
            return;
        }
        self.start_queued(ctx);
    }

    /// A child asked to stop has exited: release it and go on with the plan.
    pub(super) fn stop_done(&mut self, id: &ChildId, ctx: &mut Context<Self>) {
        let mut replaced = false;
        if let Some(child) = self.children.get_mut(id) {
            child.stopping = false;
            child.started_at = None;
            if let Some(arbiter) = child.handle.take().and_then(|h| h.arbiter) {
                arbiter.stop();
            }
            self.roster.remove(id);
            if let Some(spec) = self.replacements.remove(id) {
                // Replaced by a config change: the new spec starts at once, no backoff.
                child.spec = spec;
                child.restarts += 1;
                child.backoff_attempt = 0;
                child.next_attempt_at = None;
                replaced = true;
            } else if child.spec.restart == Restart::Temporary {
                if !child.adopted {
                    announce(&self.config.id, id, Happened::Removed, child);
                }
                self.children.remove(id);
                self.order.retain(|c| c != id);
            }
        }
        self.stop_queue.retain(|c| c != id);
        if self.current_stop.as_ref() == Some(id) {
            self.current_stop = None;
        }
        if replaced && !self.shutting_down {
            self.start_child(id, ctx);
        }
        self.stop_next(ctx);
    }

    fn stop_timed_out(&mut self, id: ChildId, generation: u64, ctx: &mut Context<Self>) {
        let still = self
            .children
            .get(&id)
            .is_some_and(|c| c.stopping && c.generation == generation);
        if !still {
            return;
        }
        tracing::warn!(supervisor = %self.config.id, child = %id, "did not stop within its shutdown timeout; killing");
        self.kill(&id);
        self.stop_done(&id, ctx);
    }

    /// Starts, in start order, the children waiting for the stops to finish.
    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        if self.current_stop.is_some() || !self.stop_queue.is_empty() || self.shutting_down {
            return;
        }
        let queued = std::mem::take(&mut self.start_queue);
        for id in self.order.clone() {
            let waiting = queued.contains(&id)
                && self
                    .children
                    .get(&id)
                    .is_some_and(|c| c.state == NodeState::Restarting && c.handle.is_none());
            if waiting {
                self.begin_start(&id, ctx);
            }
        }
    }
}
