//! Per-chat FIFO lanes of a channel actor, shared by every platform: each chat runs one
//! job at a time (answer a journaled message, or send an owed delivery), in order. What
//! differs per platform is only how a reply is sent and how typing is shown ([`Outbox`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use super::ChannelError;
use super::inbound_files::{self, FetchError};
use super::journal::{self, Route};
use super::settled::{self, DeliveryOutcome};
use crate::store::channels::{DeliveryRecord, InboundFile, InboundRecord, MarkFailed, MarkSent};

/// One unit of work of a chat, run in order.
pub enum Job {
    /// Send an owed delivery.
    Send(DeliveryRecord),
    /// Run the turn of a journaled message and send its reply.
    Answer(InboundRecord),
}

#[derive(Default)]
struct Lane {
    jobs: VecDeque<Job>,
    busy: bool,
}

/// The lanes of one account, by chat id.
#[derive(Default)]
pub struct ChatLanes {
    lanes: HashMap<String, Lane>,
}

impl ChatLanes {
    /// Queues a job behind the chat's others.
    pub fn enqueue(&mut self, chat: String, job: Job) {
        self.lanes.entry(chat).or_default().jobs.push_back(job);
    }

    /// The chats with a lane.
    pub fn chats(&self) -> Vec<String> {
        self.lanes.keys().cloned().collect()
    }

    /// The chat's next job, marked running; `None` while one runs or when nothing waits
    /// (an idle lane is dropped).
    pub fn start_next(&mut self, chat: &str) -> Option<Job> {
        let lane = self.lanes.get_mut(chat)?;
        if lane.busy {
            return None;
        }
        let Some(job) = lane.jobs.pop_front() else {
            self.lanes.remove(chat);
            return None;
        };
        lane.busy = true;
        Some(job)
    }

    /// The chat's running job is over.
    pub fn finished(&mut self, chat: &str) {
        if let Some(lane) = self.lanes.get_mut(chat) {
            lane.busy = false;
        }
    }

    /// Jobs waiting or running, in all chats.
    pub fn queued(&self) -> usize {
        self.lanes
            .values()
            .map(|l| l.jobs.len() + usize::from(l.busy))
            .sum()
    }
}

/// How a platform sends a reply's parts and shows that a turn is running.
pub trait Outbox: Clone + 'static {
    /// The platform's name in logs (`telegram`, `discord`).
    const PLATFORM: &'static str;
    /// Sends one part; returns the platform's message id. `Refused` means for good (the
    /// part is marked failed and skipped); any other error leaves it pending.
    fn send_part(
        &self,
        part: &DeliveryRecord,
    ) -> impl Future<Output = Result<String, ChannelError>>;
    /// Shows "typing" in a chat until dropped.
    fn typing(&self, chat_id: &str) -> impl Future<Output = ()>;
    /// Downloads a file a user sent, reading no more than `max_bytes` of it.
    fn fetch(
        &self,
        file: &InboundFile,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Vec<u8>, FetchError>>;
}

/// Sends deliveries in order, each marked sent with the platform's message id right after
/// it went out (and its outcome pushed to whoever waits on it, see [`settled`]); returns
/// how many went out. A part the platform refuses for good is marked
/// failed and skipped; a network failure stops here with the rest still pending.
pub async fn deliver<O: Outbox>(
    outbox: &O,
    route: &Route,
    parts: Vec<DeliveryRecord>,
) -> Result<usize, ChannelError> {
    let mut sent = 0;
    for d in parts {
        let outcome = outbox.send_part(&d).await;
        let id = d.id;
        let (result, settled) = match outcome {
            Ok(message_id) => {
                sent += 1;
                let mark = MarkSent {
                    id,
                    platform_id: message_id.clone(),
                };
                let outcome = DeliveryOutcome::Sent {
                    platform_id: message_id,
                };
                (super::ask_store(&route.root, mark).await, outcome)
            }
            Err(ChannelError::Refused(why)) => {
                tracing::warn!(platform = O::PLATFORM, chat_id = %d.chat_id, error = %why, "a reply was refused; dropping it");
                let outcome = DeliveryOutcome::Failed { error: why.clone() };
                let mark = MarkFailed { id, error: why };
                (super::ask_store(&route.root, mark).await, outcome)
            }
            Err(e) => return Err(e),
        };
        result?;
        settled::publish(id, settled);
    }
    Ok(sent)
}

/// Runs one job: sends an owed delivery, or answers a message (typing meanwhile: its
/// files are downloaded first, see [`inbound_files`]) and sends the reply. Returns how
/// many messages went out.
pub async fn run<O: Outbox>(outbox: O, route: Route, job: Job) -> Result<usize, ChannelError> {
    match job {
        Job::Send(d) => deliver(&outbox, &route, vec![d]).await,
        Job::Answer(m) => {
            let chat = m.chat_id.clone();
            let answered = tokio::select! {
                answered = async {
                    let m = inbound_files::resolve(&outbox, &route, m).await?;
                    journal::answer(&route, &m).await
                } => answered,
                _ = outbox.typing(&chat) => Err(ChannelError::Unreachable("typing loop ended".into())),
            };
            deliver(&outbox, &route, answered?).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(id: i64) -> Job {
        Job::Send(DeliveryRecord {
            id,
            chat_id: "c".into(),
            inbound_id: None,
            part: 0,
            text: String::new(),
            attachment: None,
        })
    }

    fn id(job: Job) -> i64 {
        match job {
            Job::Send(d) => d.id,
            Job::Answer(m) => m.id,
        }
    }

    #[test]
    fn a_chat_runs_one_job_at_a_time_in_order_and_idle_lanes_go() {
        let mut lanes = ChatLanes::default();
        lanes.enqueue("c".into(), send(1));
        lanes.enqueue("c".into(), send(2));
        lanes.enqueue("d".into(), send(3));
        assert_eq!(lanes.start_next("c").map(id), Some(1));
        assert!(lanes.start_next("c").is_none(), "one at a time");
        assert_eq!(lanes.start_next("d").map(id), Some(3));
        assert_eq!(lanes.queued(), 3);
        lanes.finished("c");
        assert_eq!(lanes.start_next("c").map(id), Some(2));
        lanes.finished("c");
        assert!(lanes.start_next("c").is_none());
        assert_eq!(lanes.chats(), ["d"]);
    }
}
