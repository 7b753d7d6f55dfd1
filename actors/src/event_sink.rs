//! [`EventSinkActor`]: carries the `chat` events of one run from the session queue into a
//! bounded channel, for edges that stream a reply outside an actor (the OpenAI-compatible
//! SSE endpoint).
//!
//! It is subscribed to the run's session before the turn is submitted (so no delta is
//! missed) and learns its run id only once the queue has accepted the turn
//! ([`TrackRun`]); events that arrive before that are kept (bounded) and sorted out then.
//! It stops, and unsubscribes from the queue, when the run ends, when the receiver is
//! dropped (the HTTP client went away; the run itself goes on and is stored), or when the
//! receiver falls [`CHANNEL_CAPACITY`] events behind (dropping the sender tells the reader
//! the stream broke).
//!
//! A run can end without a `chat` event (a queued turn dropped by an interrupt, a reset
//! or `chat.abort`; a duplicate idempotency key whose run already finished), so the sink
//! also waits for the run through [`WaitRun`] and, if no terminal event came first,
//! forwards one made from the run's summary.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use tokio::sync::mpsc;

use crate::messages::{RunEvent, RunId, SessionEvent};
use crate::session_queue::{QueueError, RunSummary, Unsubscribe, WaitRun};

/// Events a reader may fall behind by before the sink gives up on it.
pub const CHANNEL_CAPACITY: usize = 512;

/// Events kept while the run id is not known yet (older ones are dropped first).
const EARLY_LIMIT: usize = 1024;

/// How long the sink waits for its run to end through [`WaitRun`].
const RUN_WAIT: Duration = Duration::from_secs(3600);

/// Tells the sink which run to forward (the `runId` from the queue's acceptance).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TrackRun {
    /// The run whose events go to the channel.
    pub run_id: RunId,
}

/// What the sink passes on: the run's text as it streams, then how it ended.
#[derive(Debug, Clone)]
pub enum RunStream {
    /// More reply text.
    Delta(Arc<str>),
    /// The run's end (`ok`, `coalesced`, `error`, `aborted`), with its reply or error.
    End(Arc<RunSummary>),
}

/// Forwards one run's text deltas and its end into a bounded channel.
pub struct EventSinkActor {
    conn_id: String,
    run_id: Option<RunId>,
    early: VecDeque<SessionEvent>,
    tx: mpsc::Sender<RunStream>,
    unsubscribe: Recipient<Unsubscribe>,
    wait: Recipient<WaitRun>,
    done: bool,
}

impl EventSinkActor {
    /// A sink subscribed as `conn_id`, and the receiving end of its channel.
    ///
    /// `unsubscribe` and `wait` are the session queue's recipients. Start the actor, pass
    /// `(conn_id, addr.recipient())` as the `subscriber` of the `SubmitTurn`, then send
    /// [`TrackRun`] with the accepted run id.
    pub fn new(
        conn_id: impl Into<String>,
        unsubscribe: Recipient<Unsubscribe>,
        wait: Recipient<WaitRun>,
    ) -> (Self, mpsc::Receiver<RunStream>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let sink = Self {
            conn_id: conn_id.into(),
            run_id: None,
            early: VecDeque::new(),
            tx,
            unsubscribe,
            wait,
            done: false,
        };
        (sink, rx)
    }

    /// The connection id the sink is subscribed under.
    pub fn conn_id(&self) -> &str {
        &self.conn_id
    }

