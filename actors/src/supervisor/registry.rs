//! Registry pushes: a caller that keeps using a child across its restarts sends
//! [`WatchChild`] once and is told the child's address at once if it runs
//! ([`ChildStarted`]), and again on every (re)start, until the watcher is gone. Nobody
//! polls the registry or sleeps waiting for a restart.
//!
//! A watch names a child anywhere below the supervisor it is sent to: a supervisor that
//! does not own the id passes it to its subtrees, remembers which one took it, and passes
//! it again to that subtree's new instance when it is restarted (a new supervisor has
//! forgotten its watches).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::{ChildId, CommandError, LookupError, NodeState, SupervisorActor, downcast};

/// A watched child (re)started: its new address.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ChildStarted {
    /// The child's id.
    pub id: ChildId,
    /// Which start of it (increasing within its supervisor).
    pub generation: u64,
    /// Its address (see [`ChildStarted::addr`]).
    pub addr: Arc<dyn Any + Send + Sync>,
}

impl ChildStarted {
    /// The address as an `Addr<A>`. A child of another actor type is a bug (two ids mixed
    /// up): [`LookupError::WrongType`], logged, never a silent "not running".
    pub fn addr<A: Actor>(&self) -> Result<Addr<A>, LookupError> {
        downcast::<A>(&self.id.0, &self.addr)
    }
}

impl std::fmt::Debug for ChildStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildStarted")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Watches a child: [`ChildStarted`] goes to `watcher` now if the child runs, and on each
/// of its (re)starts, for as long as `watcher` is alive. Answers `NotFound` when no child
/// of that id is in the subtree, `Unavailable` when a subtree that may hold it is itself
/// restarting (ask again once it runs).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), CommandError>")]
pub struct WatchChild {
    /// The child's id.
    pub id: ChildId,
    /// Where its addresses go.
    pub watcher: Recipient<ChildStarted>,
}

/// The watchers of one child id, pruned of dead ones as the list grows (amortized, so a
/// watch costs O(1) however many connections come and go).
#[derive(Default)]
pub(super) struct Watchers {
    list: Vec<Recipient<ChildStarted>>,
    prune_at: usize,
}

impl Watchers {
    fn add(&mut self, watcher: Recipient<ChildStarted>) {
        if self.list.len() >= self.prune_at {
            self.list.retain(Recipient::connected);
            self.prune_at = (self.list.len() * 2).max(16);
        }
        self.list.push(watcher);
    }

    /// Tells every live watcher; drops the dead ones.
    fn push(&mut self, started: &ChildStarted) {
        self.list.retain(|w| {
            if !w.connected() {
                return false;
            }
            w.do_send(started.clone());
            true
        });
    }

    /// Live watchers (the dead ones are counted until the next push or prune).
    #[cfg(test)]
    pub(super) fn live(&self) -> usize {
        self.list.iter().filter(|w| w.connected()).count()
    }
}

/// What a supervisor keeps for the registry pushes.
#[derive(Default)]
pub(super) struct Registry {
    /// Watchers of this supervisor's own children, by child id (kept when the child is
    /// removed: a child added again under the same id is pushed to them too).
    pub watchers: HashMap<ChildId, Watchers>,
    /// Watches passed to a child supervisor, by that child's id: passed again to its new
    /// instance on each restart.
    pub forwarded: HashMap<ChildId, Vec<WatchChild>>,
}

impl Registry {
    /// Child `id` started as `generation` with `addr` (a supervisor: `subtree`): push its
    /// address to its watchers and hand a new subtree the watches its predecessor held.
    pub fn started(
        &mut self,
        id: &ChildId,
        generation: u64,
        addr: &Arc<dyn Any + Send + Sync>,
        subtree: Option<&Addr<SupervisorActor>>,
    ) {
        if let Some(watchers) = self.watchers.get_mut(id) {
            watchers.push(&ChildStarted {
                id: id.clone(),
                generation,
                addr: addr.clone(),
            });
            if watchers.list.is_empty() {
                self.watchers.remove(id);
            }
        }
        if let Some(subtree) = subtree
            && let Some(watches) = self.forwarded.get_mut(id)
        {
            watches.retain(|w| w.watcher.connected());
            for watch in watches.iter() {
                subtree.do_send(watch.clone());
            }
            if watches.is_empty() {
                self.forwarded.remove(id);
            }
        }
    }
}

impl Handler<WatchChild> for SupervisorActor {
    type Result = ResponseActFuture<Self, Result<(), CommandError>>;

    fn handle(&mut self, msg: WatchChild, _: &mut Self::Context) -> Self::Result {
        if let Some(child) = self.children.get(&msg.id) {
            // A child asked to stop is not announced: its next instance will be.
            if child.state == NodeState::Running
                && self.current_stop.as_ref() != Some(&msg.id)
                && let Some(handle) = child.handle.as_ref()
            {
                msg.watcher.do_send(ChildStarted {
                    id: msg.id.clone(),
                    generation: child.generation,
                    addr: handle.addr.clone(),
                });
            }
            self.registry
                .watchers
                .entry(msg.id)
                .or_default()
                .add(msg.watcher);
            return Box::pin(fut::ready(Ok(())));
        }
        // Not one of ours: ask the subtrees in start order; the first that has it keeps it.
        let subs: Vec<(ChildId, u64, Addr<SupervisorActor>)> = self
            .order
            .iter()
            .filter_map(|id| self.children.get(id).map(|c| (id, c)))
            .filter_map(|(id, c)| {
                let sub = c.handle.as_ref()?.subtree.clone()?;
                Some((id.clone(), c.generation, sub))
            })
            .collect();
        let timeout = self
            .config
            .hang_timeout
            .max(super::handlers::SUBTREE_REPLY_MIN);
        let ask = msg.clone();
        let placed = async move {
            let mut unreachable = false;
            for (sub_id, generation, sub) in subs {
                match tokio::time::timeout(timeout, sub.send(ask.clone())).await {
                    Ok(Ok(Ok(()))) => return Ok((sub_id, generation)),
                    Ok(Ok(Err(CommandError::NotFound(_)))) => continue,
                    Ok(Ok(Err(e))) => return Err(e),
                    Ok(Err(_)) | Err(_) => unreachable = true,
                }
            }
            if unreachable {
                return Err(CommandError::Unavailable(
                    ask.id.to_string(),
                    NodeState::Restarting,
                ));
            }
            Err(CommandError::NotFound(ask.id.to_string()))
        };
        Box::pin(placed.into_actor(self).map(move |placed, act, _| {
            let (sub_id, generation) = placed?;
            // Restarted while it was asked: its new instance has not seen this watch.
            if let Some(child) = act.children.get(&sub_id)
                && child.generation != generation
                && let Some(sub) = child.handle.as_ref().and_then(|h| h.subtree.as_ref())
            {
                sub.do_send(msg.clone());
            }
            act.registry.forwarded.entry(sub_id).or_default().push(msg);
            Ok(())
        }))
    }
}

/// Counts the live watchers of a child of the receiving supervisor (tests).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "usize")]
pub(super) struct CountWatchers(pub ChildId);

#[cfg(test)]
impl Handler<CountWatchers> for SupervisorActor {
    type Result = usize;
    fn handle(&mut self, msg: CountWatchers, _: &mut Self::Context) -> usize {
        self.registry.watchers.get(&msg.0).map_or(0, Watchers::live)
    }
}
