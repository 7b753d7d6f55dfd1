//! The addresses a fire needs (the store, the session queue), looked up once through the
//! root supervisor and again only when the cached one is gone (its actor restarted): at
//! ten thousand fires a second, a lookup per fire would be ten thousand messages to the
//! root a second.

use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;

use crate::session_queue::SessionQueueActor;
use crate::store::{StoreActor, StoreFailure, StoreOp};
use crate::supervisor::{LookupError, SupervisorActor, lookup_patiently};

/// One child's address, cached (cheap to clone; clones share the cache).
pub struct Link<A: Actor> {
    root: Addr<SupervisorActor>,
    id: &'static str,
    cached: Arc<Mutex<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for Link<A> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            id: self.id,
            cached: self.cached.clone(),
        }
    }
}

impl<A: Actor> Link<A> {
    /// The child `id` of `root`, not looked up yet.
    pub fn new(root: Addr<SupervisorActor>, id: &'static str) -> Self {
        Self {
            root,
            id,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The cached address while its actor runs, else a fresh lookup (retried for a few
    /// seconds while the child restarts).
    pub async fn get(&self) -> Result<Addr<A>, LookupError> {
        let cached = self
            .cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(addr) = cached.filter(Addr::connected) {
            return Ok(addr);
        }
        let addr = lookup_patiently::<A>(&self.root, self.id).await?;
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr.clone());
        Ok(addr)
    }

    /// Drops the cached address (a send to it failed), so the next use looks it up again.
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The links of the scheduler's fires.
#[derive(Clone)]
pub struct Links {
    /// The store.
    pub store: Link<StoreActor>,
    /// The session queue.
    pub queue: Link<SessionQueueActor>,
}

impl Links {
    /// Links under `root`, not looked up yet.
    pub fn new(root: &Addr<SupervisorActor>) -> Self {
        Self {
            store: Link::new(root.clone(), "store"),
            queue: Link::new(root.clone(), "session-queue"),
        }
    }

    /// Runs an operation on the store; a failure names the operation and says whether the
    /// store was only restarting.
    pub async fn store_op<O: StoreOp>(&self, op: O) -> Result<O::Output, StoreFailure> {
        let store = self.store.get().await.map_err(StoreFailure::lookup::<O>)?;
        let sent = store.send(op).await;
        if sent.is_err() {
            self.store.forget();
        }
        StoreFailure::answer::<O>(sent)
    }
}
