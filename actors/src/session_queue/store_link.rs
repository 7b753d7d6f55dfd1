//! The queue's link to the store: the registry pushes the address of each new store
//! instance here the moment it starts ([`WatchChild`]), so writes after a store restart go
//! to the new instance without polling for it.

use actix::prelude::*;

use super::SessionQueueActor;
use crate::store::StoreActor;
use crate::supervisor::{ChildId, ChildStarted, WatchChild};

impl SessionQueueActor {
    /// Asks the registry to push the store's address now and on each of its (re)starts.
    pub(super) fn watch_store(&self, ctx: &mut Context<Self>) {
        let watch = WatchChild {
            id: ChildId::new("store"),
            watcher: ctx.address().recipient(),
        };
        ctx.spawn(
            self.root
                .send(watch)
                .into_actor(self)
                .map(|answer, _, _| match answer {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot watch the store"),
                    Err(e) => {
                        tracing::error!(error = %e, "the supervisor did not take the store watch")
                    }
                }),
        );
    }
}

impl Handler<ChildStarted> for SessionQueueActor {
    type Result = ();
    fn handle(&mut self, msg: ChildStarted, _: &mut Self::Context) {
        // A store registered under another type is a bug: logged by the registry, and the
        // address is not used.
        if let Ok(store) = msg.addr::<StoreActor>() {
            self.store = Some(store);
        }
    }
}
