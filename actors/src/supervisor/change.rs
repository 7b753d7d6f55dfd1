//! Children added, replaced and removed while the supervisor runs (config hot reload): a
//! replaced child is stopped like a restart (awaited, killed past its shutdown timeout)
//! and started again from its new spec; a removed one is stopped and leaves the tree; a
//! spec can also be swapped for the next (re)start without touching the running child.

use actix::prelude::*;

use super::{Child, ChildId, ExitReason, Happened, NodeState, announce};
use super::{ChildSpec, LastExit, Restart, SupervisorActor};
use crate::now_ms;

/// One change to a supervisor's children.
pub enum SpecChange {
    /// Start this child; one with the same id is stopped first and replaced.
    Start(ChildSpec),
    /// Stop the child with this id and remove it from the tree.
    Remove(ChildId),
    /// Use this spec at the child's next (re)start; the running instance is left alone.
    Keep(ChildSpec),
}

impl SpecChange {
    /// The id of the child this change concerns.
    pub fn id(&self) -> &ChildId {
        match self {
            Self::Start(spec) | Self::Keep(spec) => &spec.id,
            Self::Remove(id) => id,
        }
    }
}

/// Applies changes to the receiving supervisor's own children, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChangeChildren {
    /// The changes.
    pub changes: Vec<SpecChange>,
}

impl Handler<ChangeChildren> for SupervisorActor {
    type Result = ();
    fn handle(&mut self, msg: ChangeChildren, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        for change in msg.changes {
            match change {
                SpecChange::Start(spec) => self.replace_child(spec, ctx),
                SpecChange::Remove(id) => self.remove_child(&id, ctx),
                SpecChange::Keep(spec) => {
                    if let Some(child) = self.children.get_mut(&spec.id) {
                        child.spec = spec;
                    }
                }
            }
        }
    }
}

impl SupervisorActor {
    /// Starts `spec` as a new child, or stops the running child of that id first.
    fn replace_child(&mut self, spec: ChildSpec, ctx: &mut Context<Self>) {
        let id = spec.id.clone();
        tracing::info!(supervisor = %self.config.id, child = %id, "config changed: (re)starting child");
        let Some(child) = self.children.get_mut(&id) else {
            self.order.push(id.clone());
            self.children.insert(id.clone(), Child::new(spec));
            self.start_child(&id, ctx);
            return;
        };
        child.last_exit = Some(LastExit {
            reason: ExitReason::Normal,
            message: Some("replaced: its configuration changed".into()),
            at: now_ms(),
        });
        if child.handle.is_none() {
            // Down (backoff, failed, stopped): nothing to stop, start the new spec now.
            child.spec = spec;
            child.restarts += 1;
            child.backoff_attempt = 0;
            child.next_attempt_at = None;
            self.start_child(&id, ctx);
            return;
        }
        self.replacements.insert(id.clone(), spec);
        self.stop_for_change(&id, ctx);
    }

    /// Stops a child and removes it from the tree.
    fn remove_child(&mut self, id: &ChildId, ctx: &mut Context<Self>) {
        self.replacements.remove(id);
        let Some(child) = self.children.get_mut(id) else {
            return;
        };
        tracing::info!(supervisor = %self.config.id, child = %id, "config changed: removing child");
        if child.handle.is_none() {
            announce(&self.config.id, id, Happened::Removed, child);
            self.children.remove(id);
            self.order.retain(|c| c != id);
            self.roster.remove(id);
            return;
        }
        // Stopped like a temporary child: it leaves the tree once it has exited.
        child.spec.restart = Restart::Temporary;
        self.stop_for_change(id, ctx);
    }

    /// Stops a running child through the restart plan without queueing a start of it.
    fn stop_for_change(&mut self, id: &ChildId, ctx: &mut Context<Self>) {
        if let Some(child) = self.children.get_mut(id) {
            child.stopping = true;
            child.state = NodeState::Restarting;
            if !self.stop_queue.contains(id) && self.current_stop.as_ref() != Some(id) {
                self.stop_queue.push_back(id.clone());
            }
        }
        self.start_queue.retain(|c| c != id);
        self.stop_next(ctx);
    }
}
