//! The registry pushes a watched child's address now and on every restart, to live
//! watchers only, also through a subtree that is itself restarted.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::registry::CountWatchers;
use super::*;
use crate::messages::{FaultMode, InjectFault, Shutdown};

/// A child that only lives (and panics on request).
struct Idle {
    _guard: ExitGuard,
}

impl Actor for Idle {
    type Context = Context<Self>;
}

crate::child_controls!(Idle, |_this| 0);

impl Handler<Shutdown> for Idle {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Passes what the registry pushes into a channel; dropping it closes the channel.
struct Watcher {
    tx: mpsc::UnboundedSender<ChildStarted>,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<ChildStarted> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: ChildStarted, _: &mut Self::Context) {
        let _ = self.tx.send(msg);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Leave;

impl Handler<Leave> for Watcher {
    type Result = ();
    fn handle(&mut self, _: Leave, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

fn watcher() -> (Addr<Watcher>, mpsc::UnboundedReceiver<ChildStarted>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Watcher { tx }.start(), rx)
}

const WAIT: Duration = Duration::from_secs(30);

fn config(id: &str) -> SupervisorConfig {
    SupervisorConfig {
        id: ChildId::new(id),
        strategy: Strategy::OneForOne,
        intensity: Intensity {
            max_restarts: 100,
            period: Duration::from_secs(60),
        },
        ping_interval: Duration::from_secs(60),
        hang_timeout: Duration::from_secs(60),
        list_limit: 100,
    }
}

fn idle_spec() -> ChildSpec {
    ChildSpec::new("idle", "test", |link: ChildLink| {
        let guard = link.guard();
        Ok(ChildHandle::of(Idle { _guard: guard }.start()))
    })
    .without_liveness()
}

/// root → idle, or root → sub (a supervisor) → idle.
fn tree(nested: bool) -> Addr<SupervisorActor> {
    let spec = if nested {
        ChildSpec::new("sub", "supervisor", |link: ChildLink| {
            let addr = SupervisorActor::new(config("sub"), vec![idle_spec()], Some(link)).start();
            Ok(ChildHandle::of_supervisor(addr))
        })
        .without_liveness()
        // Down long enough that a lookup surely arrives while it waits out its backoff.
        .backoff(Backoff {
            min: Duration::from_millis(300),
            max: Duration::from_millis(300),
        })
    } else {
        idle_spec()
    };
    let (escalation, _) = tokio::sync::oneshot::channel();
    SupervisorActor::root(config("root"), vec![spec], escalation).start()
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ChildStarted>) -> Addr<Idle> {
    let pushed = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a push in time")
        .expect("the watcher is alive");
    pushed.addr::<Idle>().expect("an Idle address")
}

fn watch(id: &str, who: &Addr<Watcher>) -> WatchChild {
    WatchChild {
        id: ChildId::new(id),
        watcher: who.clone().recipient(),
    }
}

#[actix_rt::test]
async fn a_watch_is_answered_now_and_on_every_restart_and_never_after_its_watcher_is_gone() {
    let root = tree(false);
    let first = lookup_patiently::<Idle>(&root, "idle").await.unwrap();
    let (a, mut rx_a) = watcher();
    let (b, mut rx_b) = watcher();
    root.send(watch("idle", &a)).await.unwrap().unwrap();
    root.send(watch("idle", &b)).await.unwrap().unwrap();
    assert_eq!(next(&mut rx_a).await, first, "answered at once");
    assert_eq!(next(&mut rx_b).await, first);

    first.do_send(InjectFault {
        mode: FaultMode::Panic,
    });
    let second = next(&mut rx_a).await;
    assert_ne!(second, first, "the restarted instance");
    assert!(second.connected());
    assert_eq!(next(&mut rx_b).await, second);

    // A leaves: its channel closes without another push, and B alone is told next time.
    a.send(Leave).await.unwrap();
    let gone = tokio::time::timeout(WAIT, rx_a.recv()).await.unwrap();
    assert!(gone.is_none(), "no push to a watcher that is gone");
    second.do_send(InjectFault {
        mode: FaultMode::Panic,
    });
    let third = next(&mut rx_b).await;
    assert!(third != second && third.connected());
    let live = root
        .send(CountWatchers(ChildId::new("idle")))
        .await
        .unwrap();
    assert_eq!(live, 1, "the supervisor forgot the watcher that left");
}

#[actix_rt::test]
async fn a_watch_below_a_subtree_survives_the_subtrees_restart_and_lookups_wait_for_it() {
    let root = tree(true);
    let first = lookup_patiently::<Idle>(&root, "idle").await.unwrap();
    let (w, mut rx) = watcher();
    root.send(watch("idle", &w)).await.unwrap().unwrap();
    assert_eq!(next(&mut rx).await, first);

    // The whole subtree restarts: the watch is passed to its new supervisor, and a lookup
    // made while it is down waits for it (pushed, not polled).
    let sub = lookup_patiently::<SupervisorActor>(&root, "sub")
        .await
        .unwrap();
    sub.do_send(InjectFault {
        mode: FaultMode::Panic,
    });
    let mut down = false;
    for _ in 0..200 {
        if lookup::<Idle>(&root, "idle").await.is_err() {
            down = true;
            break;
        }
        actix_rt::task::yield_now().await;
    }
    assert!(down, "the subtree never went down");
    let looked_up = lookup_patiently::<Idle>(&root, "idle").await.unwrap();
    assert!(
        looked_up != first && looked_up.connected(),
        "waited for the new subtree"
    );
    let pushed = next(&mut rx).await;
    assert_eq!(
        pushed, looked_up,
        "the watch followed the subtree's restart"
    );

    // A watch of an id nowhere in the tree says so.
    let missing = root.send(watch("nope", &w)).await.unwrap();
    assert!(
        matches!(missing, Err(CommandError::NotFound(ref id)) if id == "nope"),
        "{missing:?}"
    );
}

#[actix_rt::test]
async fn a_pushed_address_of_another_type_is_an_error_not_a_silent_none() {
    let root = tree(false);
    let (w, mut rx) = watcher();
    root.send(watch("idle", &w)).await.unwrap().unwrap();
    let pushed = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let wrong = pushed.addr::<SupervisorActor>().unwrap_err();
    assert!(
        matches!(wrong, LookupError::WrongType { ref id, .. } if id == "idle"),
        "{wrong:?}"
    );
}
