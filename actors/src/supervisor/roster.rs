//! The kill switches of a supervisor's children, shared with its parent, so a parent can
//! stop a hung child supervisor's whole subtree without messaging it (a supervisor whose
//! thread is blocked never runs its drop). Only what killing needs is shared: addresses,
//! arbiter and task handles, never the supervisor's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::{ArbiterHandle, Recipient};

use super::spec::{ChildHandle, ChildId};
use crate::messages::Shutdown;

/// What it takes to kill one child and, through its own roster, everything below it.
#[derive(Clone)]
struct Killer {
    shutdown: Recipient<Shutdown>,
    arbiter: Option<ArbiterHandle>,
    abort: Option<tokio::task::AbortHandle>,
    on_kill: Option<Arc<dyn Fn() + Send + Sync>>,
    below: Roster,
}

/// The kill switches of one supervisor's running children (empty for a leaf actor).
#[derive(Clone, Default)]
pub struct Roster(Arc<Mutex<HashMap<ChildId, Killer>>>);

impl Roster {
    /// Records a running child and the roster of its own children.
    pub(super) fn insert(&self, id: &ChildId, handle: &ChildHandle, below: &Roster) {
        let killer = Killer {
            shutdown: handle.shutdown.clone(),
            arbiter: handle.arbiter.clone(),
            abort: handle.abort.clone(),
            on_kill: handle.on_kill.clone(),
            below: below.clone(),
        };
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.clone(), killer);
        }
    }

    /// Forgets a child that is down.
    pub(super) fn remove(&self, id: &ChildId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }

    /// Kills every child listed, and their subtrees, without waiting for anything.
    pub fn kill_all(&self) {
        let killers: Vec<Killer> = match self.0.lock() {
            Ok(mut map) => map.drain().map(|(_, k)| k).collect(),
            Err(_) => Vec::new(),
        };
        for k in killers {
            let _ = k.shutdown.try_send(Shutdown);
            if let Some(release) = &k.on_kill {
                release();
            }
            if let Some(arbiter) = &k.arbiter {
                arbiter.stop();
            }
            if let Some(abort) = &k.abort {
                abort.abort();
            }
            k.below.kill_all();
        }
    }

    /// How many children are listed.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no child is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