    /// Sends one of its run's events on; stops after a terminal one or a failed send.
    fn forward(&mut self, item: RunStream, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        let terminal = matches!(item, RunStream::End(_));
        if let Err(err) = self.tx.try_send(item) {
            if matches!(err, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(conn_id = %self.conn_id, run_id = ?self.run_id,
                    "event reader fell {CHANNEL_CAPACITY} events behind; ending its stream");
            }
            self.finish(ctx);
            return;
        }
        if terminal {
            self.finish(ctx);
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.done = true;
        ctx.stop();
    }
}

/// The end a run summary stands for, or `None` while the run still goes on.
fn end_from_summary(summary: RunSummary) -> Option<RunStream> {
    match summary.status {
        crate::messages::RunStatus::Timeout => None,
        _ => Some(RunStream::End(Arc::new(summary))),
    }
}

/// An end that says the run's outcome could not be learned, and why.
fn failed(run_id: &RunId, why: String) -> RunStream {
    RunStream::End(Arc::new(RunSummary {
        run_id: run_id.clone(),
        status: crate::messages::RunStatus::Error,
        summary: String::new(),
        error: Some(why),
        attachments: Vec::new(),
    }))
}

/// What a session event passes on, if anything.
fn item_of(ev: &SessionEvent) -> Option<RunStream> {
    match &ev.event {
        RunEvent::Delta(text) => Some(RunStream::Delta(text.clone())),
        RunEvent::Ended(end) => Some(RunStream::End(end.clone())),
        RunEvent::Started | RunEvent::Tool(_) => None,
    }
}

impl Actor for EventSinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(CHANNEL_CAPACITY);
        // The channel says when its reader is dropped: no polling.
        let tx = self.tx.clone();
        let reader_gone = async move { tx.closed().await };
        ctx.spawn(reader_gone.into_actor(self).map(|_, act, ctx| {
            if !act.done {
                tracing::debug!(conn_id = %act.conn_id, run_id = ?act.run_id,
                    "event reader went away; the run goes on without it");
                act.finish(ctx);
            }
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.unsubscribe.do_send(Unsubscribe {
            conn_id: self.conn_id.clone(),
        });
    }
}

impl Handler<SessionEvent> for EventSinkActor {
    type Result = ();
    fn handle(&mut self, msg: SessionEvent, ctx: &mut Self::Context) {
        if self.done {
            return;
        }
        if msg.missed > 0 {
            // Deltas were lost to a full mailbox: a stream with holes would be wrong text.
            tracing::warn!(conn_id = %self.conn_id, missed = msg.missed, "event sink fell behind; ending its stream");
            self.finish(ctx);
            return;
        }
        match &self.run_id {
            Some(run_id) => {
                if msg.run_id == *run_id
                    && let Some(item) = item_of(&msg)
                {
                    self.forward(item, ctx);
                }
            }
            None => {
                if self.early.len() == EARLY_LIMIT {
                    self.early.pop_front();
                }
                self.early.push_back(msg);
            }
        }
    }
}

impl Handler<TrackRun> for EventSinkActor {
    type Result = ();
    fn handle(&mut self, msg: TrackRun, ctx: &mut Self::Context) {
        if self.run_id.is_some() || self.done {
            return;
        }
        let run_id = msg.run_id;
        self.run_id = Some(run_id.clone());
        for ev in std::mem::take(&mut self.early) {
            if ev.run_id == run_id
                && let Some(item) = item_of(&ev)
            {
                self.forward(item, ctx);
            }
        }
        if self.done {
            return;
        }
        let wait = self.wait.send(WaitRun {
            run_id: run_id.clone(),
            timeout: RUN_WAIT,
        });
        ctx.spawn(wait.into_actor(self).map(move |res, act, ctx| {
            let terminal = match res {
                Ok(Ok(summary)) => end_from_summary(summary),
                Ok(Err(QueueError::UnknownRun(_))) => Some(failed(
                    &run_id,
                    format!("run {run_id} is not known to the session queue"),
                )),
                Ok(Err(e)) => Some(failed(&run_id, e.to_string())),
                Err(_) => Some(failed(
                    &run_id,
                    "the session queue restarted during the run; its outcome is in the session history".into(),
                )),
            };
            if let Some(item) = terminal {
                act.forward(item, ctx);
            }
        }));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::oneshot;

    use super::*;
    use crate::messages::RunStatus;

    /// Stands in for the session queue: records unsubscriptions, answers `WaitRun` when
    /// the test says so.
    struct FakeQueue {
        unsubscribed: Arc<Mutex<Vec<String>>>,
        /// Told of each unsubscription (the sink sends it as it stops).
        left: mpsc::UnboundedSender<()>,
        outcome: Arc<Mutex<Option<oneshot::Receiver<RunSummary>>>>,
    }

    impl Actor for FakeQueue {
        type Context = Context<Self>;
    }

    impl Handler<Unsubscribe> for FakeQueue {
        type Result = ();
        fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
            self.unsubscribed.lock().unwrap().push(msg.conn_id);
            let _ = self.left.send(());
        }
    }

    impl Handler<WaitRun> for FakeQueue {
        type Result = ResponseFuture<Result<RunSummary, QueueError>>;
        fn handle(&mut self, msg: WaitRun, _: &mut Self::Context) -> Self::Result {
            let outcome = self.outcome.lock().unwrap().take();
            Box::pin(async move {
                match outcome {
                    Some(rx) => rx.await.map_err(|_| QueueError::UnknownRun(msg.run_id)),
                    None => futures_util::future::pending().await,
                }
            })
        }
    }

    struct Harness {
        sink: Addr<EventSinkActor>,
        rx: mpsc::Receiver<RunStream>,
        unsubscribed: Arc<Mutex<Vec<String>>>,
        left: mpsc::UnboundedReceiver<()>,
        finish_run: Option<oneshot::Sender<RunSummary>>,
    }

    impl Harness {
        fn start() -> Self {
            let unsubscribed = Arc::new(Mutex::new(Vec::new()));
            let (finish_run, outcome) = oneshot::channel();
            let (left_tx, left) = mpsc::unbounded_channel();
            let queue = FakeQueue {
                unsubscribed: unsubscribed.clone(),
                left: left_tx,
                outcome: Arc::new(Mutex::new(Some(outcome))),
            }
            .start();
            let (sink, rx) =
                EventSinkActor::new("openai:t", queue.clone().recipient(), queue.recipient());
            Self {
                sink: sink.start(),
                rx,
                unsubscribed,
                left,
                finish_run: Some(finish_run),
            }
        }

        /// Waits for the unsubscription the sink sends as it stops (pushed, not polled).
        async fn until_stopped(&mut self) {
            let left = tokio::time::timeout(Duration::from_secs(30), self.left.recv()).await;
            assert!(
                matches!(left, Ok(Some(()))),
                "the sink did not stop and unsubscribe"
            );
            assert_eq!(*self.unsubscribed.lock().unwrap(), ["openai:t"]);
        }
    }

    fn event(run_id: &str, event: RunEvent) -> SessionEvent {
        SessionEvent {
            run_id: run_id.into(),
            session_key: "agent:main:main".into(),
            seq: 1,
            ts: 0,
            event,
            missed: 0,
            rendered: Default::default(),
        }
    }

    fn delta(run_id: &str, text: &str) -> SessionEvent {
        event(run_id, RunEvent::Delta(text.into()))
    }

    fn end(run_id: &str, status: RunStatus, text: &str) -> SessionEvent {
        event(
            run_id,
            RunEvent::Ended(Arc::new(RunSummary {
                run_id: run_id.into(),
                status,
                summary: text.into(),
                error: None,
                attachments: Vec::new(),
            })),
        )
    }

    fn show(item: &RunStream) -> String {
        match item {
            RunStream::Delta(t) => format!("delta:{t}"),
            RunStream::End(e) => format!("{}:{}", e.status, e.summary),
        }
    }

    #[actix_rt::test]
    async fn forwards_only_its_runs_deltas_and_end_including_early_ones_then_stops() {
        let mut h = Harness::start();
        h.sink.do_send(delta("r1", "a"));
        h.sink.do_send(delta("other", "x"));
        h.sink.do_send(event("r1", RunEvent::Started));
        h.sink.do_send(TrackRun {
            run_id: "r1".into(),
        });
        h.sink.do_send(delta("r1", "b"));
        h.sink.do_send(end("other", RunStatus::Ok, ""));
        h.sink.do_send(end("r1", RunStatus::Ok, "ab"));
        let mut seen = Vec::new();
        while let Some(item) = h.rx.recv().await {
            seen.push(show(&item));
        }
        assert_eq!(seen, ["delta:a", "delta:b", "ok:ab"]);
        h.until_stopped().await;
    }

    #[actix_rt::test]
    async fn a_dropped_reader_stops_the_sink_and_unsubscribes_it() {
        let mut h = Harness::start();
        h.sink.do_send(TrackRun {
            run_id: "r1".into(),
        });
        h.rx = mpsc::channel(1).1;
        h.until_stopped().await;
    }

    #[actix_rt::test]
    async fn a_run_that_ends_without_an_event_still_ends_the_stream() {
        let mut h = Harness::start();
        h.sink.do_send(TrackRun {
            run_id: "r1".into(),
        });
        let summary = RunSummary {
            run_id: "r1".into(),
            status: RunStatus::Aborted,
            summary: String::new(),
            error: Some("cleared by chat.abort".into()),
            attachments: Vec::new(),
        };
        h.finish_run.take().unwrap().send(summary).unwrap();
        let Some(RunStream::End(last)) = h.rx.recv().await else {
            panic!("a terminal item");
        };
        assert_eq!(last.status, RunStatus::Aborted);
        assert_eq!(last.error.as_deref(), Some("cleared by chat.abort"));
        assert!(h.rx.recv().await.is_none());
        h.until_stopped().await;
    }

    #[actix_rt::test]
    async fn a_reader_that_falls_too_far_behind_gets_a_broken_stream() {
        let mut h = Harness::start();
        h.sink.do_send(TrackRun {
            run_id: "r1".into(),
        });
        for _ in 0..=CHANNEL_CAPACITY {
            h.sink.do_send(delta("r1", "x"));
        }
        h.until_stopped().await;
        let mut count = 0;
        while let Some(item) = h.rx.recv().await {
            assert!(matches!(item, RunStream::Delta(_)));
            count += 1;
        }
        assert_eq!(
            count, CHANNEL_CAPACITY,
            "the reader sees what fit, then the end"
        );
    }
}
