//! Where a delivery's outcome is pushed as soon as the platform answered: the channel
//! actor that sent (or gave up on) a delivery publishes it here right after the store
//! marked it, and a waiter registered for that delivery id (WS `send`) wakes at once
//! instead of asking the store in a loop. Nothing is kept for ids nobody waits on, so a
//! waiter registers before it reads the store (an outcome between the two is not lost).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc;

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The platform took it; its message id.
    Sent {
        /// The platform's message id.
        platform_id: String,
    },
    /// The platform refused it for good.
    Failed {
        /// What the platform said.
        error: String,
    },
}

/// A delivery's outcome, as pushed to its waiters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettled {
    /// The delivery id.
    pub id: i64,
    /// How it ended.
    pub outcome: DeliveryOutcome,
}

type Waiters = HashMap<i64, Vec<mpsc::UnboundedSender<DeliverySettled>>>;

fn waiters() -> &'static Mutex<Waiters> {
    static WAITERS: OnceLock<Mutex<Waiters>> = OnceLock::new();
    WAITERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Pushes `id`'s outcome to whoever waits on it (nothing happens when nobody does).
pub fn publish(id: i64, outcome: DeliveryOutcome) {
    let senders = waiters()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    for tx in senders.into_iter().flatten() {
        let _ = tx.send(DeliverySettled {
            id,
            outcome: outcome.clone(),
        });
    }
}

/// Outcomes of a set of deliveries as they are published; unregisters on drop.
pub struct SettleWatch {
    ids: Vec<i64>,
    rx: mpsc::UnboundedReceiver<DeliverySettled>,
}

/// Starts listening for the outcomes of `ids` (before the store is read).
pub fn watch(ids: &[i64]) -> SettleWatch {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut map = waiters().lock().unwrap_or_else(PoisonError::into_inner);
    for id in ids {
        map.entry(*id).or_default().push(tx.clone());
    }
    SettleWatch {
        ids: ids.to_vec(),
        rx,
    }
}

impl SettleWatch {
    /// Waits until every id in `pending` has been published, or `deadline`; returns the
    /// outcomes received (true in `.1` when all came).
    pub async fn until_settled(
        &mut self,
        pending: &[i64],
        deadline: Instant,
    ) -> (Vec<DeliverySettled>, bool) {
        let mut left: HashSet<i64> = pending.iter().copied().collect();
        let mut got = Vec::new();
        while !left.is_empty() {
            let next = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await;
            match next {
                Ok(Some(settled)) => {
                    left.remove(&settled.id);
                    got.push(settled);
                }
                Ok(None) | Err(_) => return (got, false),
            }
        }
        (got, true)
    }
}

impl Drop for SettleWatch {
    fn drop(&mut self) {
        self.rx.close();
        let mut map = waiters().lock().unwrap_or_else(PoisonError::into_inner);
        for id in &self.ids {
            if let Some(list) = map.get_mut(id) {
                list.retain(|tx| !tx.is_closed());
                if list.is_empty() {
                    map.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_published_outcome_wakes_its_waiter_and_drop_unregisters() {
        let mut w = watch(&[-101, -102]);
        publish(
            -101,
            DeliveryOutcome::Sent {
                platform_id: "7".into(),
            },
        );
        publish(-102, DeliveryOutcome::Failed { error: "no".into() });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (got, all) = w.until_settled(&[-101, -102], deadline).await;
        assert!(all);
        assert_eq!(got.len(), 2);
        let w2 = watch(&[-103]);
        drop(w2);
        assert!(!waiters().lock().unwrap().contains_key(&-103));
    }
}
